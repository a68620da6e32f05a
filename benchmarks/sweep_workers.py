"""Sweep speed-up on Dask: the same sweep (TNGD and exact NGD on the digits MLP 64-16-10, SEEDS
seeds each, every TNGD run on its own daemon) on a local cluster of 1 worker, then of 2, as a
ratio of wall times (2 workers / 1), with what the runs' own times project for N one-core
workers: max(longest run, total / N), a lower bound (docs/scaling.md).

Not part of ``make bench`` (it takes a few minutes). On a 2-core machine a TNGD run keeps up to
two processes busy (the run's host side and its daemon, in turns), so 2 workers cannot halve
the wall time; the load average printed beside the result says how busy the machine was with
others meanwhile.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

from _common import base_parser
from spusim.training.spec import RunSpec
from spusim.training.sweep import Task, projected_seconds, run_sweep

BASE = RunSpec(model="mlp", hidden=16, batch_size=32, damping=0.1, eval_every=50)


def tasks(seeds: int, iterations: int) -> list[Task]:
    tngd = replace(BASE, optimizer="tngd", t=5.0, iterations=iterations)
    ngd = replace(BASE, optimizer="ngd", iterations=iterations)
    return [task for seed in range(seeds) for task in (
        Task("tngd", replace(tngd, seed=seed), {"kappa0": 1e-3}),
        Task("ngd", replace(ngd, seed=seed)))]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args(argv)
    sweep = tasks(args.seeds, args.iterations)
    walls, seconds = {}, {}
    for workers in (1, 2):
        print(f"running {len(sweep)} runs on {workers} worker(s) (load average "
              f"{os.getloadavg()[0]:.2f}) ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        outcomes = run_sweep(sweep, workers=workers, progress=False)
        walls[workers] = time.perf_counter() - started
        seconds[workers] = [outcome.seconds for outcome in outcomes.values()]
        print(f"  {walls[workers]:.1f} s wall, the runs' own times {sum(seconds[workers]):.1f} s, "
              f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    print(f"sweep of {len(sweep)} runs: 2 workers {walls[2]:.1f} s / 1 worker {walls[1]:.1f} s "
          f"= {walls[2] / walls[1]:.2f} (a speed-up of {walls[1] / walls[2]:.2f}x)")
    runs = seconds[1]
    print(f"runs measured alone (1 worker): total {sum(runs):.1f} s, longest {max(runs):.1f} s; "
          "projected for N one-core workers (lower bound): "
          + ", ".join(f"N={n}: {projected_seconds(runs, n):.1f} s" for n in (2, 4, 8, 16)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
