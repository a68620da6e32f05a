"""expnegm: e^{-tA} from the lag-t autocovariance of a stationary Ornstein-Uhlenbeck process
(the convention of thermox and arXiv 2311.12759): with drift A and diffusion A + A^T the
stationary covariance is I, so E[x(s + t) x(s)^T] = e^{-tA} exactly, for any A whose symmetric
part is positive definite (normal or not).

The device realises that process by the similarity transform of :mod:`spusim.linalg.ou`
(Q = A + A^T = L L^T, drift s L^-1 A L, isotropic noise) and its lag correlator (protocol 1.5,
run ``lag_samples``) forms the products y_k y_{k-L}^T of ADC samples L sample intervals = t / s
tau apart on the device, at every sample of a recorded run; one run per block, one read each,
gives the block's lag moment, and e^{-tA} = (s / (2 kappa0)) L E[y_k y_{k-L}^T] L^T. Where
A + A^T is not positive definite, A + alpha I is used and the result multiplied by e^{alpha
t}, which multiplies its errors too.

Error law (docs/physics.md): with Y the stationary covariance of y, the lag moment's entries
have variances of about (Y_ii Y_jj + C_ij^2) / M_eff, with M_eff the number of effectively
independent pairs (the recorded time over about twice the slowest relaxation time, at most one
per lag); the batch means over the blocks measure it. The relative error of e^{-tA} falls as
1 / sqrt(recorded time) and grows with e^{alpha t} and with the conditioning of L.
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
from spusim.linalg.results import ExpnegmResult
from spusim.linalg.sampling import Progress, batch_means, burn_in, check_schedule
from spusim.linalg.session import Session

# Automatic shift: alpha puts the smallest eigenvalue of (A + A^T) / 2 + alpha I at this
# fraction of its spread (or of its size when the spread is zero).
_SHIFT_MARGIN = 0.1


def expnegm(device: Device, A: Any, t: float = 1.0, *, readings: int = 4000,
            blocks: int = 10, t_burn: float = 50.0, alpha: float | None = None,
            seed: int | None = None, integrator: str | None = None, scale: bool = True,
            on_clip: str = "raise", progress: Progress | None = None) -> ExpnegmResult:
    """e^{-tA} (N, N) for a real A (N, N) and t > 0, from a recorded time of ``readings`` lags
    (each t / s tau of the device: the time ``readings`` readings one lag apart took before the
    device had a lag correlator) in ``blocks`` runs, each read once.

    alpha: shift added to A (None: 0 when A + A^T is positive definite, else the smallest that
    makes it so, plus a margin). t_burn: burn-in in tau of the device. Other arguments as in
    :func:`spusim.linalg.solve`.
    """
    A = as_float64(A, "A", 2)
    if not t > 0 or not np.isfinite(t):
        raise ValueError(f"t must be positive and finite, got {t}")
    if readings < 2 * blocks + 1:
        raise ValueError(f"readings must be at least 2 * blocks + 1 = {2 * blocks + 1}, got "
                         f"{readings}")
    check_schedule(t_burn, blocks)
    session = Session(device, on_clip, scale)
    session.require_noise("expnegm")
    shift = symmetric_part_shift(A) if alpha is None else float(alpha)
    shifted = A + shift * np.eye(A.shape[0])
    transformed = transformed_drift(session, shifted, shifted + shifted.T, scale, lag_tau=t)
    program_drift(session, transformed, integrator)
    seed = burn_in(session, t_burn, seed)
    products, pairs = lag_products(session, t / transformed.scale, readings, blocks, seed,
                                   progress)
    gain = float(np.exp(shift * t))
    estimate, error = batch_means(gain * transformed.back(products, session.kappa0))
    costs = session.finish()
    rounding = programmed_error(session, transformed.drift, transformed.scale)
    parts = expnegm_bound(session, transformed, estimate / gain, t, rounding)
    found = systematics(session, (transformed.scale, 1.0), rounding,
                        (gain * parts[0], gain * parts[1], gain * parts[2]))
    return ExpnegmResult.of(error, found, pairs, blocks, costs, expnegm=estimate, shift=shift)


def symmetric_part_shift(A: np.ndarray) -> float:
    """0 if (A + A^T) / 2 is positive definite, else the alpha that lifts its smallest
    eigenvalue to _SHIFT_MARGIN of its spread."""
    eigenvalues = np.linalg.eigvalsh((A + A.T) / 2)
    if eigenvalues[0] > 0:
        return 0.0
    spread = float(eigenvalues[-1] - eigenvalues[0]) or abs(float(eigenvalues[0])) or 1.0
    return float(-eigenvalues[0] + _SHIFT_MARGIN * spread)


def lag_products(session: Session, lag_tau: float, readings: int, blocks: int,
                 seed: int | None, progress: Progress | None) -> tuple[np.ndarray, int]:
    """(blocks, N, N): per block, the device's lag moment E[y_k y_{k-L}^T] over one recorded
    run of readings // blocks lags, L the lag ``lag_tau`` in sample intervals (a whole
    number); and the lag pairs averaged in all (every sample of a run past its first L)."""
    interval = int(session.device.config["sample_interval_ns"])
    lag_ns = session.duration_ns(lag_tau)
    moments, pairs = [], 0
    for done in range(blocks):
        session.run(lag_ns * (readings // blocks), clear=True, lag_samples=lag_ns // interval,
                    seed=seed if done == 0 else None)
        readout = session.read(lag_moment=True)
        moments.append(readout.lag_moment)
        pairs += readout.lag_pairs
        if progress is not None:
            progress(done + 1, blocks)
    return np.array(moments), pairs


def expnegm_bound(session: Session, transformed: Transformed, E: np.ndarray,
                  t: float, rounding: np.ndarray) -> Parts:
    """First-order bound on ||e^{-tA} - estimate||_F (before the e^{alpha t} gain) from the
    drift's quantization and mismatch and the readings' offsets and ADC rounding.

    An error dA in A moves e^{-tA} by at most t ||dA||_2 max_{0<=s<=t} ||e^{-sA}||_2
    ||e^{-(t-s)A}||_2, taken as t ||dA||_2 max(1, ||E||_2)^2 (exact for normal A); dA = L E L^-1
    for an error E in the device's drift (``rounding``: the DAC's, as
    :func:`~spusim.linalg.bounds.programmed_error` gives it). Reading errors enter like
    lyapunov's.
    """
    L = transformed.factor
    singular = np.ones(1) if L is None else np.linalg.svd(L, compute_uv=False)
    conditioning = float(singular[0] / singular[-1])
    norm_e = max(1.0, float(np.linalg.norm(E, 2)))
    sensitivity = t * conditioning * norm_e**2
    s, kappa0 = transformed.scale, session.kappa0
    # ||Y_1||_2 = 1 / sigma_min(L)^2 for Y_1 = L^-1 L^-T; the drift's inverse ~ 2 Y_1 / s.
    inverse_norm = 2.0 / (float(singular[-1]) ** 2 * s)
    reading = (moment_error(session, E.shape[0], inverse_norm) * s / (2 * kappa0)
               * float(singular[0]) ** 2)
    return (sensitivity * float(np.linalg.norm(rounding, 2)),
            sensitivity * mismatch_bound(session, transformed.drift), reading)
