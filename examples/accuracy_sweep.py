"""How many bits are enough? Solve and inverse error of the emulated SPU versus DAC bits, ADC
bits, component mismatch, the anti-alias filter's bandwidth and run time, for one fixed problem.

Each setting runs on its own daemon (``Device.spawn``), exactly as a user would configure one;
everything else stays ideal. Writes a Markdown table and a PNG plot:

    python examples/accuracy_sweep.py --out docs/accuracy      # docs/accuracy.md + .png

The problem: N = 16, A symmetric positive definite with eigenvalues 0.5 ... 5, b ~ N(0, I),
kappa0 = 0.01, exact integrator. Solve: 50 tau burn-in, 2000 tau of samples unless the run
time is swept; the inverse samples 5 times as long. Converter ranges: +-8 for A (entries up to
about 5; the host scales A to fill the range), +-4 for b (scaled likewise) and for the solve's
readings (|x| up to about 3), +-1 for the inverse's readings (the state is noise of std ~0.15
there: a range matched to the signal, as a designer would choose).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spusim import Device
from spusim import linalg
from spusim.cli.help import Parser
from spusim.training.records import run_directory

N, KAPPA0, SEED = 16, 0.01, 0
T_SOLVE = 2000.0
INVERSE_TIME_FACTOR = 5  # the inverse's sampling time, in solve times
BITS = (4, 6, 8, 10, 12, 16)
MISMATCH = (0.0, 1e-3, 1e-2, 5e-2)
RUN_TIMES = (100.0, 300.0, 1000.0, 3000.0, 10_000.0)
FILTER_TAUS = (0.001, 0.01, 0.1, 1.0)  # anti-alias filter time constant, in tau


def problem() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    Q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    A = (Q * np.linspace(0.5, 5.0, N)) @ Q.T
    return (A + A.T) / 2, rng.standard_normal(N)


@dataclass(frozen=True)
class Point:
    knob: str
    setting: str
    solve_error: float  # ||x - A^-1 b|| / ||A^-1 b||
    solve_sampling: float  # the error the samples' spread predicts, same scale
    solve_estimate: float  # the result's error_estimate: sampling + systematic bound
    inverse_error: float  # ||X - A^-1||_F / ||A^-1||_F
    inverse_estimate: float  # the inverse's error_estimate, same scale


def measure(knob: str, setting: str, t_solve: float, **config: object) -> Point:
    A, b = problem()
    x_true, inverse_true = np.linalg.solve(A, b), np.linalg.inv(A)
    solve_config = {"kappa0": KAPPA0, "seed": SEED, **config}
    with Device.spawn(**solve_config) as device:
        solved = linalg.solve(device, A, b, t_sample=t_solve, seed=SEED)
    inverse_config = dict(solve_config)
    if "adc_full_scale" in inverse_config:
        inverse_config["adc_full_scale"] = 1.0
    with Device.spawn(**inverse_config) as device:
        inverse = linalg.inv(device, A, t_sample=INVERSE_TIME_FACTOR * t_solve, seed=SEED)
    scale, inverse_scale = np.linalg.norm(x_true), np.linalg.norm(inverse_true)
    return Point(knob, setting, float(np.linalg.norm(solved.x - x_true) / scale),
                 solved.sampling_error / scale, solved.error_estimate / scale,
                 float(np.linalg.norm(inverse.inverse - inverse_true) / inverse_scale),
                 inverse.error_estimate / inverse_scale)


def sweep(quick: bool) -> list[Point]:
    bits = BITS[::2] if quick else BITS
    points = [measure("ideal", "-", T_SOLVE)]
    for b in bits:
        points.append(measure("DAC bits", str(b), T_SOLVE, dac_bits=b, dac_full_scale=8.0,
                              bias_full_scale=4.0))
        print(f"  DAC {b} bits done", file=sys.stderr)
    for b in bits:
        points.append(measure("ADC bits", str(b), T_SOLVE, adc_bits=b, adc_full_scale=4.0))
        print(f"  ADC {b} bits done", file=sys.stderr)
    for sigma in MISMATCH[1:]:
        points.append(measure("mismatch", f"{sigma:g}", T_SOLVE, mismatch=sigma, serial=1))
        print(f"  mismatch {sigma:g} done", file=sys.stderr)
    for tau in FILTER_TAUS[::2] if quick else FILTER_TAUS:
        points.append(measure("readout filter (tau)", f"{tau:g}", T_SOLVE,
                              readout_tau_ns=tau * 1000.0))
        print(f"  readout filter {tau:g} tau done", file=sys.stderr)
    for t in RUN_TIMES[::2] if quick else RUN_TIMES:
        points.append(measure("run time (tau)", f"{t:g}", t))
        print(f"  run time {t:g} done", file=sys.stderr)
    return points


def table(points: list[Point]) -> str:
    lines = ["| knob | setting | solve error | solve error predicted by the samples | "
             "solve error estimated | inverse error | inverse error estimated |",
             "|---|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p.knob} | {p.setting} | {p.solve_error:.2e} | {p.solve_sampling:.2e} "
                     f"| {p.solve_estimate:.2e} | {p.inverse_error:.2e} | "
                     f"{p.inverse_estimate:.2e} |")
    return "\n".join(lines)


def page(table_text: str, image: str) -> str:
    """The Markdown page: what was measured, how to reproduce it, the table and the plot."""
    setup = __doc__.split("\n\n", 3)[3].replace("\n", " ")
    return (f"# Accuracy versus hardware knobs\n\nGenerated by `python examples/accuracy_sweep.py "
            f"--out docs/accuracy`; docs/physics.md discusses it.\n\n{setup}\n\nErrors are "
            "relative: ||x - A^-1 b|| / ||A^-1 b|| and ||X - A^-1||_F / ||A^-1||_F. \"Predicted "
            "by the samples\" is the solve's sampling error alone (batch means): an error well "
            "above it is the knob's bias, not noise. \"Estimated\" is each result's "
            "error_estimate, the sampling error plus the bound on the systematic effects the "
            "device reports (the quantization of the values the DAC programmed, mismatch, "
            "offsets, the ADC step): it must cover the error. solve and inv scale A and b to "
            "the converters' full range (their default).\n\n"
            "The new operations (logdet, lyapunov, expnegm): [accuracy_ops.md](accuracy_ops.md)."
            "\n\n"
            f"{table_text}\n\n![error per knob]({image})\n")


def plot(points: list[Point], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ideal = points[0]
    knobs = ["DAC bits", "ADC bits", "mismatch", "readout filter (tau)", "run time (tau)"]
    figure, axes = plt.subplots(1, len(knobs), figsize=(17, 3.6), dpi=110)
    for axis, knob in zip(axes, knobs, strict=True):
        chosen = [p for p in points if p.knob == knob]
        xs = [float(p.setting) for p in chosen]
        axis.semilogy(xs, [p.solve_error for p in chosen], "o-", label="solve")
        axis.semilogy(xs, [p.inverse_error for p in chosen], "s-", label="inverse")
        axis.semilogy(xs, [p.solve_sampling for p in chosen], ":", color="gray",
                      label="solve: sampling noise")
        axis.semilogy(xs, [p.solve_estimate for p in chosen], "--", color="C0", alpha=0.5,
                      label="solve: estimated")
        if knob != "run time (tau)":
            axis.axhline(ideal.inverse_error, color="C1", alpha=0.3, lw=4)
            axis.axhline(ideal.solve_error, color="C0", alpha=0.3, lw=4)
        if knob in ("mismatch", "readout filter (tau)", "run time (tau)"):
            axis.set_xscale("log")
        axis.set_xlabel(knob)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("relative error")
    axes[0].legend(fontsize=8)
    figure.suptitle("Emulated SPU, N = 16, cond 10, kappa0 = 0.01: error per knob "
                    "(bands: all ideal)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = report_parser(__doc__, "accuracy")
    parser.add_argument("--quick", action="store_true", help="every other setting only")
    args = parser.parse_args(argv)
    write_report(args.out, "accuracy", sweep(args.quick), plot, table, page)
    return 0


def report_parser(doc: str, name: str) -> Parser:
    """A sweep script's parser: its docstring's first paragraph, and --out."""
    parser = Parser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", help=f"path prefix of the .md and .png (default: {name}.md "
                                      f"and .png in a new directory runs/<timestamp>-{name}/; "
                                      f"the docs page: --out docs/{name})")
    return parser


def write_report(prefix: str | None, name: str, points: list[Any],
                 plot: Callable[[list[Any], Path], None], table: Callable[[list[Any]], str],
                 page: Callable[[str, str], str]) -> None:
    """Write PREFIX.png (``plot``) and PREFIX.md (``page`` around ``table``), PREFIX being
    ``prefix`` or ``name`` in a new run directory; print the table."""
    out = Path(prefix) if prefix else run_directory(name) / name
    plot(points, out.with_suffix(".png"))
    text = table(points)
    out.with_suffix(".md").write_text(page(text, out.with_suffix(".png").name))
    print(text)
    print(f"\nwrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    sys.exit(main())
