"""Plots and tables of saved run records (``spu plot``, ``spu compare``, and every plot a run
writes): training loss and test accuracy against iterations and against simulated time.

Test points are the evaluations every ``eval_every`` iterations (at theta_k, before step k) and
the final evaluation after the last step, drawn at iteration = iterations and at the run's final
simulated time. Runs whose labels coincide are told apart by the spec and device fields in which
they differ (e.g. ``kappa0=0.001`` against ``kappa0=0.01``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

SMOOTHING = 5  # iterations in the running mean of the batch loss


def labels(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """A label per run: its own, followed where several runs share it by the fields (spec and
    device) in which those runs differ, or by its position if they differ in none."""
    names = [str(run.get("label") or (run.get("spec") or {}).get("optimizer") or "run")
             for run in runs]
    described = [_fields(run) for run in runs]
    result = list(names)
    for name in set(names):
        group = [i for i, n in enumerate(names) if n == name]
        if len(group) < 2:
            continue
        keys = sorted({key for i in group for key in described[i]})
        differing = [key for key in keys
                     if len({repr(described[i].get(key)) for i in group}) > 1]
        for position, i in enumerate(group, 1):
            parts = [f"{_short(key, keys)}={_value(described[i].get(key))}" for key in differing]
            result[i] = f"{name} ({', '.join(parts) if parts else f'#{position}'})"
    return result


def curves(run: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A run's series: iteration, sim_ms and the smoothed batch loss per iteration; test_x,
    test_ms, test_loss and test_accuracy at every evaluation, the final one last."""
    rows = run["rows"]
    iteration = np.array([row["iteration"] for row in rows], dtype=float)
    sim_ms = np.array([row["sim_time_ns"] for row in rows], dtype=float) / 1e6
    loss = np.array([_number(row.get("loss")) for row in rows])
    tested = [k for k, row in enumerate(rows) if row.get("test_accuracy") is not None]
    test_x = [iteration[k] for k in tested] + [float(len(rows))]
    test_ms = [sim_ms[k] for k in tested] + [_number(run.get("sim_time_ns")) / 1e6]
    test_loss = [_number(rows[k].get("test_loss")) for k in tested] + [
        _number(run.get("final_test_loss"))]
    test_accuracy = [_number(rows[k].get("test_accuracy")) for k in tested] + [
        _number(run.get("final_test_accuracy"))]
    return {"iteration": iteration, "sim_ms": sim_ms, "loss": running_mean(loss, SMOOTHING),
            "test_x": np.array(test_x), "test_ms": np.array(test_ms),
            "test_loss": np.array(test_loss), "test_accuracy": np.array(test_accuracy)}


def plot_runs(runs: Sequence[Mapping[str, Any]], path: str | Path, title: str = "",
              accuracy: bool = True) -> Path:
    """Training loss (running mean over SMOOTHING iterations, solid) and test loss (circles,
    dotted; the final evaluation a star) against iterations and simulated time (ms, log);
    ``accuracy`` adds a row of test accuracy. One colour per run; saved as PNG at ``path``."""
    with _pyplot() as plt:
        rows = 2 if accuracy else 1
        figure, axes = plt.subplots(rows, 2, figsize=(11, 4 * rows), squeeze=False)
        for run, label, colour in zip(runs, labels(runs), _colours(len(runs)), strict=True):
            c = curves(run)
            for column, x, test_x in ((0, c["iteration"], c["test_x"]),
                                      (1, c["sim_ms"], c["test_ms"])):
                axes[0, column].plot(x, c["loss"], color=colour, label=label)
                _test_points(axes[0, column], test_x, c["test_loss"], colour)
                if accuracy:
                    _test_points(axes[1, column], test_x, c["test_accuracy"], colour, label)
        for row in range(rows):
            axes[row, 0].set_xlabel("iteration")
            axes[row, 1].set_xlabel("simulated time (ms)")
            axes[row, 1].set_xscale("log")
            for ax in axes[row]:
                ax.set_ylabel(f"loss: train (mean of {SMOOTHING}), test (o, final *)"
                              if row == 0 else "test accuracy (final *)")
                ax.grid(alpha=0.3)
        for ax in axes[0]:
            ax.set_yscale("log")
        axes[0, 0].legend(fontsize=8)
        if title:
            figure.suptitle(title)
        figure.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)
    return path


def comparison_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """One line per run (labels as :func:`labels`): final train loss, final test loss and
    accuracy, iterations, simulated time (ms)."""
    names = labels(runs)
    width = max(24, *(len(name) for name in names))
    header = (f"  {'run':<{width}} {'train loss':>10} {'test loss':>9} {'test acc':>8} "
              f"{'iters':>6} {'sim time ms':>11}")
    lines = [header, "  " + "-" * (len(header) - 2)]
    for name, run in zip(names, runs, strict=True):
        lines.append(f"  {name:<{width}} {_number(run.get('final_train_loss')):>10.4f} "
                     f"{_number(run.get('final_test_loss')):>9.4f} "
                     f"{_number(run.get('final_test_accuracy')):>8.3f} {len(run['rows']):>6d} "
                     f"{_number(run.get('sim_time_ns')) / 1e6:>11.2f}")
    return "\n".join(lines)


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each point (the first value repeated before the
    start)."""
    if values.size == 0:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _test_points(ax: Any, x: np.ndarray, y: np.ndarray, colour: Any,
                 label: str | None = None) -> None:
    """The evaluations as circles on a dotted line, the final one as a star."""
    ax.plot(x, y, ":o", ms=3, color=colour, label=label)
    ax.plot(x[-1:], y[-1:], "*", ms=11, color=colour, markeredgecolor="black",
            markeredgewidth=0.5)


def _fields(run: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's and the device configuration's fields, flattened ("device.timing.link.x")."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        else:
            flat[prefix] = value

    walk("spec", run.get("spec") or {})
    walk("device", run.get("device") or {})
    return flat


def _short(key: str, keys: Sequence[str]) -> str:
    """The last part of ``key``, unless another key ends the same way."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf if sum(k.rsplit(".", 1)[-1] == leaf for k in keys) == 1 else key


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _colours(n: int) -> list[Any]:
    with _pyplot() as plt:
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        return [cycle[i % len(cycle)] for i in range(n)] if n <= len(cycle) else \
            list(plt.cm.viridis(np.linspace(0, 0.95, n)))


@contextmanager
def _pyplot() -> Iterator[Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
