"""Training runs for the command line and the examples: build a model and an optimizer by name,
train with a progress bar, and report the result as a table, a JSON record and a plot.

    spec = RunSpec(optimizer="tngd", lr=0.3, damping=0.1, t=5.0)
    result = run(spec, load_digits(), device=device)
    print(summary_table([result]))

Units: t and t_d in units of tau (the device's RC time), simulated times in ns (ms in tables and
plots), host times in seconds of wall time.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import torch
from torch import nn

from spusim.driver.client import Device
from spusim.training.data import Dataset
from spusim.training.loop import History, train
from spusim.training.models import cnn, mlp, softmax_regression
from spusim.training.optimizers import (
    NGD,
    NGDCG,
    FirstOrder,
    NaturalGradient,
    NGDWoodbury,
    adam,
    sgd,
)
from spusim.training.progress import ProgressBar
from spusim.training.record_plots import plot_runs
from spusim.training.spec import DEVICE_OPTIMIZERS, MODELS, OPTIMIZERS, RunSpec
from spusim.training.tngd import TNGD
from spusim.training.updates import Adam
from spusim.timing.digital import parse_digital

@dataclass
class Result:
    """A finished run: its label, History and host wall time (seconds)."""

    label: str
    history: History
    host_seconds: float


def build_model(name: str, data: Dataset, hidden: int = 32, seed: int = 0,
                channels: int = 4) -> nn.Module:
    """softmax regression, an MLP with one tanh layer of ``hidden`` units, or the paper's CNN
    (``channels`` kernels, ``hidden`` dense units), float64."""
    if name == "softmax":
        return softmax_regression(data.n_features, data.classes, seed)
    if name == "mlp":
        return mlp(data.n_features, data.classes, (hidden,), seed=seed)
    if name == "cnn":
        return cnn(data.image_shape, data.classes, channels=channels, hidden=hidden, seed=seed)
    raise ValueError(f"model must be one of {list(MODELS)}, got {name!r}")


def build_optimizer(spec: RunSpec, model: nn.Module,
                    device: Device | Sequence[Device] | None = None
                    ) -> NaturalGradient | FirstOrder:
    """The optimizer of ``spec`` over ``model``; TNGD and TNGD-Adam need ``device`` (a list
    of ``spec.chips`` devices for several chips)."""
    name, lr = spec.optimizer, spec.learning_rate
    if name in DEVICE_OPTIMIZERS:
        if device is None:
            raise ValueError(f"{name} needs a device")
        chips = list(device) if isinstance(device, Sequence) else [device]
        if len(chips) != spec.chips:
            raise ValueError(f"the spec asks for {spec.chips} chips, {len(chips)} given")
        where = ({"device": chips[0]} if spec.chips == 1 else
                 {"devices": chips, "partition": spec.partition, "link": spec.link})
        update = Adam(lr, betas=(0.0, 0.0)) if name == "tngd-adam" else None
        return TNGD(model, **where, update=update, lr=lr, momentum=spec.momentum,
                    damping=spec.damping, t=spec.t, delay=spec.delay,
                    warm_start=spec.warm_start, readout=spec.readout, seed=spec.seed,
                    integrator=spec.integrator)
    natural = {"ngd": NGD, "ngd-woodbury": NGDWoodbury}
    if name in natural:
        return natural[name](model, lr=lr, momentum=spec.momentum, damping=spec.damping)
    if name == "ngd-cg":
        return NGDCG(model, lr=lr, momentum=spec.momentum, damping=spec.damping,
                     iterations=spec.cg_iterations)
    if name == "sgd":
        return sgd(model, lr, spec.momentum)
    if name == "adam":
        return adam(model, lr)
    raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")


def run(spec: RunSpec, data: Dataset, device: Device | Sequence[Device] | None = None,
        progress: bool = True) -> Result:
    """Train ``spec`` (a fresh model) on ``data`` with a progress bar on stderr. Ctrl-C ends
    the run early (History.interrupted; no records if it came before the first iteration)."""
    try:
        model = build_model(spec.model, data, spec.hidden, spec.seed, spec.channels)
        optimizer = build_optimizer(spec, model, device)
    except KeyboardInterrupt:
        return Result(spec.label(), History(spec.optimizer, [], math.nan, math.nan,
                                            interrupted=True), 0.0)
    started = time.perf_counter()
    label = spec.label(device)
    try:
        with ProgressBar(label, spec.iterations, stream=None if progress else _Null()) as bar:
            history = train(model, optimizer, data, spec.iterations,
                            batch_size=spec.batch_size, digital=parse_digital(spec.digital),
                            seed=spec.seed, eval_every=spec.eval_every,
                            callback=lambda record: bar.update(record.iteration + 1,
                                                               loss=record.loss,
                                                               sim_time_ns=record.sim_time_ns))
    finally:
        if isinstance(optimizer, TNGD):  # its chips' threads (nothing for one chip)
            optimizer.close()
    return Result(label, history, time.perf_counter() - started)


def summary_table(results: list[Result]) -> str:
    """One line per run: final batch loss (mean of the last 10 iterations), final test loss
    and accuracy, iterations, simulated time (ms) and host time (s)."""
    header = (f"  {'optimizer':<22} {'train loss':>10} {'test loss':>9} {'test acc':>8} "
              f"{'iters':>6} {'sim time ms':>11} {'host s':>7}")
    lines = [header, "  " + "-" * (len(header) - 2)]
    for result in results:
        h = result.history
        lines.append(f"  {result.label:<22} {final_train_loss(h):>10.4f} "
                     f"{h.final_test_loss:>9.4f} {h.final_test_accuracy:>8.3f} "
                     f"{len(h.records):>6d} {h.records[-1].sim_time_ns / 1e6:>11.2f} "
                     f"{result.host_seconds:>7.2f}")
    return "\n".join(lines)


def seeds_table(groups: dict[str, list[Result]]) -> str:
    """One line per label: mean +- standard deviation over its runs (one per seed) of the
    final batch loss, test loss and test accuracy."""
    header = (f"  {'optimizer':<22} {'seeds':>5} {'train loss':>17} {'test loss':>17} "
              f"{'test acc':>15}")
    lines = [header, "  " + "-" * (len(header) - 2)]
    for label, results in groups.items():
        columns = []
        for value, digits in ((final_train_loss, 4), (lambda h: h.final_test_loss, 4),
                              (lambda h: h.final_test_accuracy, 3)):
            values = np.array([value(r.history) for r in results])
            spread = values.std(ddof=1) if values.size > 1 else math.nan
            columns.append(f"{values.mean():.{digits}f} ± {spread:.{digits}f}")
        lines.append(f"  {label:<22} {len(results):>5d} {columns[0]:>17} {columns[1]:>17} "
                     f"{columns[2]:>15}")
    return "\n".join(lines)


def final_train_loss(history: History, window: int = 10) -> float:
    """Mean batch loss over the last ``window`` iterations (a less noisy final loss)."""
    loss = history.series("loss")
    return float(loss[-window:].mean()) if loss.size else math.nan


def record(results: list[Result], config: dict[str, Any],
           specs: list[RunSpec] | None = None) -> dict[str, Any]:
    """A JSON-ready record: the config, each run's spec, summary and per-iteration rows."""
    runs = []
    for i, result in enumerate(results):
        h = result.history
        runs.append({"label": result.label,
                     "spec": asdict(specs[i]) if specs else None,
                     "final_train_loss": final_train_loss(h),
                     "final_test_loss": h.final_test_loss,
                     "final_test_accuracy": h.final_test_accuracy,
                     "sim_time_ns": h.records[-1].sim_time_ns if h.records else 0,
                     "clock": h.clock,
                     "host_seconds": result.host_seconds,
                     "rows": h.rows()})
    return {"config": config, "runs": runs}


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write ``data`` as JSON (NaN and infinities as null); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=1, default=str))
    return path


def plot(results: list[Result], path: str | Path, title: str = "",
         accuracy: bool = False) -> Path:
    """Loss (and with ``accuracy`` test accuracy) against iterations and simulated time, one
    curve per run (spusim.training.record_plots.plot_runs)."""
    return plot_runs(record(results, {})["runs"], path, title, accuracy)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """The host's linear algebra on one thread: torch's intra-op threads, and numpy's BLAS if
    threadpoolctl is installed (see tests/training_support.py: a second BLAS thread can make
    small solves far slower on a machine that also runs the daemon)."""
    try:
        from threadpoolctl import threadpool_limits
        blas: Any = threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        blas = nullcontext()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with blas:
            yield
    finally:
        torch.set_num_threads(threads)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _finite(value.item())
    return value


class _Null:
    """A stream that is not a terminal and discards what is written."""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
