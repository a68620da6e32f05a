"""The readout noise of one TNGD solve in closed form, against the natural-gradient step it
estimates (arXiv 2405.13817, Eqs. 15-19).

The device relaxes under dx = -(A x - g) dt + sqrt(2 kappa0) dW with A = C + lambda I and
C = J^T H J (t in units of tau). x(t) is Gaussian, and its noise xi = x(t) - <x(t)> has, in each
eigendirection of A with eigenvalue a (the OU law),

    Var xi_a(t) = kappa0 / a (1 - e^{-2 a t})      started from a fixed point (reset to g)
    Var xi_a    = kappa0 / a                        at equilibrium (a state kept long enough)

so E||xi||^2 = kappa0 tr(A^-1 (I - e^{-2At})) for Algorithm 1's reset. C has rank r <= m, so
A has r eigenvalues sigma_i^2 + lambda (the range of C: signal and noise) and N - r equal to
lambda (the null space: noise only, since the gradient g = J^T (dL/dz) / b lies in the range):
the null space alone contributes (N - r) kappa0 / lambda (1 - e^{-2 lambda t}), which grows to
(N - r) kappa0 / lambda when the state is kept. Averaging n ADC samples x(i dt), i = 1..n, of
one run divides each direction's variance by up to n, but only where a n dt >> 1:

    Var mean_a = (1/n^2) sum_i v_a(t_i) (1 + 2 rho (1 - rho^(n-i)) / (1 - rho)),  rho = e^{-a dt}

The natural-gradient step is A^-1 g; the regime where TNGD matches exact NGD is where the noise
E||xi||^2 is small against ||A^-1 g||^2. All norms squared, in the parameters' units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATES = ("reset", "kept")


@dataclass(frozen=True)
class Spectrum:
    """A = J^T H J + lambda I in the eigenbasis of its range: ``eigenvalues`` (r,) of A there
    (sigma_i^2 + lambda), ``basis`` (N, r) orthonormal, ``damping`` lambda (the N - r other
    eigenvalues), ``n`` = N."""

    eigenvalues: np.ndarray
    basis: np.ndarray
    damping: float
    n: int

    @property
    def rank(self) -> int:
        return len(self.eigenvalues)

    def solve(self, g: np.ndarray) -> np.ndarray:
        """A^-1 g (N,)."""
        c = self.basis.T @ g
        return self.basis @ (c / self.eigenvalues) + (g - self.basis @ c) / self.damping


def spectrum(J: np.ndarray, H: np.ndarray, damping: float, rtol: float = 1e-10) -> Spectrum:
    """The spectrum of J^T H J + damping I from J (m, N) and H (m, m) symmetric positive
    semi-definite, by a thin SVD of J^T H^(1/2) (O(N m^2)); eigenvalues of J^T H J below
    ``rtol`` of the largest count as null space (a softmax H_L is singular: its square root
    leaves singular values of order 1e-9 of the largest where C has none)."""
    if damping <= 0:
        raise ValueError(f"damping must be > 0, got {damping}")
    J, H = np.asarray(J, dtype=np.float64), np.asarray(H, dtype=np.float64)
    w, V = np.linalg.eigh((H + H.T) / 2)
    root = (V * np.sqrt(np.clip(w, 0.0, None))) @ V.T
    U, s, _ = np.linalg.svd(J.T @ root, full_matrices=False)
    keep = s**2 > rtol * s.max() ** 2 if s.size and s.max() > 0 else np.zeros(s.shape, bool)
    return Spectrum(s[keep] ** 2 + damping, U[:, keep], float(damping), J.shape[1])


@dataclass(frozen=True)
class ReadoutNoise:
    """One solve's noise against its signal (squared norms): ``step`` ||A^-1 g||^2 (exact NGD's
    direction), ``range_noise`` and ``null_noise`` the expected E||xi||^2 in the range of C and
    in its null space, ``rank`` r of C, ``n`` = N."""

    step: float
    range_noise: float
    null_noise: float
    rank: int
    n: int

    @property
    def noise(self) -> float:
        """E||xi||^2, both parts."""
        return self.range_noise + self.null_noise

    @property
    def ratio(self) -> float:
        """E||xi||^2 / ||A^-1 g||^2: noise power over signal power (proportional to kappa0)."""
        return self.noise / self.step


def sample_variance(a: np.ndarray, kappa0: float, t: float, state: str = "reset",
                    samples: int = 1) -> np.ndarray:
    """Variance of the readout noise along eigenvalues ``a`` of A after a run of ``t`` (tau):
    the last sample (``samples`` = 1) or the mean of ``samples`` equally spaced samples
    t/samples, 2 t/samples, ..., t; the run starts from a fixed point (``state`` "reset") or
    from equilibrium ("kept": the stationary limit of a state kept over many steps)."""
    if state not in STATES:
        raise ValueError(f"state must be one of {list(STATES)}, got {state!r}")
    a = np.asarray(a, dtype=np.float64)[:, None]
    times = t * np.arange(1, samples + 1) / samples
    v = kappa0 / a * (-np.expm1(-2 * a * times) if state == "reset" else np.ones_like(times))
    if samples == 1:
        return v[:, -1]
    step = a * t / samples  # -log rho
    after = samples - np.arange(1, samples + 1)  # samples after the i-th
    weight = 1 + 2 * np.exp(-step) * -np.expm1(-after * step) / -np.expm1(-step)
    return (v * weight).sum(axis=1) / samples**2


def readout_noise(spec: Spectrum, g: np.ndarray, kappa0: float, t: float,
                  state: str = "reset", samples: int = 1) -> ReadoutNoise:
    """The closed form of the module doc for gradient ``g`` (N,) on the factors of ``spec``."""
    g = np.asarray(g, dtype=np.float64)
    step = spec.solve(g)
    range_var = sample_variance(spec.eigenvalues, kappa0, t, state, samples)
    null_var = sample_variance(np.array([spec.damping]), kappa0, t, state, samples)[0]
    return ReadoutNoise(float(step @ step), float(range_var.sum()),
                        float((spec.n - spec.rank) * null_var), spec.rank, spec.n)
