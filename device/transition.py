"""Integrator set-up for a programmed coupling matrix: positivity and stability checks, and the
exact Ornstein-Uhlenbeck transition over one sample interval.

For dx = -(A x - b) dt + sqrt(2 kappa0) dW (t in tau) and symmetric A = V diag(lam) V^T, one
interval d maps x to

    x' = exp(-A d) x + (int_0^d exp(-A s) ds) b + xi,   xi ~ N(0, kappa0 A^-1 (I - exp(-2 A d)))

In the coordinates y = V^T x every mode evolves on its own, so the kernel applies this map at
O(N) per step; the mean A^-1 b emerges from iterating it, nothing here solves A x = b. The same
eigenvalues decide whether the dynamics are stable at all. A factored coupling J^T H J + lam I
gets the same exact step without an N x N matrix (:class:`FactoredTransition`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular

from spusim.protocol import ErrorCode, ProtocolError


@dataclass(frozen=True)
class ExactTransition:
    """One exact step over an interval d (tau units), per eigenmode of A = V diag(lam) V^T.

    eigenvectors: V (N, N), C-contiguous. decay = exp(-lam d); drive_gain = (1 - exp(-lam d)) /
    lam (multiplies V^T b); noise_sd = sqrt(kappa0 (1 - exp(-2 lam d)) / lam); all (N,).
    filtered: with an anti-alias filter of rate a, each mode's filter output g follows its
    cell mode y exactly, g' = cross y + filter_decay g + filter_drive_gain (V^T b) +
    noise_cross z1 + noise_filter z2 (z1 the normal of y's step): the (5, N) rows cross,
    filter_decay, filter_drive_gain, noise_cross, noise_filter (:func:`filtered_modes`);
    (5, 0) without a filter. eigenvalues lam (N,), kappa0 and filter_rate a (0: none): what
    the step was built from (:meth:`over` builds it for another interval).
    """

    eigenvectors: np.ndarray
    decay: np.ndarray
    drive_gain: np.ndarray
    noise_sd: np.ndarray
    filtered: np.ndarray
    eigenvalues: np.ndarray
    kappa0: float
    filter_rate: float

    @property
    def has_filter(self) -> bool:
        return self.filtered.shape[1] > 0

    def over(self, interval_tau: float) -> ExactTransition:
        """The same dynamics' exact step over ``interval_tau`` instead (O(N); V shared)."""
        return exact_transition(self.eigenvalues, self.eigenvectors, self.kappa0, interval_tau,
                                self.filter_rate)


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


def check_euler_step_general(eigenvalues: np.ndarray, step_tau: float, em_step_ns: int) -> None:
    """Raise UNSTABLE_STEP unless Euler-Maruyama with ``step_tau`` is stable for a general drift
    with these (complex) eigenvalues: every |1 - step lambda| < 1 (the amplification factor of
    the mode; for real lambda this is step lambda < 2, :func:`check_euler_step`)."""
    factor = np.abs(1.0 - step_tau * np.asarray(eigenvalues))
    worst = int(np.argmax(factor))
    if factor[worst] >= 1.0:
        lam = complex(eigenvalues[worst])
        raise ProtocolError(
            ErrorCode.UNSTABLE_STEP,
            f"Euler-Maruyama with a step of {step_tau:g} tau is unstable for this drift: the "
            f"eigenvalue {lam.real:.3g}{lam.imag:+.3g}j gives |1 - step lambda| = "
            f"{factor[worst]:.3g} >= 1. Use the exact integrator or a smaller em_step_ns. "
            "Nothing was run.", step_tau=step_tau, amplification=float(factor[worst]))


def exact_transition(eigenvalues: np.ndarray, eigenvectors: np.ndarray, kappa0: float,
                     interval_tau: float, filter_rate: float = 0.0) -> ExactTransition:
    """The exact step for A = V diag(eigenvalues) V^T over ``interval_tau``; with
    ``filter_rate`` a > 0 (tau units) also that of the anti-alias filter's output."""
    lam, d = eigenvalues, interval_tau
    decay, drive_gain, noise_sd = ou_step(lam, kappa0, d)
    return ExactTransition(
        eigenvectors=np.ascontiguousarray(eigenvectors),
        decay=decay,
        drive_gain=drive_gain,
        noise_sd=noise_sd,
        filtered=(filtered_modes(lam, filter_rate, kappa0, d, noise_sd) if filter_rate
                  else np.zeros((5, 0))),
        eigenvalues=lam, kappa0=float(kappa0), filter_rate=float(filter_rate),
    )


def ou_step(rate: np.ndarray, kappa0: float,
            d: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One mode of rate v > 0 over d (tau units), all shaped like ``rate``: its decay
    exp(-v d), drive gain (1 - exp(-v d)) / v and noise sd sqrt(kappa0 (1 - exp(-2 v d)) / v)."""
    return (np.exp(-rate * d), -np.expm1(-rate * d) / rate,
            np.sqrt(kappa0 * -np.expm1(-2.0 * rate * d) / rate))


def filtered_modes(lam: np.ndarray, a: float, kappa0: float, d: float,
                   noise_sd: np.ndarray) -> np.ndarray:
    """Exact step of each cell mode y (rate lam, (N,)) read through a first-order filter of
    rate a: dy = (c - lam y) dt + sqrt(2 kappa0) dW, dg = a (y - g) dt, over d (tau units).

    e^{-Md} = [[p, 0], [q, r]] with p = e^{-lam d}, r = e^{-a d}, q = a E, E = int_0^d
    e^{-a(d-s)} e^{-lam s} ds = e^{-min(a, lam) d} d (1 - e^{-|a - lam| d}) / (|a - lam| d) (no
    cancellation, fine at a = lam). Both settle to c / lam (unit DC gain), so g's drive is
    (1 - q - r) c / lam. The noise covariance is Q = S - e^{-Md} S e^{-Md}^T with the stationary
    S = kappa0 / lam [[1, rho], [rho, rho]], rho = a / (a + lam), and its Cholesky factor is
    [[noise_sd, 0], [noise_cross, noise_filter]]. Returns the (5, N) rows of
    :class:`ExactTransition`'s ``filtered``.
    """
    gap = np.abs(a - lam) * d
    relative = np.where(gap > 0, -np.expm1(-gap) / np.where(gap > 0, gap, 1.0), 1.0)
    E = np.exp(-np.minimum(a, lam) * d) * d * relative
    p, q, r = np.exp(-lam * d), a * E, np.exp(-a * d)
    s11 = kappa0 / lam
    s12 = s11 * a / (a + lam)
    q12 = s12 - p * (q * s11 + r * s12)
    q22 = s12 - (q * q * s11 + 2 * q * r * s12 + r * r * s12)
    cross = np.divide(q12, noise_sd, out=np.zeros_like(lam), where=noise_sd > 0)
    own = np.sqrt(np.clip(q22 - cross**2, 0.0, None))
    return np.ascontiguousarray(np.vstack([q, np.full_like(lam, r), (1 - q - r) / lam, cross,
                                           own]))


@dataclass(frozen=True)
class FactoredTransition:
    """One exact step over an interval d (tau units) for A = J^T H J + lam I, kept factored.

    With J^T = Q R (thin QR, Q (N, r), r = min(m, N)) and R H R^T = W diag(mu) W^T, A has the
    eigenvalues nu = mu + lam on the columns of U = Q W (N, r) and lam on their orthogonal
    complement. One step of x is then, with xi ~ N(0, I_N),

        x' = e^{-lam d} x + s_perp xi + drive + U (alpha * U^T x + beta * U^T xi)

    alpha = exp(-nu d) - exp(-lam d) and beta = s(nu) - s(lam), s(v) = sqrt(kappa0 (1 -
    exp(-2 v d)) / v), both (r,): every mode gets its exact decay and noise, O(rN) a step.
    gain (r,) and gain_perp give the drive for a bias b: gain_perp b + U ((gain - gain_perp) *
    U^T b), gain(v) = (1 - exp(-v d)) / v. nu (r,), nu_perp (lam; any rate when U spans
    everything) and kappa0: what the step was built from (:meth:`over`).
    """

    basis: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    gain: np.ndarray
    decay_perp: float
    noise_perp: float
    gain_perp: float
    nu: np.ndarray
    nu_perp: float
    kappa0: float

    def over(self, interval_tau: float) -> FactoredTransition:
        """The same dynamics' exact step over ``interval_tau`` instead (O(r); U shared)."""
        return _factored_step(self.basis, self.nu, self.nu_perp, self.kappa0, interval_tau)

    def drive(self, b: np.ndarray) -> np.ndarray:
        """The per-step drive (N,) for the bias b (N,)."""
        U = self.basis
        return self.gain_perp * b + U @ ((self.gain - self.gain_perp) * (U.T @ b))


def factored_transition(J: np.ndarray, H: np.ndarray, damping: float, kappa0: float,
                        interval_tau: float) -> FactoredTransition:
    """The exact step for J^T H J + damping I (J (m, N), H (m, m) symmetric), checked to be
    positive definite; O(N m^2) once, never forming an N x N matrix."""
    mu, basis = factored_eigen(J, H)
    nu = mu + damping
    complement = basis.shape[1] < basis.shape[0]  # else U spans everything: the lam terms cancel
    check_positive_definite(np.sort(np.append(nu, damping)) if complement else nu)
    return _factored_step(basis, nu, float(damping) if complement else 1.0, kappa0, interval_tau)


def factored_eigen(J: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eigenpairs of J^T H J on the range of J^T (J (m, N), H (m, m) symmetric): mu (r,)
    ascending and U (N, r) orthonormal, C-contiguous, r = min(m, N); J^T H J = U diag(mu) U^T.

    With J^T = Q R (Q (N, r) orthonormal) and R H R^T = W diag(mu) W^T, U = Q W. For m < N the
    QR is Cholesky QR run twice (CholeskyQR2: Fukaya, Nakatsukasa, Yanagisawa, Yamamoto 2014),
    which is orthonormal to rounding whenever J's condition number is below ~1e8 and costs
    matrix products only (the whole set-up 1.6-2x faster than with Householder at m = 640,
    N = 1e4, one BLAS thread); a J it cannot orthonormalise (rank deficient, duplicated rows,
    or that ill-conditioned: a Cholesky factorisation fails or the first pass is far from
    orthonormal) takes Householder QR.
    """
    m, n = J.shape
    if m < n:
        try:
            return _eigen_by_cholesky_qr2(J, H)
        except np.linalg.LinAlgError:
            pass
    Q, R = np.linalg.qr(J.T)
    mu, W = np.linalg.eigh(R @ H @ R.T)
    return mu, np.ascontiguousarray(Q @ W)


def _eigen_by_cholesky_qr2(J: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`factored_eigen` by CholeskyQR2: J^T = X^T L1^T with L1 L1^T = J J^T, then the
    same on X^T (L2 L2^T = X X^T), so Q = X^T L2^-T and R = L2^T L1^T; U = X^T (L2^-T W) in
    one product. Raises LinAlgError where Householder QR must do it instead."""
    L1 = np.linalg.cholesky(J @ J.T)
    X = solve_triangular(L1, J, lower=True, check_finite=False)  # (m, N): the rows of Q1^T
    second = X @ X.T
    if not np.abs(second - np.eye(J.shape[0])).max() <= 0.1:  # beyond two passes (or NaN)
        raise np.linalg.LinAlgError("J too ill-conditioned for Cholesky QR")
    L2 = np.linalg.cholesky(second)
    R = L2.T @ L1.T
    mu, W = np.linalg.eigh(R @ H @ R.T)
    return mu, X.T @ solve_triangular(L2.T, W, lower=False, check_finite=False)


def _factored_step(basis: np.ndarray, nu: np.ndarray, nu_perp: float, kappa0: float,
                   d: float) -> FactoredTransition:
    """The exact step over d (tau units) with the modes nu on U = ``basis``, nu_perp off it."""
    decay, gain, noise = ou_step(nu, kappa0, d)
    decay_perp, gain_perp, noise_perp = (float(v[0]) for v in ou_step(np.array([nu_perp]),
                                                                        kappa0, d))
    return FactoredTransition(
        basis=basis, alpha=decay - decay_perp, beta=noise - noise_perp, gain=gain,
        decay_perp=decay_perp, noise_perp=noise_perp, gain_perp=gain_perp, nu=nu,
        nu_perp=nu_perp, kappa0=float(kappa0))
