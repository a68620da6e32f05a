"""Time to a 1 % estimate of logdet, lyapunov and expnegm on the emulated SPU, as a ratio to the
digital routine (numpy slogdet, scipy solve_continuous_lyapunov, scipy expm) timed in the same
run on the same matrix.

Each operation runs once at a fixed budget on a daemon from ``Device.spawn()`` (ideal profile,
kappa0 = 0.01, exact integrator). Its sampling error falls as 1 / sqrt(sampling time), so the
time to a relative standard error of 1 % is the budget's time x (relative error / 0.01)^2:
an extrapolation along the error law, not a second run. Two rows per operation: the device's
simulated time (the timing model's clock: uploads, evolution, reads) and this emulator's wall
time, both to 1 %, against the digital routine's wall time (median of repeats). A ratio above
1 means slower than the digital routine. The extrapolated wall time scales the fixed costs
(programming, burn-in, round trips) with the sampling; expnegm, whose budget is far from 1 %,
is therefore also run once at the extrapolated budget and that call's wall time reported with
the relative standard error it reached.

When thermox (the TLA authors' library, arXiv 2311.12759's expnegm; ``pip install -e
".[thermox]"``) is installed, expnegm is also compared with thermox.linalg.expnegm at equal
noise (both processes have the stationary covariance I) and equal statistics (the same number
of lag pairs, the same shift alpha, 64 samples of burn-in for thermox), for the symmetric A and
the non-normal drift: the relative error of each against expm, and the wall time per sample
(thermox after a warm-up call, so without JAX's compilation).
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
from spusim.linalg.expnegm import symmetric_part_shift

TARGET_ERROR = 0.01  # relative standard error
SEED = 0
EXPNEGM_READINGS = 20_001  # expnegm's budget: recorded time in lags


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
    result = linalg.expnegm(device, matrix, t=1.0, readings=EXPNEGM_READINGS, seed=SEED)
    return result, result.expnegm, float(np.linalg.norm(result.expnegm))


def expnegm_at_target(device: Device, matrix: np.ndarray, factor: float,
                      digital: float) -> Row:
    """expnegm run once at ``factor`` x its budget (the extrapolation's 1 %): wall time of that
    call against the digital routine's ``digital`` s, with the relative error it reached."""
    readings = int(np.ceil(EXPNEGM_READINGS * factor))
    started = time.perf_counter()
    result = linalg.expnegm(device, matrix, t=1.0, readings=readings, seed=SEED + 1)
    wall = time.perf_counter() - started
    reached = result.sampling_error / float(np.linalg.norm(result.expnegm))
    return Row("linalg emulator wall", f"expnegm N={len(matrix)}, {reached:.2%} in one call "
               f"({readings} lags)", wall, digital, "s", time=True)


def digital_seconds(routine: Callable[[], Any], repeats: int = 200) -> float:
    """Median wall time of ``routine`` (s). Many repeats: on a shared machine the first dozen
    calls of expm took 4-13 ms instead of 0.02 ms (BLAS threads waking), which 20 repeats let
    into the median."""
    routine()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        routine()
        times.append(time.perf_counter() - started)
    return median(times)


def thermox_rows(device: Device, cases: dict[str, np.ndarray], readings: int) -> list[Row]:
    """Our expnegm against thermox's at equal noise and statistics (empty without thermox)."""
    try:
        import jax
        import thermox
    except ImportError:
        return []
    jax.config.update("jax_enable_x64", True)
    rows = []
    for label, matrix in cases.items():
        truth = expm(-matrix)
        shift = symmetric_part_shift(matrix)
        started = time.perf_counter()
        ours = linalg.expnegm(device, matrix, t=1.0, readings=readings, seed=SEED).expnegm
        our_seconds = time.perf_counter() - started

        def theirs() -> np.ndarray:
            return np.asarray(thermox.linalg.expnegm(
                jax.numpy.asarray(matrix), num_samples=readings, dt=1.0, burnin=64,
                key=jax.random.PRNGKey(SEED), alpha=shift))

        theirs()  # compile
        started = time.perf_counter()
        estimate = theirs()
        their_seconds = time.perf_counter() - started
        case = f"expnegm {label} N={len(matrix)}, {readings} samples"
        rows.append(Row("vs thermox: rel. error", case, _relative(ours, truth),
                        _relative(estimate, truth), "1", time=True))
        rows.append(Row("vs thermox: wall/sample", case, our_seconds / readings,
                        their_seconds / readings, "s", time=True))
    return rows


def _relative(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


def measure(n: int = 16, retries: int = 1) -> list[Row]:
    rows = []
    cases = problems(n)
    # Timed before the daemon starts: its BLAS threads, spinning after a run, slowed the
    # digital routines up to 400-fold on two cores when timed between the device's runs.
    digitals = {name: digital_seconds(routine) for name, (_, routine) in cases.items()}
    with Device.spawn(kappa0=0.01, seed=SEED, integrator="exact") as device:
        for name, (matrix, _) in cases.items():
            started = time.perf_counter()
            result, _, magnitude = run_device(device, name, matrix)
            wall = time.perf_counter() - started
            factor = (result.sampling_error / magnitude / TARGET_ERROR) ** 2
            digital = digitals[name]
            case = f"{name} N={n}, 1 % ({factor:.3g} x the budget)"
            rows.append(Row("linalg device time", case, result.device_time_ns * 1e-9 * factor,
                            digital, "s", time=True))
            rows.append(Row("linalg emulator wall", case, wall * factor, digital, "s",
                            time=True))
            if name == "expnegm":
                rows.append(expnegm_at_target(device, matrix, factor, digital))
        rows += thermox_rows(device, {"symmetric": cases["logdet"][0],
                                      "non-normal": cases["expnegm"][0]}, readings=2001)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16, help="matrix size")
    args = parser.parse_args(argv)
    print_table(measure(args.n, args.retries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
