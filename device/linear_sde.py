"""Exact transition of a general linear SDE over one sample interval.

    dz = (u - M z) dt + G dW,        z in R^d,  M (d, d),  G (d, k),  u (d,) constant

M may be non-normal (underdamped and RLC dynamics are) and G rank-deficient (noise enters only
some coordinates). Time is in whatever unit M and h share (tau for the Langevin model, seconds for
the RLC cells). Over an interval h the state maps exactly to

    z' = Phi z + Psi u + xi,   Phi = e^{-Mh},   Psi = int_0^h e^{-Ms} ds,
    xi ~ N(0, Q),              Q = int_0^h e^{-Ms} G G^T e^{-M^T s} ds

computed by Van Loan's block exponentials (one expm for Phi and Psi, one for Q). Two guards keep
them accurate for stiff systems and mixed units (amperes next to volts): the state is first
rescaled by the exact power-of-two diagonal balancing of M, and the interval is halved until
||M h||_1 <= 1, the sub-step results being recombined by exact doubling
(Q(2h) = Q(h) + Phi(h) Q(h) Phi(h)^T, Psi(2h) = Psi(h) + Phi(h) Psi(h)). Nothing here solves
M z = u for the device: the stationary mean and covariance are provided for tests and checks only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import expm, matrix_balance, solve_continuous_lyapunov

# A factor's eigenvalue below this fraction of the largest is rounding noise: dropped.
_RANK_RTOL = 64 * np.finfo(float).eps
# A covariance with an eigenvalue below -this fraction of the largest is not one: refused.
_NEGATIVE_RTOL = 1e-8


@dataclass(frozen=True)
class LinearTransition:
    """The exact step z' = phi z + psi u + noise_factor eta, eta ~ N(0, I_r), over ``interval``.

    phi (d, d) = e^{-Mh}, dimensionless; psi (d, d) = int_0^h e^{-Ms} ds, in time units (it
    multiplies the drive u, whose units are state per time); q (d, d), the noise covariance in
    state units squared; noise_factor (d, r), r <= d its numerical rank, with
    noise_factor noise_factor^T = q to rounding. All C-contiguous float64.
    """

    interval: float
    phi: np.ndarray
    psi: np.ndarray
    q: np.ndarray
    noise_factor: np.ndarray

    def drive(self, u: np.ndarray) -> np.ndarray:
        """The per-step drive psi u (d,), C-contiguous, for a constant input u (d,)."""
        return np.ascontiguousarray(self.psi @ np.asarray(u, dtype=float))


def _format_eigenvalue(lam: complex) -> str:
    return f"{lam.real:.6g}{lam.imag:+.6g}j" if lam.imag else f"{lam.real:.6g}"


def check_stable(M: np.ndarray) -> np.ndarray:
    """The eigenvalues of M (d,), complex; ValueError naming one whose real part is <= 0.

    "<= 0" is read with a rounding floor d eps max|lambda|: an eigenvalue that small is zero.
    """
    M = checked_square(M, "M")
    eigenvalues = np.linalg.eigvals(M)
    weakest = eigenvalues[np.argmin(eigenvalues.real)]
    floor = M.shape[0] * np.finfo(float).eps * float(np.max(np.abs(eigenvalues)))
    if weakest.real <= floor:
        raise ValueError(
            f"M has the eigenvalue {_format_eigenvalue(complex(weakest))}, whose real part is "
            f"not positive: dz = (u - M z) dt + G dW does not settle (it needs every eigenvalue "
            f"of M in the open right half-plane)")
    return eigenvalues


def transition(M: np.ndarray, G: np.ndarray, interval: float) -> LinearTransition:
    """The exact step of dz = (u - M z) dt + G dW over ``interval`` (M's time unit).

    M (d, d) must be stable (:func:`check_stable`); G (d, k), any rank, k >= 0.
    """
    M, G = checked_square(M, "M"), _diffusion(G, M.shape[0])
    h = float(interval)
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"the interval must be positive and finite, got {interval!r}")
    check_stable(M)
    d = M.shape[0]
    _, (scale, _) = matrix_balance(M, permute=False, separate=True)
    M_bal = M * (scale[None, :] / scale[:, None])  # T^-1 M T, T = diag(scale): exact
    G_bal = G / scale[:, None]
    doublings = max(0, int(np.ceil(np.log2(max(np.linalg.norm(M_bal, 1) * h, 1e-300)))))
    h_sub = h / 2.0**doublings

    block = np.zeros((2 * d, 2 * d))
    block[:d, :d], block[:d, d:] = -M_bal * h_sub, np.eye(d) * h_sub
    exp_block = expm(block)
    phi, psi = exp_block[:d, :d], exp_block[:d, d:]
    q = _van_loan_noise(M_bal, G_bal @ G_bal.T, h_sub, phi)
    for _ in range(doublings):
        q = q + phi @ q @ phi.T
        psi = psi + phi @ psi
        phi = phi @ phi
    q = (q + q.T) / 2
    q_state = q * np.outer(scale, scale)
    return LinearTransition(
        interval=h,
        phi=np.ascontiguousarray(phi * (scale[:, None] / scale[None, :])),
        psi=np.ascontiguousarray(psi * (scale[:, None] / scale[None, :])),
        q=np.ascontiguousarray(q_state),
        noise_factor=noise_factor(q_state),
    )


def _van_loan_noise(M: np.ndarray, W: np.ndarray, h: float, phi: np.ndarray) -> np.ndarray:
    """int_0^h e^{-Ms} W e^{-M^T s} ds = (top-right block of expm([[-M, W], [0, M^T]] h)) phi^T.

    W is scaled to M's magnitude first (the block is linear in it), so expm sees one scale.
    """
    d = M.shape[0]
    magnitude = float(np.max(np.abs(W)))
    if magnitude == 0.0:
        return np.zeros((d, d))
    w_scale = magnitude / max(float(np.max(np.abs(M))), 1e-300)
    block = np.zeros((2 * d, 2 * d))
    block[:d, :d], block[:d, d:], block[d:, d:] = -M * h, W / w_scale * h, M.T * h
    return w_scale * (expm(block)[:d, d:] @ phi.T)


def noise_factor(q: np.ndarray) -> np.ndarray:
    """F (d, r) with F F^T = q for a symmetric positive semi-definite, possibly singular q (d, d).

    Symmetric eigendecomposition of q with its diagonal scaled to one (so mixed units do not
    decide the rank); eigenvalues below 64 eps of the largest, including tiny negative ones, are
    dropped, r is the number kept. A clearly indefinite q raises ValueError.
    """
    q = checked_square(q, "q")
    d = q.shape[0]
    diagonal = np.diag(q).copy()
    if np.any(diagonal < 0):
        raise ValueError(f"q has a negative variance q[{int(np.argmin(diagonal))}, "
                         f"{int(np.argmin(diagonal))}] = {diagonal.min():.3g}")
    sd = np.where(diagonal > 0, np.sqrt(diagonal), 1.0)
    w, V = np.linalg.eigh((q + q.T) / 2 / np.outer(sd, sd))
    top = max(float(w[-1]), 0.0)
    if w[0] < -_NEGATIVE_RTOL * top:
        raise ValueError(f"q is not positive semi-definite (eigenvalue {w[0]:.3g} of its "
                         f"correlation form, largest {top:.3g})")
    keep = w > _RANK_RTOL * top
    factor = V[:, keep] * np.sqrt(w[keep]) * sd[:, None]
    return np.ascontiguousarray(factor.reshape(d, int(keep.sum())))


def stationary_covariance(M: np.ndarray, G: np.ndarray) -> np.ndarray:
    """S (d, d) solving M S + S M^T = G G^T, the stationary covariance. For tests and checks."""
    M, G = checked_square(M, "M"), _diffusion(G, M.shape[0])
    check_stable(M)
    _, (scale, _) = matrix_balance(M, permute=False, separate=True)
    M_bal = M * (scale[None, :] / scale[:, None])
    G_bal = G / scale[:, None]
    S = solve_continuous_lyapunov(M_bal, G_bal @ G_bal.T)
    return (S + S.T) / 2 * np.outer(scale, scale)


def stationary_mean(M: np.ndarray, u: np.ndarray) -> np.ndarray:
    """M^-1 u (d,): the stationary mean. For tests and checks only, never for device output."""
    M = checked_square(M, "M")
    check_stable(M)
    return np.linalg.solve(M, np.asarray(u, dtype=float))


def checked_square(matrix: np.ndarray, name: str) -> np.ndarray:
    """``matrix`` as a finite, non-empty, square float array, or ValueError naming it."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name} has non-finite entries")
    return matrix


def _diffusion(G: np.ndarray, d: int) -> np.ndarray:
    G = np.asarray(G, dtype=float)
    if G.ndim != 2 or G.shape[0] != d:
        raise ValueError(f"G must have shape ({d}, k), got {G.shape}")
    if not np.all(np.isfinite(G)):
        raise ValueError("G has non-finite entries")
    return G
