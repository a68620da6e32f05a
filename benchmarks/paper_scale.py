"""Paper scale: host wall time of one TNGD iteration's device part at N = 40 000 parameters and
b d_z = 640 rows (J: 640 x 40 000 float64, 205 MB; arXiv 2405.13817 runs N in 1e4-1e5 with
b = 64, d_z = 10), as a ratio to its floor, measured in the same run.

Product: ``ThermodynamicNGD.solve`` with the exact factored integrator, t = 50 tau, the state
reset to g, the final sample read: one ``solve_factored`` request carrying J, H and g, the
daemon's checks, and its run. Floor: the kernel's own products (the exact transition's thin QR
of J^T, eigendecomposition of R H R^T and U = Q W, the drive, the jump over t minus one
interval and the recorded sample: what the daemon computes, called directly here with one BLAS
thread, as the daemon runs) plus the upload of J, H and g at the raw zero-copy pyzmq rate (a
DEALER sends ``[header, J]`` with ``copy=False`` to a ROUTER in a subprocess that views it with
``np.frombuffer``; H and g are counted at J's rate). Target: product <= 1.5 x floor. The three
workloads alternate; J is random (a stand-in for J_f: the cost does not depend on its values).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
import zmq
from threadpoolctl import threadpool_limits

from _common import (
    RawServer,
    Row,
    base_parser,
    interleaved_samples,
    median,
    print_table,
    quietest,
)
from spusim import Device
from spusim.device import kernels
from spusim.device.transition import factored_transition
from spusim.training.curvature import Factors
from spusim.training.tngd import ThermodynamicNGD

N, M = 40_000, 640
DAMPING, T_TAU, KAPPA0 = 0.01, 50.0, 0.01
TARGET = 1.5


def _problem(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    J = rng.standard_normal((m, n)) / np.sqrt(n)
    root = rng.standard_normal((m, m)) / np.sqrt(m)
    return J, root @ root.T / m, rng.standard_normal(n)


def measure(n: int = N, m: int = M, reps: int = 3, warmup: int = 0,
            retries: int = 0) -> list[Row]:
    J, H, g = _problem(n, m)
    context = zmq.Context.instance()
    with (RawServer("sink") as server, Device.spawn(cells=n, kappa0=KAPPA0) as device,
          threadpool_limits(limits=1, user_api="blas")):
        solver = ThermodynamicNGD(device, damping=DAMPING, t=T_TAU, warm_start=False,
                                  integrator="exact", seed=0)
        interval = int(device.config["sample_interval_ns"])
        d_tau = interval / device.tau_ns
        jump_samples = device.duration_ns(T_TAU) // interval - 1
        dealer = context.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(server.endpoint)
        header = f"{m} {n}".encode()
        rng = np.random.default_rng(1)
        sums, adc = (np.zeros(n), np.zeros((0, 0))), kernels.ideal_adc(n)
        kernels.warm_up()  # numba's cache loaded here, as the daemon does before it is ready

        # torch views of the same memory: the solver takes a torch model's factors
        factors, g_torch = Factors(torch.from_numpy(J), torch.from_numpy(H)), torch.from_numpy(g)

        def product() -> None:
            solver.solve(factors, g_torch, 0)

        def kernel() -> None:
            step = factored_transition(J, H, DAMPING, KAPPA0, d_tau)
            x = g.copy()
            for one in (step.over(jump_samples * d_tau), step):
                kernels.exact_factored_run(one.basis, one.alpha, one.beta, one.decay_perp,
                                           one.noise_perp, one.drive(g), x, 1, rng,
                                           one is step, False, sums, kernels.no_lag(len(g)), adc)

        def raw() -> None:
            dealer.send_multipart([header, J], copy=False)
            dealer.recv()

        try:
            seconds, load = quietest(
                lambda: interleaved_samples({"product": product, "kernel": kernel, "raw": raw},
                                            blocks=reps, per_block=1, warmup=warmup),
                retries=retries, pids=(server.pid, device.process.process.pid),
                what="paper scale")
        finally:
            dealer.close()
    wire_bytes = J.nbytes + H.nbytes + g.nbytes
    upload = median(seconds["raw"]) * wire_bytes / J.nbytes
    floor = median(seconds["kernel"]) + upload
    print(f"  paper scale: product {median(seconds['product']):.2f} s, floor {floor:.2f} s = "
          f"kernel {median(seconds['kernel']):.2f} s + raw upload {upload:.2f} s "
          f"({wire_bytes / upload / 1e6:.0f} MB/s)", file=sys.stderr, flush=True)
    return [Row("paper scale", f"TNGD iteration N={n} m={m} exact t=50 tau / floor",
                median(seconds["product"]), floor, "s", target=TARGET, time=True,
                foreign_cores=load.cores, steal_cores=load.steal)]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=N, help="parameters N")
    parser.add_argument("-m", type=int, default=M, help="rows of J, b d_z")
    parser.add_argument("--reps", type=int, default=3, help="timed iterations per workload")
    parser.add_argument("--warmup", type=int, default=0, help="untimed iterations per workload")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print_table(measure(args.n, args.m, args.reps, args.warmup, args.retries))
    print(f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
