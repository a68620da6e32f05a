"""The stationary Ornstein-Uhlenbeck process the device runs for lyapunov and expnegm.

The cells' thermal noise is isotropic: with the drift M programmed as a general (possibly
non-normal) matrix, the device's state y settles to N(0, Y) with M Y + Y M^T = 2 kappa0 I.
A process with a general diffusion Q (A X + X A^T = Q) is realised by a similarity transform
instead of correlated noise, which the chip does not have (each cell's noise is its own
resistor's): with Q = L L^T (Cholesky) the device runs M = L^-1 A L, which has A's eigenvalues
(so it is exactly as stable), and x = L y has the stationary covariance X = L Y_1 L^T with
M Y_1 + Y_1 M^T = I. The host's digital work is one Cholesky factorisation and two triangular
products, O(N^3) once, none for Q = I; docs/physics.md compares it with noise shaping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import LinAlgError, cholesky, solve_triangular

from spusim.linalg.session import Session


@dataclass(frozen=True)
class Transformed:
    """The drift the device runs, M = L^-1 A L (N, N), its DAC scale s, and the factor L of Q
    (lower triangular, None for Q = I)."""

    drift: np.ndarray
    factor: np.ndarray | None
    scale: float

    def back(self, moments: np.ndarray, kappa0: float) -> np.ndarray:
        """Device second moments or lag moments (..., N, N) of y as the user's L Y_1 L^T."""
        unit = moments * (self.scale / (2.0 * kappa0))
        if self.factor is None:
            return unit
        return self.factor @ unit @ self.factor.T


def cholesky_factor(Q: np.ndarray, name: str) -> np.ndarray:
    """L lower triangular with L L^T = Q; ValueError unless Q is symmetric positive definite."""
    if not np.allclose(Q, Q.T, rtol=1e-10, atol=0.0):
        raise ValueError(f"{name} must be symmetric")
    try:
        return cholesky(Q, lower=True)
    except LinAlgError:
        raise ValueError(f"{name} must be positive definite") from None


def transformed_drift(session: Session, A: np.ndarray, Q: np.ndarray | None,
                      scale: bool, lag_tau: float | None = None) -> Transformed:
    """The general drift for A and the diffusion Q (None: I), scaled into the coupling DAC's
    range (s = 1 without ``scale``). With ``lag_tau`` (expnegm), s is then lowered to the
    largest value for which lag_tau / s is a whole number of ADC sample intervals (one interval
    on a device with an ideal DAC, where any s fits)."""
    factor = None if Q is None else cholesky_factor(Q, "Q")
    drift = A if factor is None else solve_triangular(factor, A @ factor, lower=True)
    coupling = session.converters.coupling
    s = coupling.scale_for(drift) if scale else 1.0
    if lag_tau is not None:
        interval = float(session.device.config["sample_interval_ns"]) / session.device.tau_ns
        if scale and coupling.full_scale is None:
            s = np.inf  # an ideal DAC: the lag can be a single sample interval
        s = lag_tau / (max(1.0, np.ceil(lag_tau / (s * interval) - 1e-9)) * interval)
    return Transformed(drift, factor, float(s))


def program_drift(session: Session, transformed: Transformed, integrator: str | None) -> None:
    """Program s M as a general drift with zero bias."""
    session.program(transformed.scale * transformed.drift, integrator=integrator,
                    drift="general")
    session.set_bias(np.zeros(transformed.drift.shape[0]))
