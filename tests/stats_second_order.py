"""Sampling statistics of a stationary vector AR(1) sequence z_{k+1} = Phi z_k + noise, for the
tolerances of tests/test_second_order.py.

The exact linear-SDE kernel samples such a sequence with Phi = e^{-Mh} and stationary covariance
S (M S + S M^T = G G^T). Unlike tests/stats.py, Phi need not be symmetric (underdamped and RLC
drift matrices are not normal), so nothing here diagonalises: the formulas use matrix functions
of Phi and explicit lag sums. Lag-k autocovariance: Gamma(k) = E[z_{j+k} z_j^T] = Phi^k S.
"""

from __future__ import annotations

import numpy as np

# Lag sums stop once |Gamma(k)| falls below this fraction of |S|.
_LAG_RTOL = 1e-13
_MAX_LAGS = 10_000_000


def covariance_of_mean(phi: np.ndarray, S: np.ndarray, samples: int) -> np.ndarray:
    """Exact Cov of the average of ``samples`` = n consecutive stationary samples (d, d):

        (1/n) [S + (1/n) (T S + S T^T)],  T = sum_{k=1}^{n-1} (n - k) Phi^k
                                            = Phi [n K - K^2 (I - Phi^n)],  K = (I - Phi)^-1

    which tends to (1/n) [K S + S K^T - S] for n >> the correlation length.
    """
    n = int(samples)
    d = phi.shape[0]
    identity = np.eye(d)
    K = np.linalg.inv(identity - phi)
    T = phi @ (n * K - K @ K @ (identity - np.linalg.matrix_power(phi, n)))
    return (S + (T @ S + S @ T.T) / n) / n


def second_moment_variance(phi: np.ndarray, S: np.ndarray, samples: int) -> np.ndarray:
    """Var of each entry of (1/n) sum_j (z_j - mu)(z_j - mu)^T (d, d), large-n limit.

    Isserlis for a Gaussian sequence: n Var_ab = sum_{k in Z} Gamma_aa(k) Gamma_bb(k) +
    Gamma_ab(k) Gamma_ba(k), with Gamma(-k) = Gamma(k)^T, summed over lags until negligible.
    """
    def term(gamma: np.ndarray) -> np.ndarray:
        diagonal = np.diag(gamma)
        return np.outer(diagonal, diagonal) + gamma * gamma.T

    total = -term(S)  # the k = 0 term, counted twice below
    gamma = S.copy()
    floor = _LAG_RTOL * np.abs(S).max()
    for _ in range(_MAX_LAGS):
        total += 2 * term(gamma)
        gamma = phi @ gamma
        if np.abs(gamma).max() < floor:
            return total / samples
    raise ValueError("the lag sum did not converge: is Phi stable?")


def observed(matrix: np.ndarray, n_observed: int) -> np.ndarray:
    """The block of a (d, d) statistic for the recorded coordinates z[:n_observed]."""
    return matrix[:n_observed, :n_observed]
