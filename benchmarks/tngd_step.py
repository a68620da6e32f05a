"""TNGD step: host wall time of one full TNGD step (forward, backward, J_f, the device solve,
the update) on an MLP with the exact integrator, at t = 50 tau as a ratio to the same step at
t = 5 tau, and to the same step with the solve done by numpy instead of the device.

The model is the digits MLP 64-16-10 (N = 1210) at a batch of 32 (m = b d_z = 320), the
paper's lambda = 0.01 and lr = 0.01, the state reset every step (t_d = 0) and the final sample
read ("final"). With the exact integrator the device crosses t minus one sample interval in
one transition (an unrecorded run), so the analog time hardly costs host time: the target is
t = 50 tau at most 1.3x t = 5 tau. The numpy reference solves the same system the same way
(the daemon's factored_eigen: thin QR of J^T, eigendecomposition of R H R^T; the relaxation
e^{-At} g + (I - e^{-At}) A^-1 g in that basis, noiseless): its ratio is what the daemon, the
wire and the device's noise and converters cost on top of the step's own linear algebra (no
target). A third row checks that the exact integrator, TNGD's default where the chip runs it,
is not slower than Euler-Maruyama (the paper's numerics) at t = 50 tau (target <= 1).
The four steppers alternate, one step each, on their own copies of the model.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Iterator

import numpy as np
from threadpoolctl import threadpool_limits

import torch

from _common import Row, base_parser, interleaved_samples, median, print_table, quietest
from spusim import Device
from spusim.device.transition import factored_eigen
from spusim.training.curvature import factors
from spusim.training.data import batches, load_digits
from spusim.training.linearization import Linearization
from spusim.training.models import mlp, n_params
from spusim.training.optimizers import Direction, NaturalGradient
from spusim.training.tngd import TNGD

HIDDEN, BATCH = (16,), 32
DAMPING, LR = 0.01, 0.01
T_LONG, T_SHORT = 50.0, 5.0
TARGET = 1.3


class NumpySolve(NaturalGradient):
    """The TNGD step with the device's solve done by numpy: the noiseless exact relaxation for
    t (tau) from g, in the basis U = Q W of the factored coupling (the exact integrator's own
    products)."""

    name = "numpy-solve"

    def __init__(self, model: torch.nn.Module, *, t: float, **options) -> None:
        super().__init__(model, **options)
        self.t = t

    def _direction(self, lin: Linearization, step: int) -> Direction:
        f = factors(lin, self.curvature)
        J, H = (np.asarray(a.detach(), dtype=np.float64) for a in (f.J, f.H))
        g = np.asarray(lin.grad.detach(), dtype=np.float64)
        mu, U = factored_eigen(J, H)
        lam = float(self.damping)
        nu, c = mu + lam, U.T @ g
        # x(t) = e^{-At} g + (I - e^{-At}) A^-1 g, on U and on its complement
        on_u = (np.exp(-nu * self.t) + -np.expm1(-nu * self.t) / nu) * c
        off_u = np.exp(-lam * self.t) + -np.expm1(-lam * self.t) / lam
        return Direction(torch.from_numpy(off_u * (g - U @ c) + U @ on_u))


def measure(steps: int = 15, warmup: int = 2, retries: int = 1) -> list[Row]:
    stream = itertools.cycle(list(itertools.islice(batches(load_digits().train, BATCH, seed=0),
                                                   32)))
    with (Device.spawn() as device, threadpool_limits(limits=1, user_api="blas"),
          _torch_threads(1)):
        models = {name: mlp(64, 10, HIDDEN, seed=1) for name in ("t50", "t5", "em50", "numpy")}
        common = {"lr": LR, "damping": DAMPING, "device": device, "warm_start": False}
        optimizers = {
            "t50": TNGD(models["t50"], t=T_LONG, integrator="exact", **common),
            "t5": TNGD(models["t5"], t=T_SHORT, integrator="exact", **common),
            "em50": TNGD(models["em50"], t=T_LONG, integrator="euler_maruyama", **common),
            "numpy": NumpySolve(models["numpy"], t=T_LONG, lr=LR, damping=DAMPING),
        }

        def stepper(name: str) -> Callable[[], None]:
            return lambda: optimizers[name].step(*next(stream))

        seconds, load = quietest(
            lambda: interleaved_samples({name: stepper(name) for name in optimizers},
                                        blocks=steps, per_block=1, warmup=warmup),
            retries=retries, pids=(device.process.process.pid,), what="tngd step")
    n, m = n_params(models["t50"]), BATCH * 10
    case = f"MLP N={n} m={m} exact"
    return [Row("tngd step", f"t=50 tau / t=5 tau, {case}", median(seconds["t50"]),
                median(seconds["t5"]), "s", target=TARGET, time=True, foreign_cores=load.cores,
                steal_cores=load.steal),
            Row("tngd step", f"t=50 tau / numpy's solve, {case}", median(seconds["t50"]),
                median(seconds["numpy"]), "s", time=True, foreign_cores=load.cores,
                steal_cores=load.steal),
            Row("tngd step", f"t=50 tau, exact / euler_maruyama, MLP N={n} m={m}",
                median(seconds["t50"]), median(seconds["em50"]), "s", target=1.0, time=True,
                foreign_cores=load.cores, steal_cores=load.steal)]


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads limited to ``count`` for the block (as BLAS's are)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per stepper")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per stepper")
    args = parser.parse_args(argv)
    print_table(measure(args.steps, args.warmup, args.retries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
