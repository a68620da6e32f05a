"""``spu linalg``: the five thermodynamic linear-algebra operations on a private daemon, each
against its digital closed form.

    spu linalg --n 8 --condition 10 --ops solve inv logdet lyapunov expnegm
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np
from scipy.linalg import expm, solve_continuous_lyapunov

from spusim import linalg
from spusim.cli.help import POSITIVE, number
from spusim.cli.solve_demo import demo_problem
from spusim.driver.client import Device
from spusim.driver.errors import DeviceError
from spusim.timing import PROFILES

OPS = ("solve", "inv", "logdet", "lyapunov", "expnegm")

DESCRIPTION = """\
Start a private daemon and run thermodynamic linear algebra on it: solve A x = b (stationary
mean), inv (stationary covariance), logdet (thermodynamic integration of the coupling), lyapunov
A X + X A^T = I and expnegm e^{-A} (lag autocovariance) for a non-normal drift (A plus
--non-normal times a random strictly upper triangular matrix). Each row compares the device's
answer with the digital closed form (numpy, scipy: for the comparison only) and shows the
error the result itself estimates (sampling plus the systematic bound), the samples, the
simulated device time and the converter clips. docs/physics.md gives the error laws."""


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``linalg`` subcommand to ``spu``'s subparsers."""
    parser = commands.add_parser(
        "linalg", help="solve, inv, logdet, lyapunov and expnegm on a private daemon",
        description=DESCRIPTION)
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), metavar="OP",
                        help=f"operations to run, of {', '.join(OPS)}")
    parser.add_argument("--n", type=number(int, 1, 64, what="size from 1 to 64"), default=8,
                        help="problem size N")
    parser.add_argument("--condition", type=number(float, 1.0, what="condition number"),
                        default=10.0, help="condition number of the symmetric A")
    parser.add_argument("--non-normal", type=number(float, 0.0, what="non-negative number"),
                        default=0.5,
                        help="size of the non-symmetric part of lyapunov's and expnegm's drift")
    parser.add_argument("--readings", type=number(int, 21, what="number of readings"),
                        default=4000, help="expnegm's recorded time, in lags")
    parser.add_argument("--kappa0", type=POSITIVE, default=0.01,
                        help="the device's thermal noise")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="ideal",
                        help="the device's parameter set (spu-8cell: RLC cells, which neither "
                             "hold a bias nor run a general drift: those rows are refused)")
    parser.add_argument("--seed", type=int, default=0, help="problem and device noise")
    return parser


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``spu linalg`` with parsed ``args`` (the table to ``out``, default stdout); returns
    the exit code."""
    out = sys.stdout if out is None else out
    A, b = demo_problem(args.n, args.condition, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    drift = A + args.non_normal * np.triu(rng.standard_normal(A.shape), 1)
    cases = _cases(A, b, drift, args.seed, args.readings)
    print(f"spu linalg: N = {args.n}, condition {args.condition:g}, non-normal part "
          f"{args.non_normal:g}, profile {args.profile}, kappa0 {args.kappa0:g}", file=out)
    print(f"\n  {'op':<9} {'rel. error':>10} {'estimated':>10} {'samples':>9} "
          f"{'device ms':>10} {'clips':>6} {'wall s':>7}", file=out)
    with Device.spawn(profile=args.profile, kappa0=args.kappa0, seed=args.seed) as device:
        for name in args.ops:
            started = time.perf_counter()
            compute, truth = cases[name]
            try:
                result, value = compute(device)
            except (DeviceError, ValueError, linalg.ConverterClipped) as error:
                print(f"  {name:<9} refused: {error}", file=out)
                continue
            scale = float(np.linalg.norm(truth))
            clips = sum((result.systematics.dac_clipped, result.systematics.bias_clipped,
                         result.systematics.adc_clipped))
            print(f"  {name:<9} {np.linalg.norm(value - truth) / scale:>10.2e} "
                  f"{result.error_estimate / scale:>10.2e} {result.samples:>9} "
                  f"{result.device_time_ns / 1e6:>10.3f} {clips:>6} "
                  f"{time.perf_counter() - started:>7.2f}", file=out)
    return 0


Case = tuple[Callable[[Device], tuple[Any, Any]], Any]


def _cases(A: np.ndarray, b: np.ndarray, drift: np.ndarray, seed: int,
           readings: int) -> dict[str, Case]:
    """Per op: how the device computes it (result, value) and the digital closed form."""
    return {
        "solve": (lambda d: _with(linalg.solve(d, A, b, t_sample=1000, seed=seed), "x"),
                  np.linalg.solve(A, b)),
        "inv": (lambda d: _with(linalg.inv(d, A, seed=seed), "inverse"), np.linalg.inv(A)),
        "logdet": (lambda d: _with(linalg.logdet(d, A, intervals=12, seed=seed), "logdet"),
                   np.linalg.slogdet(A)[1]),
        "lyapunov": (lambda d: _with(linalg.lyapunov(d, drift, seed=seed), "X"),
                     solve_continuous_lyapunov(drift, np.eye(len(A)))),
        "expnegm": (lambda d: _with(linalg.expnegm(d, drift, t=1.0, readings=readings,
                                                   seed=seed), "expnegm"), expm(-drift)),
    }


def _with(result: Any, field: str) -> tuple[Any, Any]:
    return result, getattr(result, field)
