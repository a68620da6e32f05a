"""Kernel throughput: cell-steps per second (N x steps / wall s) of the device's two integrators,
as a ratio to a numpy BLAS matvec loop (``np.dot(A, x, out=y)`` in Python; N x matvecs / s).

The kernels are called directly, the way :class:`device.spu.EmulatedSPU` calls them: canonical
C-contiguous float64 inputs, a ``numpy.random.Generator``, ``record=True`` (first moments only,
the default of a ``run``), many steps per call, after a warm-up call. Each (N, thread count)
cell alternates the three workloads so drift hits them alike.

One exact-integrator step covers a whole ADC sample interval at O(N) cost (it runs in A's
eigenbasis: N normal draws and a few multiply-adds per mode); one Euler-Maruyama step does
1 matvec and covers em_step_ns (at the defaults, 0.1 tau = one sample interval, so both take
1 step per sample).
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS, which numba's np.dot uses)
from threadpoolctl import threadpool_info, threadpool_limits

from _common import Row, Work, base_parser, interleaved_rates, median, print_table, quietest
from spusim.device import kernels
from spusim.device.config import DeviceConfig
from spusim.device.transition import exact_transition, factored_transition

SIZES = (64, 256, 1024)
THREADS = (1, 2)
TARGET_N, TARGET = 1024, 0.5
FACTORED_N, FACTORED_M = 10_000, 640  # the TNGD paper's example: N = 1e4, b d_z = 640


@functools.lru_cache(maxsize=None)
def _problem(n: int, config: DeviceConfig) -> dict[str, object]:
    """An SPD A (eigenvalues about 1..5), a bias, and both integrators' inputs at ``config``."""
    rng = np.random.default_rng(n)
    m = rng.standard_normal((n, n))
    A = np.ascontiguousarray(m @ m.T / n + np.eye(n))
    b = rng.standard_normal(n)
    lam, V = np.linalg.eigh(A)
    t = exact_transition(lam, V, config.kappa0, config.sample_interval_ns / config.tau_ns)
    x = np.linalg.solve(A, b)  # start at the mean: no transient
    return {"A": A, "b": b, "x": x, "V": t.eigenvectors, "decay": t.decay, "noise_sd": t.noise_sd,
            "drive": t.drive_gain * (V.T @ b), "y": V.T @ x}


def _completed(taken: int, count: int) -> None:
    """A kernel returns the samples it took; fewer than asked means the state diverged."""
    if taken != count:
        raise RuntimeError(f"the kernel diverged after {taken} of {count} samples")


def _workloads(n: int, config: DeviceConfig) -> tuple[dict[str, Work], dict[str, int]]:
    """The three workloads at size ``n`` (each ``work(count)``) and the steps per count unit."""
    p = _problem(n, config)
    A, b, decay, noise_sd, drive = p["A"], p["b"], p["decay"], p["noise_sd"], p["drive"]
    h = config.em_step_ns / config.tau_ns
    noise_scale = float(np.sqrt(2.0 * config.kappa0 * h))
    steps_per_sample = config.sample_interval_ns // config.em_step_ns
    rng = np.random.default_rng(0)
    x_em, y_ou, x_ref = p["x"].copy(), p["y"].copy(), p["x"].copy()
    y = np.empty(n)
    sums_em, sums_ou = (np.zeros(n), np.zeros((0, 0))), (np.zeros(n), np.zeros((0, 0)))
    V, adc = p["V"], kernels.ideal_adc(n)

    def matvec(count: int) -> None:
        dot = np.dot
        for _ in range(count):
            dot(A, x_ref, out=y)

    def euler_maruyama(count: int) -> None:  # count = sample intervals
        _completed(kernels.euler_maruyama_run(A, b, x_em, h, noise_scale, count,
                                              steps_per_sample, rng, True, False, sums_em,
                                              kernels.no_lag(n), adc), count)

    no_filter = np.zeros((5, 0))

    def exact(count: int) -> None:  # count = steps = sample intervals
        _completed(kernels.exact_modal_run(decay, drive, noise_sd, y_ou, no_filter, no_filter[0],
                                           V, count, rng, True, False, sums_ou,
                                           kernels.no_lag(n), adc), count)

    works = {"matvec": matvec, "euler_maruyama": euler_maruyama, "exact": exact}
    steps_per_unit = {"matvec": 1, "euler_maruyama": steps_per_sample, "exact": 1}
    return works, steps_per_unit


def _blas_threads() -> list[int]:
    return sorted({info["num_threads"] for info in threadpool_info()
                   if info["user_api"] == "blas"})


def measure(reps: int = 5, min_seconds: float = 0.2, sizes=SIZES, threads=THREADS,
            retries: int = 1) -> list[Row]:
    """Both dense integrators at ``sizes``, then both factored ones at the paper's size."""
    return (measure_dense(reps, min_seconds, sizes, threads, retries)
            + measure_factored(reps=reps, min_seconds=min_seconds, threads=threads,
                               retries=retries))


def measure_dense(reps: int = 5, min_seconds: float = 0.2, sizes=SIZES, threads=THREADS,
                  retries: int = 1) -> list[Row]:
    config = DeviceConfig()
    kernels.warm_up()  # compile or load from numba's cache
    rows = []
    for count in threads:
        with threadpool_limits(limits=count, user_api="blas"):
            assert _blas_threads() == [count], threadpool_info()
            for n in sizes:
                works, steps = _workloads(n, config)
                rates, load = quietest(
                    lambda: interleaved_rates(works, reps=reps, min_seconds=min_seconds),
                    retries=retries, what=f"kernels N={n} blas={count}")
                cell_steps = {name: median(r) * steps[name] * n for name, r in rates.items()}
                for name in ("euler_maruyama", "exact"):
                    target = TARGET if n == TARGET_N else None
                    rows.append(Row("kernel", f"{name} N={n} blas={count}", cell_steps[name],
                                    cell_steps["matvec"], "cell-steps/s", target=target,
                                    foreign_cores=load.cores, steal_cores=load.steal))
    return rows


def measure_factored(n: int = FACTORED_N, m: int = FACTORED_M, reps: int = 5,
                     min_seconds: float = 0.2, threads=THREADS, retries: int = 1) -> list[Row]:
    """The factored Euler-Maruyama kernel ((J^T H J + lambda I) x - b, never forming the N x N
    matrix) against numpy doing the same three matvecs (J x, H (J x), J^T (...)) per step; and
    the exact factored kernel against numpy's two passes over U ([x xi]^T U, U c) per step."""
    rng = np.random.default_rng(1)
    J = rng.standard_normal((m, n)) / np.sqrt(n)
    H = np.eye(m) / m
    damping, b = np.full(n, 1.0), rng.standard_normal(n)
    x, ref = np.zeros(n), np.zeros(n)
    sums, adc = (np.zeros(n), np.zeros((0, 0))), kernels.ideal_adc(n)
    jx, hjx, out = np.empty(m), np.empty(m), np.empty(n)

    def factored(count: int) -> None:
        _completed(kernels.euler_maruyama_factored_run(J, H, damping, b, x, 0.1, 0.01, count, 1,
                                                       rng, True, False, sums, kernels.no_lag(n),
                                                       adc), count)

    def matvecs(count: int) -> None:
        dot = np.dot
        for _ in range(count):
            dot(J, ref, out=jx)
            dot(H, jx, out=hjx)
            dot(J.T, hjx, out=out)

    step = factored_transition(J, H, 1.0, 0.01, 0.1)
    U, x_exact, drive = step.basis, np.zeros(n), step.drive(b)
    pair, projected, coefficients = np.zeros((2, n)), np.empty((2, m)), np.zeros(m)

    def exact(count: int) -> None:
        _completed(kernels.exact_factored_run(U, step.alpha, step.beta, step.decay_perp,
                                              step.noise_perp, drive, x_exact, count, rng, True,
                                              False, sums, kernels.no_lag(n), adc), count)

    def projections(count: int) -> None:
        dot = np.dot
        for _ in range(count):
            dot(pair, U, out=projected)
            dot(U, coefficients, out=out)

    rows = []
    for count in threads:
        with threadpool_limits(limits=count, user_api="blas"):
            rates, load = quietest(
                lambda: interleaved_rates({"factored": factored, "matvecs": matvecs,
                                           "exact": exact, "projections": projections},
                                          reps=reps, min_seconds=min_seconds),
                retries=retries, what=f"factored N={n} m={m} blas={count}")
            for name, kernel, reference in (("factored", "factored", "matvecs"),
                                            ("factored exact", "exact", "projections")):
                rows.append(Row("kernel", f"{name} N={n} m={m} blas={count}",
                                median(rates[kernel]) * n, median(rates[reference]) * n,
                                "cell-steps/s", target=TARGET, foreign_cores=load.cores,
                                steal_cores=load.steal))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions per workload")
    parser.add_argument("--min-seconds", type=float, default=0.2,
                        help="least wall time of one repetition")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), metavar="N")
    parser.add_argument("--threads", type=int, nargs="+", default=list(THREADS),
                        help="BLAS thread counts (threadpoolctl: numpy's and scipy's OpenBLAS)")
    args = parser.parse_args(argv)
    print_table(measure(args.reps, args.min_seconds, args.sizes, args.threads, args.retries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
