"""Numba kernel of the exact linear-SDE step z <- phi z + drive + F eta (device/linear_sde.py).

One canonical signature, like device/kernels.py: C-contiguous float64 arrays, Python ints and
bools, one ``numpy.random.Generator``; cached on disk and releasing the GIL. Units are the
circuit's own (tau or seconds; x and p, or volts and amperes). The noise of up to
``_NOISE_BATCH`` samples is formed as one BLAS matrix product; the normals are drawn in sample
order (sample k uses draws k r ... k r + r - 1), so how a run is split into calls does not change
which noise a sample gets.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from spusim.device.kernels import (
    _flush,
    _flush_pairs,
    _lag,
    _pair_buffer,
    _read_value,
    _sample,
    _second_moment_buffer,
    ideal_adc,
    lag_correlator,
)

# Samples whose noise is formed by one matrix product.
_NOISE_BATCH = 64


@njit(cache=True, nogil=True)
def linear_sde_run(phi, drive, noise_factor, z, n_samples, rng, record, second_moments,
                   n_observed, sums, lag, adc):
    """Advance z (d,) in place by ``n_samples`` exact steps z <- phi z + drive + F eta.

    phi (d, d); drive (d,) = psi u; noise_factor F (d, r), eta ~ N(0, I_r) (r = 0: no noise).
    After each step the ADC samples the first ``n_observed`` coordinates (the positions or
    voltages) as :func:`device.kernels.euler_maruyama_run` does: sums = (sum_x (n_observed,),
    sum_xx (n_observed, n_observed) or (0, 0)), lag (the lag correlator) and adc as there,
    adc with filter gain 0 (an anti-alias
    filter is part of z here: device.circuits.with_readout_filter). Returns the number of samples
    taken: fewer than ``n_samples`` if z stopped being finite (the sums are then incomplete and
    the caller discards them).
    """
    d = z.size
    r = noise_factor.shape[1]
    factor_t = noise_factor.T
    moved, reading = np.empty(d), np.empty(n_observed)
    batch = _second_moment_buffer(record and second_moments, n_observed)
    filled = 0
    lagging = record and lag[0].shape[0] > 0
    pairs, paired = _pair_buffer(lagging, n_observed), 0
    done = 0
    while done < n_samples:
        block = min(_NOISE_BATCH, n_samples - done)
        if r > 0:
            eta = np.empty((block, r))
            for k in range(block):
                for j in range(r):
                    eta[k, j] = rng.standard_normal()
            noise = np.dot(eta, factor_t)
        else:
            noise = np.zeros((block, d))
        for k in range(block):
            np.dot(phi, z, moved)
            for i in range(d):
                z[i] = moved[i] + drive[i] + noise[k, i]
            for i in range(n_observed, d):  # _sample checks the observed part
                if not np.isfinite(z[i]):
                    return done + k
            filled = _sample(z[:n_observed], record, sums, batch, filled, adc, reading, rng)
            if filled < 0:
                return done + k
            if lagging:
                paired = _lag(_read_value(z[:n_observed], adc, reading), lag, pairs, paired)
        done += block
    _flush(batch, filled, sums[1])
    _flush_pairs(pairs, paired, lag[1])
    return n_samples


def warm_up() -> None:
    """Compile (or load from the cache) the kernel with its one canonical signature."""
    d = 2
    phi, factor = np.eye(d) * 0.5, np.ones((d, 1))
    z, drive = np.zeros(d), np.zeros(d)
    sums = (np.zeros(1), np.zeros((1, 1)))
    linear_sde_run(phi, drive, factor, z, 1, np.random.default_rng(0), True, True, 1, sums,
                   lag_correlator(1, 1), ideal_adc(1))


KERNELS = (linear_sde_run,)
