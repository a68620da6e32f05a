"""The noise map of TNGD on digits (MLP 64-16-10, N = 1 210): where it matches exact NGD, where it
beats Adam per unit of simulated time, where the device's thermal noise ruins it, and why.

    python examples/noise_map.py --seeds 5 [--quick] [--out docs/results/noise_map]

One factor at a time around the paper's point (arXiv 2405.13817, App. E.1: lr 0.01, lambda = 0.01,
b = 64, t = 50 tau, t_d = 0 so Algorithm 1 resets the state to g every step, final readout,
kappa0 = 1e-3): kappa0 in {0, 1e-6, ..., 1e-1}; the state kept instead of reset; the average of
the run's ADC samples instead of the last; lambda = 0.1; t = 1 and 5 tau. References: exact NGD
(same lr, lambda, b), Adam at the paper's lr 1e-3 and at 3e-3, 1e-2, 3e-2 (a small tuning sweep).
Simulated time: the default digital clock (counted work on an A100 roofline) plus the device's
phases (docs/timing.md).

The closed form next to it (spusim.training.noise): at a few iterations of a paper-point TNGD run
(seed SEED) the script takes the factors J, H and gradient g of a fixed batch of 64, and compares
the expected squared norm of the readout noise (range and null space of C) with the NGD step's
||A^-1 g||^2, for every variant of the map; it measures the same noise on the device (repeated
solves at those factors: the sample variance of the readouts) and prints measured against
predicted. kappa0* is the noise level at which E||xi||^2 = ||A^-1 g||^2.

The same run also holds the paper's Figs. 4a (t = 5, 10, 20, 50 tau), 4b (t = 5 tau, t_d = 0,
0.2, 1 tau: the state kept when t_d > 0, Algorithm 1's rule) and 7 (t = tau, kappa0 = 1e-3,
1e-2, 1e-1) at its hyperparameters, and Fig. 3's TNGD and Adam against simulated time: the
map's arms supply what they share (FIGURES, FIGURE_RUNS).

Writes PREFIX.json and PREFIX.png (every run, as the other examples), PREFIX_map.png (the map),
PREFIX_closed_form.json (the closed form, its measurement and the map's summary over seeds) and
PREFIX_fig3.png, _fig4a, _fig4b, _fig7.png (seed SEED's curves of each figure). The full map
(--seeds 5, 80 iterations: 115 runs) took 15 min on two Dask workers of a shared 2-core machine
with the device's default integrator (the exact transition, unrecorded time in one jump).
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _experiment import arm, main, parse
from spusim.driver.client import Device
from spusim.training.curvature import Factors, factors
from spusim.training.data import load
from spusim.training.linearization import Linearization, ParameterSet
from spusim.training.loop import train
from spusim.training.losses import Loss
from spusim.training.noise import readout_noise, spectrum
from spusim.training.record_plots import SMOOTHING, running_mean
from spusim.training.records import run_directory
from spusim.training.runs import (Result, build_model, build_optimizer, one_blas_thread, plot,
                                  write_json)
from spusim.training.spec import RunSpec
from spusim.training.tngd import ThermodynamicNGD
from spusim.timing.digital import parse_digital

NAME = "noise_map"
DESCRIPTION = ("Noise map of TNGD around the paper's point on digits (MLP 64-16-10, b = 64, "
               "lr 0.01, lambda = 0.01, t = 50τ)")
ITERATIONS, QUICK_ITERATIONS = 80, 6
PAPER = {"lr": 0.01, "damping": 0.01, "batch_size": 64, "t": 50.0}
KAPPA0 = 1e-3
KAPPAS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
ADAM_LRS = (1e-3, 3e-3, 1e-2, 3e-2)  # 1e-3: the paper's
BASE_LABEL = "tngd κ0=0.001 (paper point)"
# The one-factor variants besides kappa0: label -> (RunSpec changes, closed-form state, samples)
VARIANTS: dict[str, dict[str, Any]] = {
    "tngd state kept": {"warm_start": True},
    "tngd average readout": {"readout": "average"},
    "tngd λ=0.1": {"damping": 0.1},
    "tngd t=1τ": {"t": 1.0},
    "tngd t=5τ": {"t": 5.0},
}
# The paper's Figs. 4a, 4b and 7 at its hyperparameters (the map's arms supply t = 5, 50 tau at
# t_d = 0, kappa0 = 1e-3 at t = tau, and exact NGD): label -> (RunSpec changes, kappa0)
FIGURES: dict[str, list[tuple[str, dict[str, Any], float]]] = {
    "fig4a": [("tngd t=10τ", {"t": 10.0}, KAPPA0), ("tngd t=20τ", {"t": 20.0}, KAPPA0)],
    "fig4b": [(f"tngd t=5τ t_d={d:g}τ", {"t": 5.0, "delay": d}, KAPPA0) for d in (0.2, 1.0)],
    "fig7": [(f"tngd t=1τ κ0={k:g}", {"t": 1.0}, k) for k in (1e-2, 1e-1)],
}
FIGURE_RUNS = {  # every curve of each figure's plot
    "fig4a": ["tngd t=5τ", "tngd t=10τ", "tngd t=20τ", BASE_LABEL, "ngd (exact)"],
    "fig4b": ["tngd t=5τ", "tngd t=5τ t_d=0.2τ", "tngd t=5τ t_d=1τ", "ngd (exact)"],
    "fig7": ["tngd t=1τ", "tngd t=1τ κ0=0.01", "tngd t=1τ κ0=0.1", "ngd (exact)"],
    "fig3": [BASE_LABEL, "adam lr=0.001", "adam lr=0.03", "ngd (exact)"],
}
PROBE_SOLVES, QUICK_PROBE_SOLVES = 8, 3


def kappa_label(kappa0: float) -> str:
    return BASE_LABEL if kappa0 == KAPPA0 else f"tngd κ0={kappa0:g}"


def arms(args):
    tngd = [arm(kappa_label(k), {"kappa0": k}, optimizer="tngd", **PAPER) for k in KAPPAS]
    tngd += [arm(label, {"kappa0": KAPPA0}, optimizer="tngd", **{**PAPER, **change})
             for label, change in VARIANTS.items()]
    tngd += [arm(label, {"kappa0": k}, optimizer="tngd", **{**PAPER, **change})
             for figure in FIGURES.values() for label, change, k in figure]
    return [*tngd, arm("ngd (exact)", optimizer="ngd", **PAPER),
            *(arm(f"adam lr={lr:g}", optimizer="adam", lr=lr, batch_size=64) for lr in ADAM_LRS)]


def variant_spec(label: str) -> dict[str, Any]:
    """The paper point with a variant's changes, as TNGD/closed-form parameters."""
    spec = {**PAPER, "warm_start": None, "readout": "final", **VARIANTS.get(label, {})}
    return spec


# --- the closed form on the run's own factors -------------------------------------------------

def probe(args, iterations: int) -> dict[str, Any]:
    """Train TNGD at the paper's point (seed SEED); at PROBE iterations take the factors of a
    fixed batch, predict every variant's readout noise and measure the reset ones on the
    device."""
    data = load(args.data)
    x, y = data.train[:PAPER["batch_size"]]
    at = sorted({0, iterations // 2, iterations - 1})
    solves = QUICK_PROBE_SOLVES if args.quick else PROBE_SOLVES
    spec = RunSpec(model="mlp", hidden=16, optimizer="tngd", iterations=iterations,
                   seed=args.seed, digital=args.digital, data=args.data, **PAPER)
    taken: list[tuple[int, Factors, torch.Tensor]] = []
    points = []
    with one_blas_thread(), Device.spawn(seed=args.seed, kappa0=KAPPA0) as device:
        model = build_model(spec.model, data, spec.hidden, spec.seed)
        optimizer = build_optimizer(spec, model, device)

        def take(record) -> None:
            if record.iteration in at:
                lin = Linearization(model, ParameterSet(model), x, y, Loss("cross_entropy"))
                taken.append((record.iteration + 1, factors(lin), lin.grad.double()))

        train(model, optimizer, data, iterations, batch_size=spec.batch_size, seed=spec.seed,
              eval_every=None, digital=parse_digital(spec.digital), callback=take)
        interval_tau = device.config["sample_interval_ns"] / device.tau_ns
        for iteration, curvature, g in taken:
            points.append(_probe_point(device, iteration, curvature, g, interval_tau, solves,
                                       spec.integrator))
    return {"batch": "the first 64 training images", "kappa0": KAPPA0, "solves": solves,
            "points": points}


def _probe_point(device: Device, iteration: int, curvature: Factors, g: torch.Tensor,
                 interval_tau: float, solves: int, integrator: str) -> dict[str, Any]:
    J, H, grad = (a.numpy() for a in (curvature.J, curvature.H, g))
    spectra = {}
    predicted = {}
    for label in [BASE_LABEL, *VARIANTS]:
        p = variant_spec(label)
        lam = p["damping"]
        spectra.setdefault(lam, spectrum(J, H, lam))
        state = "kept" if p["warm_start"] else "reset"
        samples = round(p["t"] / interval_tau) if p["readout"] == "average" else 1
        noise = readout_noise(spectra[lam], grad, KAPPA0, p["t"], state, samples)
        predicted[label] = {"step": noise.step, "range_noise": noise.range_noise,
                            "null_noise": noise.null_noise, "rank": noise.rank,
                            "ratio": noise.ratio, "kappa0_star": KAPPA0 / noise.ratio,
                            "state": state, "samples": samples}
    measured = {}
    for label in (BASE_LABEL, "tngd average readout"):
        p = variant_spec(label)
        solver = ThermodynamicNGD(device, damping=p["damping"], t=p["t"], readout=p["readout"],
                                  seed=iteration, integrator=integrator)
        reads = np.array([solver.solve(curvature, g, 0)[0] for _ in range(solves)])
        basis = spectra[p["damping"]].basis
        spread = reads - reads.mean(axis=0)
        in_range = ((spread @ basis) ** 2).sum(axis=1)
        total = (spread**2).sum(axis=1)
        scale = solves / (solves - 1)  # the unbiased sample variance
        measured[label] = {"range_noise": float(in_range.mean() * scale),
                           "null_noise": float((total - in_range).mean() * scale),
                           "standard_error": float(total.std(ddof=1) * scale / math.sqrt(solves)),
                           "mean_step": float(reads.mean(axis=0) @ reads.mean(axis=0))}
    return {"iteration": iteration, "n": int(J.shape[1]), "m": int(J.shape[0]),
            "predicted": predicted, "measured": measured}


def closed_form_table(result: dict[str, Any]) -> str:
    lines = [f"closed form at kappa0 = {KAPPA0:g} (the map's other kappa0: noise scales with "
             f"kappa0), factors of {result['batch']}:",
             f"  {'iteration':>9} {'variant':<24} {'|A^-1 g|^2':>10} {'E|xi|^2 range':>13} "
             f"{'null':>9} {'noise/step':>10} {'kappa0*':>9}   measured range / null (± se)"]
    for point in result["points"]:
        for label, p in point["predicted"].items():
            m = point["measured"].get(label)
            seen = (f"   {m['range_noise']:.3g} / {m['null_noise']:.3g} "
                    f"(± {m['standard_error']:.2g})" if m else "")
            lines.append(f"  {point['iteration']:>9d} {label:<24} {p['step']:>10.4g} "
                         f"{p['range_noise']:>13.4g} {p['null_noise']:>9.4g} "
                         f"{p['ratio']:>10.3g} {p['kappa0_star']:>9.2g}{seen}")
    return "\n".join(lines)


# --- the map ----------------------------------------------------------------------------------

def summarize(results: list[Result]) -> dict[str, dict[str, Any]]:
    """Per label over its seeds: final test loss and batch loss (mean, std), simulated ms per
    iteration (of the first seed: the clock is deterministic per seed)."""
    groups: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        groups[result.label].append(result)
    summary = {}
    for label, runs in groups.items():
        test = np.array([r.history.final_test_loss for r in runs])
        train_loss = np.array([float(r.history.series("loss")[-10:].mean()) for r in runs])
        ms = runs[0].history.records[-1].sim_time_ns / 1e6 / len(runs[0].history.records)
        summary[label] = {"seeds": len(runs), "test_loss": float(np.nanmean(test)),
                          "test_loss_std": float(np.nanstd(test, ddof=1)) if len(runs) > 1
                          else math.nan,
                          "train_loss": float(np.nanmean(train_loss)),
                          "ms_per_iteration": ms, "diverged": int(np.sum(~np.isfinite(test)))}
    return summary


def plot_map(summary: dict[str, dict[str, Any]], results: list[Result],
             closed: dict[str, Any], path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    floor = 1e-7  # where kappa0 = 0 is drawn
    ks = [k for k in KAPPAS if kappa_label(k) in summary]
    xs = [k if k > 0 else floor for k in ks]
    ys = [summary[kappa_label(k)]["test_loss"] for k in ks]
    es = [summary[kappa_label(k)]["test_loss_std"] for k in ks]
    ax.errorbar(xs, ys, yerr=es, marker="o", color="C0", label="TNGD (paper point, reset)")
    references = [("ngd (exact)", "k"), (f"adam lr={ADAM_LRS[0]:g}", "C3")]
    tuned = _best_adam(summary)
    if tuned:
        references.append((tuned, "C2"))
    for label, colour in references:
        if label in summary:
            ax.axhline(summary[label]["test_loss"], color=colour, ls="--",
                       label=f"{label} (paper's)" if label.endswith(f"={ADAM_LRS[0]:g}")
                       else label)
    star = closed["points"][-1]["predicted"][BASE_LABEL]["kappa0_star"]
    ax.axvline(star, color="C1", ls=":",
               label=f"closed form: noise = NGD step (κ0* = {star:.1g})")
    ax.set_xscale("log")
    ax.set_xticks(xs, ["0" if k == 0 else f"{k:g}" for k in ks])
    ax.set_xlabel("κ0 (thermal noise)")
    ax.set_ylabel("final test loss (mean ± sd over seeds)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("κ0 at the paper's point")

    ax = axes[1]
    labels = [BASE_LABEL, *VARIANTS, "ngd (exact)", *(f"adam lr={lr:g}" for lr in ADAM_LRS)]
    labels = [label for label in labels if label in summary]
    ax.barh(range(len(labels)), [summary[label]["test_loss"] for label in labels],
            xerr=[summary[label]["test_loss_std"] for label in labels], color="C0")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("final test loss (κ0 = 0.001 for TNGD)")
    ax.set_title("one factor at a time")

    ax = axes[2]
    first = {}
    for result in results:
        first.setdefault(result.label, result)
    for label, colour in ((BASE_LABEL, "C0"), ("ngd (exact)", "k"),
                          (f"adam lr={ADAM_LRS[0]:g}", "C3"), (tuned, "C2")):
        if label in first:
            h = first[label].history
            ms = h.series("sim_time_ns") / 1e6
            ax.plot(ms, running_mean(h.series("loss"), SMOOTHING), color=colour, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("simulated time (ms): roofline A100 digital clock + device phases")
    ax.set_ylabel(f"batch loss (running mean of {SMOOTHING}), first seed")
    ax.legend(fontsize=7)
    ax.set_title("against simulated time (cf. Fig. 3)")
    for a in axes:
        a.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _best_adam(summary: dict[str, dict[str, Any]]) -> str | None:
    adams = [f"adam lr={lr:g}" for lr in ADAM_LRS if f"adam lr={lr:g}" in summary]
    return min(adams, key=lambda label: summary[label]["test_loss"]) if adams else None


def map_table(summary: dict[str, dict[str, Any]]) -> str:
    lines = [f"  {'arm':<28} {'seeds':>5} {'test loss':>17} {'train loss':>10} "
             f"{'sim ms/iter':>11}"]
    for label, s in summary.items():
        lines.append(f"  {label:<28} {s['seeds']:>5d} {s['test_loss']:>8.4f} ± "
                     f"{s['test_loss_std']:<6.4f} {s['train_loss']:>10.4f} "
                     f"{s['ms_per_iteration']:>11.4f}")
    return "\n".join(lines)


def run() -> None:
    args = parse(DESCRIPTION, ITERATIONS, QUICK_ITERATIONS)
    prefix = Path(args.out) if args.out else run_directory(NAME) / NAME
    if not args.out:  # main() writes where the map goes
        sys.argv += ["--out", str(prefix)]
    results = main(NAME, DESCRIPTION, arms, ITERATIONS, QUICK_ITERATIONS)
    summary = summarize(results)
    print("\nthe map (over every seed):")
    print(map_table(summary))
    closed = probe(args, args.iterations)
    print()
    print(closed_form_table(closed))
    written = write_json({"summary": summary, "closed_form": closed},
                         Path(f"{prefix}_closed_form.json"))
    print(f"closed form: {written}")
    first: dict[str, Result] = {}
    for result in results:
        first.setdefault(result.label, result)
    for figure, labels in FIGURE_RUNS.items():
        chosen = [first[label] for label in labels if label in first]
        if chosen:
            drawn = plot(chosen, f"{prefix}_{figure}.png",
                         f"{figure} at the paper's hyperparameters, seed {args.seed}")
            print(f"{figure}: {drawn}")
    title = f"{DESCRIPTION} ({args.iterations} iterations, seeds {args.seed}..{args.seed + args.seeds - 1})"
    print(f"map: {plot_map(summary, results, closed, Path(f'{prefix}_map.png'), title)}")


if __name__ == "__main__":
    run()
