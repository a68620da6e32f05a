"""Numba kernels of the emulated array: the two integrators and the programming check.

Every kernel takes canonical inputs only (C-contiguous, aligned, writeable float64 arrays, Python
ints, floats and bools, one ``numpy.random.Generator``), so each compiles to exactly one
signature, cached on disk (``cache=True``) and warmed up by :func:`warm_up` before the daemon
reports ready. They release the GIL so the daemon keeps answering while one runs.

State units are those of the programmed problem; time is in units of tau = RC. Matrix-vector
products go to BLAS (numba's ``np.dot``, through scipy).
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

_TILE = 64


@njit(cache=True, nogil=True)
def _sample(x, record, second_moments, sum_x, sum_xx):
    """The ADC takes one sample of x: False if it is not finite (the run diverged), else add it
    to the running sums when recording (upper triangle only for the second moments)."""
    n = x.size
    for i in range(n):
        if not np.isfinite(x[i]):
            return False
    if record:
        for i in range(n):
            sum_x[i] += x[i]
        if second_moments:
            for i in range(n):
                xi = x[i]
                for j in range(i, n):
                    sum_xx[i, j] += xi * x[j]
    return True


@njit(cache=True, nogil=True)
def euler_maruyama_run(A, b, x, h, noise_scale, n_samples, steps_per_sample, rng,
                       record, second_moments, sum_x, sum_xx):
    """Euler-Maruyama for dx = -(A x - b) dt + sqrt(2 kappa0) dW, t in units of tau.

    A: (N, N); b, x: (N,), x updated in place. h: step in tau; noise_scale: sqrt(2 kappa0 h).
    Runs ``n_samples`` ADC samples of ``steps_per_sample`` steps each; when ``record`` adds each
    sample to ``sum_x`` (N,) and, with ``second_moments``, to ``sum_xx`` (N, N, upper triangle).
    Returns the number of samples taken: fewer than ``n_samples`` if the state stopped being
    finite (the run diverged at the next one).
    """
    n = x.size
    ax = np.empty(n)
    for sample in range(n_samples):
        for _ in range(steps_per_sample):
            np.dot(A, x, ax)
            for i in range(n):
                x[i] += h * (b[i] - ax[i]) + noise_scale * rng.standard_normal()
        if not _sample(x, record, second_moments, sum_x, sum_xx):
            return sample
    return n_samples


@njit(cache=True, nogil=True)
def exact_ou_run(phi, drive, noise_factor, x, n_samples, rng,
                 record, second_moments, sum_x, sum_xx):
    """Exact OU transition over one sample interval: x <- phi x + drive + noise_factor z.

    phi = exp(-A d), drive = (int_0^d exp(-A s) ds) b and noise_factor F with
    F F^T = kappa0 A^-1 (I - exp(-2 A d)) are precomputed for the interval d (N, N), (N,), (N, N).
    Sampling and return value as in :func:`euler_maruyama_run`.
    """
    n = x.size
    z = np.empty(n)
    phi_x = np.empty(n)
    noise = np.empty(n)
    for sample in range(n_samples):
        for i in range(n):
            z[i] = rng.standard_normal()
        np.dot(phi, x, phi_x)
        np.dot(noise_factor, z, noise)
        for i in range(n):
            x[i] = phi_x[i] + drive[i] + noise[i]
        if not _sample(x, record, second_moments, sum_x, sum_xx):
            return sample
    return n_samples


@njit(cache=True, nogil=True)
def matrix_check(A):
    """One cache-friendly pass over a square A: (all finite, max |A_ij|, max |A_ij - A_ji|)."""
    n = A.shape[0]
    finite = True
    largest = 0.0
    asymmetry = 0.0
    for i0 in range(0, n, _TILE):
        for j0 in range(i0, n, _TILE):
            for i in range(i0, min(i0 + _TILE, n)):
                for j in range(max(j0, i), min(j0 + _TILE, n)):
                    upper, lower = A[i, j], A[j, i]
                    if not (np.isfinite(upper) and np.isfinite(lower)):
                        finite = False
                    largest = max(largest, abs(upper), abs(lower))
                    asymmetry = max(asymmetry, abs(upper - lower))
    return finite, largest, asymmetry


def warm_up() -> None:
    """Compile (or load from the cache) every kernel with its one canonical signature."""
    n = 2
    A = np.eye(n)
    vec, x = np.zeros(n), np.zeros(n)
    sum_x, sum_xx = np.zeros(n), np.zeros((n, n))
    rng = np.random.default_rng(0)
    matrix_check(A)
    euler_maruyama_run(A, vec, x, 0.1, 0.1, 1, 1, rng, True, True, sum_x, sum_xx)
    exact_ou_run(A, vec, A, x, 1, rng, True, True, sum_x, sum_xx)


def seconds_per_cell_step(n: int = 128, samples: int = 200) -> float:
    """Wall time of one exact-integrator step per matrix element (s), measured here and now.

    Only for sizing hosts' timeouts; device time never comes from a wall clock.
    """
    A = np.eye(n) * 0.5
    vec, x = np.zeros(n), np.zeros(n)
    sums, unused = np.zeros(n), np.zeros((0, 0))
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    exact_ou_run(A, vec, A, x, samples, rng, True, False, sums, unused)
    return (time.perf_counter() - started) / (samples * n * n)


KERNELS = (euler_maruyama_run, exact_ou_run, matrix_check)
