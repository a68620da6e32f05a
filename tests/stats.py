"""Closed-form sampling statistics of a linear Gaussian sampler, for test tolerances.

A sampler with symmetric drift matrix A = V diag(lam) V^T, sampled every interval, behaves in
each eigenmode p as a stationary AR(1) sequence with variance c_p and one-sample correlation r_p:

- exact OU transition over d tau:  c_p = kappa0 / lam_p,                     r_p = exp(-lam_p d)
- Euler-Maruyama, step h, k steps: c_p = kappa0 / (lam_p (1 - h lam_p / 2)), r_p = (1 - h lam_p)^k

From these follow the covariance of the average of M samples and the variance of the averaged
second moment, which set every statistical tolerance in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Modes:
    """Eigenvectors V (N, N), stationary variances c (N,), per-sample correlations r (N,)."""

    V: np.ndarray
    c: np.ndarray
    r: np.ndarray

    @property
    def covariance(self) -> np.ndarray:
        """Stationary covariance V diag(c) V^T."""
        return (self.V * self.c) @ self.V.T


def exact_modes(A: np.ndarray, kappa0: float, interval_tau: float) -> Modes:
    lam, V = np.linalg.eigh(A)
    return Modes(V, kappa0 / lam, np.exp(-lam * interval_tau))


def euler_modes(A: np.ndarray, kappa0: float, step_tau: float, steps_per_sample: int) -> Modes:
    lam, V = np.linalg.eigh(A)
    return Modes(V, kappa0 / (lam * (1 - step_tau * lam / 2)),
                 (1 - step_tau * lam) ** steps_per_sample)


def covariance_of_mean(modes: Modes, samples: int) -> np.ndarray:
    """Cov of the average of ``samples`` consecutive stationary samples (exact for AR(1))."""
    r, M = modes.r, samples
    factor = (1 + r) / (1 - r) - 2 * r * (1 - r**M) / (M * (1 - r) ** 2)
    return (modes.V * (modes.c * factor / M)) @ modes.V.T


def second_moment_variance(modes: Modes, samples: int) -> np.ndarray:
    """Var of each entry of (1/M) sum (x - mu)(x - mu)^T, large-M limit (Isserlis + AR(1))."""
    V, c, r = modes.V, modes.c, modes.r
    rr = np.outer(r, r)
    g = np.outer(c, c) * (1 + rr) / (1 - rr)  # g[p, q]
    V2 = V**2
    term_squares = V2 @ g @ V2.T  # sum_pq V_ip^2 g_pq V_jq^2
    term_cross = np.einsum("ip,jp,pq,iq,jq->ij", V, V, g, V, V)
    return (term_squares + term_cross) / samples


def mahalanobis_squared(error: np.ndarray, covariance: np.ndarray) -> float:
    return float(error @ np.linalg.solve(covariance, error))


def chi2_bound(dof: int, p_false_alarm: float = 1e-4) -> float:
    """The chi-square quantile a correct estimate exceeds with probability ``p_false_alarm``."""
    return float(stats.chi2.ppf(1 - p_false_alarm, dof))


def spd_matrix(eigenvalues: np.ndarray, seed: int) -> np.ndarray:
    """A random symmetric matrix with the given eigenvalues (random orthogonal eigenvectors)."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((eigenvalues.size, eigenvalues.size)))
    A = (Q * eigenvalues) @ Q.T
    return (A + A.T) / 2
