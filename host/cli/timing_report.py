"""``spu timing``: per-iteration time of TNGD and its digital competitors versus model size, from
the timing model, as a table, a plot, and a Chrome trace of the TNGD loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from spusim.timing import Phase, TimingModel
from spusim.timing.digital import Roofline
from spusim.timing.optimizers import COMPLEXITY, OPTIMIZERS, IterationEstimate, Problem, estimate
from spusim.timing.report import format_ns, schedule_spans, write_chrome_trace

LABELS = {"sgd": "SGD", "adam": "Adam", "ngd": "exact NGD", "ngd-cg": "NGD-CG",
          "ngd-woodbury": "NGD-Woodbury", "tngd": "TNGD"}


@dataclass(frozen=True)
class Comparison:
    """Estimates of every optimizer at every size, all with the same problem settings."""

    sizes: list[int]
    estimates: dict[str, list[IterationEstimate]]  # optimizer -> one estimate per size


def compare(sizes: Sequence[int], problem: Problem, digital: Roofline,
            device: TimingModel) -> Comparison:
    """Estimate every optimizer at every size (``problem`` gives everything but N) with the
    device's timing model."""
    return Comparison(list(sizes), {
        optimizer: [estimate(optimizer, replace(problem, n_params=n), digital, device)
                    for n in sizes] for optimizer in OPTIMIZERS})


def table(comparison: Comparison) -> str:
    """Markdown: one row per optimizer, its Table 1 complexity, its time at each size."""
    header = ["optimizer", "Table 1 runtime", *(f"N = {n:.0e}" for n in comparison.sizes)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for optimizer, estimates in comparison.estimates.items():
        cells = [LABELS[optimizer], COMPLEXITY[optimizer],
                 *(format_ns(e.iteration_ns) for e in estimates)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tngd_breakdown(comparison: Comparison) -> str:
    """Markdown: TNGD's critical path per phase at each size ("-": off the path), and the
    dominant phase."""
    phases = [Phase.DIGITAL, Phase.TRANSFER_IN, Phase.DAC, Phase.ANALOG, Phase.ADC,
              Phase.TRANSFER_OUT, Phase.DELAY]
    shown = [p for p in phases if any(p in e.critical_ns for e in comparison.estimates["tngd"])]
    header = ["N", *(p.value for p in shown), "iteration", "dominant"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for n, e in zip(comparison.sizes, comparison.estimates["tngd"], strict=True):
        cells = [f"{n:.0e}",
                 *(format_ns(e.critical_ns[p]) if p in e.critical_ns else "-" for p in shown),
                 format_ns(e.iteration_ns), e.dominant.value]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(comparison: Comparison, path: str | Path, title: str) -> Path:
    """Log-log plot of per-iteration time versus N, one line per optimizer, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for optimizer, estimates in comparison.estimates.items():
        axes.loglog(comparison.sizes, [e.iteration_ns / 1e9 for e in estimates], marker="o",
                    label=f"{LABELS[optimizer]}  {COMPLEXITY[optimizer]}",
                    linewidth=2.5 if optimizer == "tngd" else 1.5)
    axes.set_xlabel("parameters N")
    axes.set_ylabel("time per iteration (s)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path


def write_tngd_trace(problem: Problem, digital: Roofline, path: str | Path,
                     device: TimingModel, iterations: int = 5) -> Path:
    """A Chrome trace of ``iterations`` iterations of the TNGD loop on ``problem``."""
    loop = estimate("tngd", problem, digital, device, iterations).schedule
    assert loop is not None
    return write_chrome_trace(schedule_spans(loop), path)
