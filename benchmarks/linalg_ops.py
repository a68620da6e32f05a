"""Time to a 1 % estimate of logdet, lyapunov and expnegm on the emulated SPU, as a ratio to the
digital routine (numpy slogdet, scipy solve_continuous_lyapunov, scipy expm) timed in the same
run on the same matrix.

Each operation runs once at a fixed budget on a daemon from ``Device.spawn()`` (ideal profile,
kappa0 = 0.01, exact integrator). Its sampling error falls as 1 / sqrt(sampling time), so the
time to a relative standard error of 1 % is the budget's time x (relative error / 0.01)^2:
an extrapolation along the error law, not a second run. Two rows per operation: the device's
simulated time (the timing model's clock: uploads, evolution, reads) and this emulator's wall
time, both to 1 %, against the digital routine's wall time (median of repeats). A ratio above
1 means slower than the digital routine. thermox is not compared: it is not installed here
(JAX stays out of the default install).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.linalg import expm, solve_continuous_lyapunov

from _common import Row, base_parser, median, print_table
from spusim import Device, linalg

TARGET_ERROR = 0.01  # relative standard error
SEED = 0


def problems(n: int) -> dict[str, tuple[np.ndarray, Callable[[], Any]]]:
    """A symmetric A (eigenvalues 0.5 ... 5) and a non-normal drift (A plus a strictly upper
    triangular part), with each operation's digital routine."""
    rng = np.random.default_rng(SEED)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.linspace(0.5, 5.0, n)) @ Q.T
    A = (A + A.T) / 2
    drift = A + 0.5 * np.triu(rng.standard_normal((n, n)), 1)
    return {"logdet": (A, lambda: np.linalg.slogdet(A)),
            "lyapunov": (drift, lambda: solve_continuous_lyapunov(drift, np.eye(n))),
            "expnegm": (drift, lambda: expm(-drift))}


def run_device(device: Device, name: str, matrix: np.ndarray) -> tuple[Any, float, float]:
    """The result, its value and the magnitude its relative error is measured against."""
    if name == "logdet":
        result = linalg.logdet(device, matrix, intervals=8, t_sample=1000, seed=SEED)
        return result, result.logdet, abs(result.logdet)
    if name == "lyapunov":
        result = linalg.lyapunov(device, matrix, t_sample=2000, seed=SEED)
        return result, result.X, float(np.linalg.norm(result.X))
    result = linalg.expnegm(device, matrix, t=1.0, readings=2001, seed=SEED)
    return result, result.expnegm, float(np.linalg.norm(result.expnegm))


def digital_seconds(routine: Callable[[], Any], repeats: int = 20) -> float:
    routine()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        routine()
        times.append(time.perf_counter() - started)
    return median(times)


def measure(n: int = 16, retries: int = 1) -> list[Row]:
    rows = []
    with Device.spawn(kappa0=0.01, seed=SEED, integrator="exact") as device:
        for name, (matrix, routine) in problems(n).items():
            started = time.perf_counter()
            result, _, magnitude = run_device(device, name, matrix)
            wall = time.perf_counter() - started
            factor = (result.sampling_error / magnitude / TARGET_ERROR) ** 2
            digital = digital_seconds(routine)
            case = f"{name} N={n}, 1 % ({factor:.3g} x the budget)"
            rows.append(Row("linalg device time", case, result.device_time_ns * 1e-9 * factor,
                            digital, "s", time=True))
            rows.append(Row("linalg emulator wall", case, wall * factor, digital, "s",
                            time=True))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16, help="matrix size")
    args = parser.parse_args(argv)
    print_table(measure(args.n, args.retries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
