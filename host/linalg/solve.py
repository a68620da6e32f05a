"""solve (A x = b) and inv (A^-1) for symmetric positive definite A, from the device's mean and
stationary covariance.

Both scale A and b into the DACs' range first (``scale=True``, the default: the largest entry
lands on the largest code) and undo it on the result: the device then settles to
(s_A A)^-1 (s_b b) = (s_b / s_A) A^-1 b with covariance kappa0 (s_A A)^-1. Scaling A also
scales the relaxation rates by s_A, so the burn-in and sampling times (in tau) go as 1 / s_A.
Nothing here solves or inverts digitally: the answer is whatever the device's dynamics produced.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spusim.driver.client import Device, as_float64
from spusim.linalg.bounds import inverse_bound, programmed_error, solve_bound, systematics
from spusim.linalg.results import InverseResult, SolveResult
from spusim.linalg.sampling import Progress, batch_means, burn_in, check_schedule, sample_blocks
from spusim.linalg.session import Session


def solve(device: Device, A: Any, b: Any, *, t_burn: float = 50.0, t_sample: float = 500.0,
          blocks: int = 10, x0: Any = None, seed: int | None = None,
          integrator: str | None = None, scale: bool = True, on_clip: str = "raise",
          progress: Progress | None = None) -> SolveResult:
    """x ~ A^-1 b for symmetric positive definite A (N, N), b (N,), from the device's mean.

    t_burn, t_sample: burn-in and sampling time in units of tau. x0: initial state (default:
    whatever state the device holds, i.e. a warm start). seed: noise seed for reproducibility.
    integrator: "exact" or "euler_maruyama" (default: the daemon's). scale: fit A and b to
    the DACs' range (undone on x). on_clip: "raise" (:class:`ConverterClipped`) or "warn".
    """
    A, b = as_float64(A, "A", 2), as_float64(b, "b", 1)
    check_schedule(t_burn, blocks, t_sample)
    session = Session(device, on_clip, scale)
    scales = ((session.converters.coupling.scale_for(A), session.converters.bias.scale_for(b))
              if scale else (1.0, 1.0))
    s_a, s_b = scales
    session.program(s_a * A, integrator=integrator)
    session.set_bias(s_b * b)
    if x0 is not None:
        session.set_state(as_float64(x0, "x0", 1) * (s_b / s_a))
    seed = burn_in(session, t_burn, seed)
    reads = sample_blocks(session, t_sample, blocks, seed, second_moments=False,
                          progress=progress)
    x, error = batch_means(np.array([r.mean for r in reads]) * (s_a / s_b))
    costs = session.finish()
    rounding = programmed_error(session, A, s_a)
    found = systematics(session, scales, rounding,
                        solve_bound(session, A, b, x, error, scales, t_sample, blocks, rounding))
    return SolveResult.of(error, found, sum(r.samples for r in reads), blocks, costs, x=x)


def inv(device: Device, A: Any, *, t_burn: float = 50.0, t_sample: float = 2000.0,
        blocks: int = 10, seed: int | None = None, integrator: str | None = None,
        scale: bool = True, on_clip: str = "raise",
        progress: Progress | None = None) -> InverseResult:
    """A^-1 for symmetric positive definite A (N, N), from the stationary covariance kappa0 A^-1.

    The bias is set to zero, so the stationary mean is exactly 0 and the covariance is the
    averaged second moment, divided by the device's kappa0. Arguments as in :func:`solve`.
    """
    A = as_float64(A, "A", 2)
    check_schedule(t_burn, blocks, t_sample)
    session = Session(device, on_clip, scale)
    session.require_noise("inv")
    s_a = session.converters.coupling.scale_for(A) if scale else 1.0
    session.program(s_a * A, integrator=integrator)
    session.set_bias(np.zeros(A.shape[0]))
    seed = burn_in(session, t_burn, seed)
    reads = sample_blocks(session, t_sample, blocks, seed, second_moments=True,
                          progress=progress)
    moments = np.array([r.second_moment for r in reads]) * (s_a / session.kappa0)
    inverse, error = batch_means(moments)
    costs = session.finish()
    rounding = programmed_error(session, A, s_a)
    found = systematics(session, (s_a, 1.0), rounding,
                        inverse_bound(session, A, inverse, s_a, rounding))
    return InverseResult.of(error, found, sum(r.samples for r in reads), blocks, costs,
                            inverse=inverse)
