"""Integrator set-up for a programmed coupling matrix: positivity and stability checks, and the
exact Ornstein-Uhlenbeck transition over one sample interval.

For dx = -(A x - b) dt + sqrt(2 kappa0) dW (t in tau) and symmetric A = V diag(lam) V^T, one
interval d maps x to

    x' = exp(-A d) x + (int_0^d exp(-A s) ds) b + xi,   xi ~ N(0, kappa0 A^-1 (I - exp(-2 A d)))

In the coordinates y = V^T x every mode evolves on its own, so the kernel applies this map at
O(N) per step; the mean A^-1 b emerges from iterating it, nothing here solves A x = b. The same
eigenvalues decide whether the dynamics are stable at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocol import ErrorCode, ProtocolError


@dataclass(frozen=True)
class ExactTransition:
    """One exact step over an interval d (tau units), per eigenmode of A = V diag(lam) V^T.

    eigenvectors: V (N, N), C-contiguous. decay = exp(-lam d); drive_gain = (1 - exp(-lam d)) /
    lam (multiplies V^T b); noise_sd = sqrt(kappa0 (1 - exp(-2 lam d)) / lam); all (N,).
    """

    eigenvectors: np.ndarray
    decay: np.ndarray
    drive_gain: np.ndarray
    noise_sd: np.ndarray


def check_positive_definite(eigenvalues: np.ndarray) -> None:
    """Raise NOT_POSITIVE_DEFINITE unless every eigenvalue is clearly above zero."""
    lam_min, lam_max = float(eigenvalues[0]), float(eigenvalues[-1])
    floor = eigenvalues.size * np.finfo(float).eps * max(abs(lam_max), abs(lam_min))
    if lam_min <= floor:
        raise ProtocolError(
            ErrorCode.NOT_POSITIVE_DEFINITE,
            f"the programmed matrix is not positive definite (smallest eigenvalue "
            f"{lam_min:.3g}, largest {lam_max:.3g}): the dynamics dx = -(Ax - b)dt would not "
            "settle. Nothing was run.", smallest_eigenvalue=lam_min, largest_eigenvalue=lam_max)


def check_euler_step(eigenvalues: np.ndarray, step_tau: float, em_step_ns: int,
                     exact_available: bool = True) -> None:
    """Raise UNSTABLE_STEP unless Euler-Maruyama with ``step_tau`` is stable (step * lam_max < 2).

    The message suggests the exact integrator only where it is ``exact_available``.
    """
    lam_max = float(eigenvalues[-1])
    if step_tau * lam_max >= 2.0:
        limit_ns = int(2.0 / lam_max * em_step_ns / step_tau)
        remedy = ("use the exact integrator or an em_step_ns" if exact_available else
                  "scale the curvature and damping down, or start the daemon with an em_step_ns")
        raise ProtocolError(
            ErrorCode.UNSTABLE_STEP,
            f"Euler-Maruyama with a step of {step_tau:g} tau is unstable for this coupling "
            f"(step x largest eigenvalue = {step_tau * lam_max:.3g} >= 2): {remedy} below "
            f"{limit_ns} ns. Nothing was run.", largest_eigenvalue=lam_max, step_tau=step_tau)


def exact_transition(eigenvalues: np.ndarray, eigenvectors: np.ndarray, kappa0: float,
                     interval_tau: float) -> ExactTransition:
    """The exact step for A = V diag(eigenvalues) V^T over ``interval_tau``."""
    lam, d = eigenvalues, interval_tau
    return ExactTransition(
        eigenvectors=np.ascontiguousarray(eigenvectors),
        decay=np.exp(-lam * d),
        drive_gain=-np.expm1(-lam * d) / lam,
        noise_sd=np.sqrt(kappa0 * -np.expm1(-2.0 * lam * d) / lam),
    )
