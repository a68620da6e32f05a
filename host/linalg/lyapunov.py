"""lyapunov: the X with A X + X A^T = Q, as the stationary covariance of an Ornstein-Uhlenbeck
process with the general drift A (eigenvalues with positive real parts; non-normal allowed)
and diffusion Q (symmetric positive definite), realised as :mod:`spusim.linalg.ou` describes.

Error law (docs/physics.md): each entry's standard error is about sqrt((X_ii X_jj + X_ij^2) /
M_eff) with M_eff the number of independent samples, about t_sample times the slowest decay
rate of the device's drift (its smallest real eigenvalue part), so the sampling time for a
relative error eps grows as 1 / (eps^2 min Re lambda).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spusim.driver.client import Device, as_float64
from spusim.linalg.bounds import (
    Parts,
    mismatch_bound,
    moment_error,
    programmed_error,
    systematics,
)
from spusim.linalg.ou import Transformed, program_drift, transformed_drift
from spusim.linalg.results import LyapunovResult
from spusim.linalg.sampling import Progress, batch_means, burn_in, check_schedule, sample_blocks
from spusim.linalg.session import Session


def lyapunov(device: Device, A: Any, Q: Any = None, *, t_burn: float = 50.0,
             t_sample: float = 2000.0, blocks: int = 10, seed: int | None = None,
             integrator: str | None = None, scale: bool = True, on_clip: str = "raise",
             progress: Progress | None = None) -> LyapunovResult:
    """X (N, N) with A X + X A^T = Q for A (N, N) whose eigenvalues have positive real parts and
    Q (N, N) symmetric positive definite (None: the identity).

    The device runs the drift M = s L^-1 A L (general drift, protocol 1.3) with zero bias;
    t_burn and t_sample are in tau of that device, whose relaxation rates are s times M's.
    Other arguments as in :func:`spusim.linalg.solve`.
    """
    A = as_float64(A, "A", 2)
    Q = None if Q is None else as_float64(Q, "Q", 2)
    if A.shape[0] != A.shape[1] or (Q is not None and Q.shape != A.shape):
        raise ValueError(f"A must be square and Q of its shape, got {A.shape} and "
                         f"{None if Q is None else Q.shape}")
    check_schedule(t_burn, blocks, t_sample)
    session = Session(device, on_clip, scale)
    session.require_noise("lyapunov")
    transformed = transformed_drift(session, A, Q, scale)
    program_drift(session, transformed, integrator)
    seed = burn_in(session, t_burn, seed)
    reads = sample_blocks(session, t_sample, blocks, seed, second_moments=True,
                          progress=progress)
    X, error = batch_means(transformed.back(np.array([r.second_moment for r in reads]),
                                            session.kappa0))
    costs = session.finish()
    rounding = programmed_error(session, transformed.drift, transformed.scale)
    found = systematics(session, (transformed.scale, 1.0), rounding,
                        lyapunov_bound(session, transformed, X, rounding))
    return LyapunovResult.of(error, found, sum(r.samples for r in reads), blocks, costs, X=X)


def lyapunov_bound(session: Session, transformed: Transformed, X: np.ndarray,
                   rounding: np.ndarray) -> Parts:
    """First-order bound on ||X - X_true||_F from the drift's quantization and mismatch and
    the readings' offsets and ADC rounding.

    With Y = L^-1 X L^-T (M Y + Y M^T = I), an error E in M moves Y by the solution of
    M dY + dY M^T = -(E Y + Y E^T); its size is taken as ||E Y + Y E^T||_F ||Y||_2 (exact for
    normal M, where the Lyapunov operator's inverse has norm ||Y||_2 at Q = I), and X moves by
    L dY L^T, at most ||L||_2^2 times that. ``rounding``: the DAC's error E on the drift
    (:func:`~spusim.linalg.bounds.programmed_error`).
    """
    L = transformed.factor
    Y = X if L is None else np.linalg.solve(L, np.linalg.solve(L, X.T).T)
    norm_y = float(np.linalg.norm(Y, 2))
    E = rounding
    gain = 1.0 if L is None else float(np.linalg.norm(L, 2)) ** 2
    s, kappa0 = transformed.scale, session.kappa0
    reading = moment_error(session, X.shape[0], 2 * norm_y / s) * s / (2 * kappa0)
    return (gain * float(np.linalg.norm(E @ Y + Y @ E.T)) * norm_y,
            gain * 2 * mismatch_bound(session, transformed.drift) * norm_y**2, gain * reading)
