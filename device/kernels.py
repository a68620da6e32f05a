"""Numba kernels of the emulated array: the two integrators, the readout path (anti-alias
filter, offsets, noise, ADC) and the programming check.

Every kernel takes canonical inputs only (C-contiguous, aligned, writeable float64 arrays, Python
ints, floats and bools, one ``numpy.random.Generator``), so each compiles to exactly one
signature, cached on disk (``cache=True``) and warmed up by :func:`warm_up` before the daemon
reports ready. They release the GIL so the daemon keeps answering while one runs.

State units are those of the programmed problem; time is in units of tau = RC. Matrix products
go to BLAS (numba's ``np.dot``, through scipy).
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

_TILE = 32  # doubles per side of a tile of asymmetry()


# Second moments are accumulated SECOND_MOMENT_BATCH samples at a time, as one BLAS product.
SECOND_MOMENT_BATCH = 64
# Layout of the readout parameter vector (the ``adc`` argument's second array).
ADC_ACTIVE, ADC_NOISE_SD, ADC_STEP, ADC_MAX_CODE, FILTER_GAIN = 0, 1, 2, 3, 4
ADC_PARAMETERS = 5


@njit(cache=True, nogil=True)
def _flush(batch, filled, sum_xx):
    """Add the outer products of the first ``filled`` buffered samples to ``sum_xx``."""
    if filled > 0:
        rows = batch[:filled]
        sum_xx += np.dot(rows.T, rows)


@njit(cache=True, nogil=True)
def _convert(x, adc, out, rng):
    """The ADC's reading of the node values x into ``out``: readout offset, readout noise, then
    the nearest code k * step, clipped to the codes -max_code - 1 ... max_code (as
    :class:`device.converters.Quantizer`); a step of 0 is an ideal converter.

    adc = (offsets (N,), params (5,) [active, noise_sd, step, max_code, filter_gain], clipped (1,)
    int64, filtered (N,)); clipped readings are counted in ``clipped[0]``.
    """
    offsets, params, clipped = adc[0], adc[1], adc[2]
    noise_sd, step, max_code = params[ADC_NOISE_SD], params[ADC_STEP], params[ADC_MAX_CODE]
    for i in range(x.size):
        value = x[i] + offsets[i]
        if noise_sd > 0.0:
            value += noise_sd * rng.standard_normal()
        if step > 0.0:
            code = np.round(value / step)
            if code > max_code:
                code, clipped[0] = max_code, clipped[0] + 1
            elif code < -max_code - 1:
                code, clipped[0] = -max_code - 1, clipped[0] + 1
            value = code * step
        out[i] = value


@njit(cache=True, nogil=True)
def _track(x, adc):
    """Advance the anti-alias filter's output adc[3] (N,) by one time step towards the cell
    values x: f += gain (x - f), gain = 1 - exp(-h / tau_filter) (x held over the step). A gain
    of 0 is no filter (the ADC then samples x itself)."""
    gain = adc[1][FILTER_GAIN]
    if gain > 0.0:
        filtered = adc[3]
        for i in range(x.size):
            filtered[i] += gain * (x[i] - filtered[i])


@njit(cache=True, nogil=True)
def _lag(sample, lag, pairs, paired):
    """The on-device lag correlator: pair sample x_k with the sample L before it, x_{k-L}, for
    the lag sum, then keep x_k in the ring buffer of the last L samples. Returns the new fill
    level of ``pairs`` (2, SECOND_MOMENT_BATCH, N): rows x_k and x_{k-L}, whose products
    :func:`_flush_pairs` adds to the lag sum as one BLAS product when it is full.

    lag = (ring (L, N), sum_lag (N, N), position (2,) int64 [next slot, samples held <= L]);
    L >= 1 (L = 0, ring (0, N), is no correlator: the caller skips it). The first L samples of
    a run add no product.
    """
    ring, sum_lag, position = lag
    size = ring.shape[0]
    slot = position[0]
    if position[1] == size:
        pairs[0, paired, :] = sample
        pairs[1, paired, :] = ring[slot]
        paired += 1
        if paired == pairs.shape[1]:
            _flush_pairs(pairs, paired, sum_lag)
            paired = 0
    else:
        position[1] += 1
    ring[slot, :] = sample
    position[0] = slot + 1 if slot + 1 < size else 0
    return paired


@njit(cache=True, nogil=True)
def _flush_pairs(pairs, paired, sum_lag):
    """Add x_k x_{k-L}^T of the first ``paired`` buffered pairs to ``sum_lag``."""
    if paired > 0:
        sum_lag += np.dot(pairs[0, :paired].T, pairs[1, :paired])


@njit(cache=True, nogil=True)
def _pair_buffer(lagging, n):
    return np.empty((2, SECOND_MOMENT_BATCH if lagging else 0, n))


@njit(cache=True, nogil=True)
def _read_value(x, adc, reading):
    """The array holding the sample :func:`_sample` just recorded of x."""
    if adc[1][ADC_ACTIVE] != 0.0:
        return reading
    return adc[3] if adc[1][FILTER_GAIN] > 0.0 else x


@njit(cache=True, nogil=True)
def _sample(x, record, sums, batch, filled, adc, reading, rng):
    """The ADC takes one sample of x, or of the filter output adc[3] when the readout has an
    anti-alias filter (see :func:`_track`). Returns -1 if x is not finite (the run diverged),
    else the new fill level of the second-moment buffer ``batch`` (empty when not recording).

    sums = (sum_x (N,), sum_xx (N, N)); ``reading`` (N,) is scratch for the converted sample.
    """
    n = x.size
    for i in range(n):
        if not np.isfinite(x[i]):
            return -1
    if not record:
        return filled
    sample = adc[3] if adc[1][FILTER_GAIN] > 0.0 else x
    if adc[1][ADC_ACTIVE] != 0.0:
        _convert(sample, adc, reading, rng)
        sample = reading
    sum_x, sum_xx = sums
    for i in range(n):
        sum_x[i] += sample[i]
    if batch.shape[0] == 0:
        return filled
    batch[filled, :] = sample
    filled += 1
    if filled == batch.shape[0]:
        _flush(batch, filled, sum_xx)
        filled = 0
    return filled


@njit(cache=True, nogil=True)
def _second_moment_buffer(second_moments, n):
    return np.empty((SECOND_MOMENT_BATCH if second_moments else 0, n))


@njit(cache=True, nogil=True)
def euler_maruyama_run(A, b, x, h, noise_scale, n_samples, steps_per_sample, rng,
                       record, second_moments, sums, lag, adc):
    """Euler-Maruyama for dx = -(A x - b) dt + sqrt(2 kappa0) dW, t in units of tau.

    A: (N, N); b, x: (N,), x updated in place. h: step in tau; noise_scale: sqrt(2 kappa0 h).
    Runs ``n_samples`` ADC samples of ``steps_per_sample`` steps each; when ``record`` adds each
    sample (as the ADC reads it, see :func:`_convert`) to sums = (sum_x (N,), sum_xx (N, N)),
    the outer products only with ``second_moments``, and its lag product to ``lag`` (see
    :func:`_lag`; :func:`no_lag` for none). Returns the number of samples taken:
    fewer than ``n_samples`` if the state stopped being finite (the run diverged at the next);
    the sums are then incomplete (buffered outer products are not added) and the caller
    discards them.
    """
    n = x.size
    ax, reading = np.empty(n), np.empty(n)
    batch = _second_moment_buffer(second_moments, n)
    filled = 0
    lagging = record and lag[0].shape[0] > 0
    pairs, paired = _pair_buffer(lagging, n), 0
    for sample in range(n_samples):
        for _ in range(steps_per_sample):
            np.dot(A, x, ax)
            for i in range(n):
                x[i] += h * (b[i] - ax[i]) + noise_scale * rng.standard_normal()
            _track(x, adc)
        filled = _sample(x, record, sums, batch, filled, adc, reading, rng)
        if filled < 0:
            return sample
        if lagging:
            paired = _lag(_read_value(x, adc, reading), lag, pairs, paired)
    _flush(batch, filled, sums[1])
    _flush_pairs(pairs, paired, lag[1])
    return n_samples


@njit(cache=True, nogil=True)
def euler_maruyama_factored_run(J, H, damping, b, x, h, noise_scale, n_samples,
                                steps_per_sample, rng, record, second_moments, sums, lag, adc):
    """Euler-Maruyama for the factored drift (J^T H J + diag(damping)) x - b, O(mN) a step.

    J: (m, N), H: (m, m), damping: (N,) per-cell lambda. The N x N matrix is never formed.
    Everything else as in :func:`euler_maruyama_run`.
    """
    n = x.size
    jx, hjx, drift, reading = np.empty(J.shape[0]), np.empty(J.shape[0]), np.empty(n), np.empty(n)
    batch = _second_moment_buffer(second_moments, n)
    filled = 0
    lagging = record and lag[0].shape[0] > 0
    pairs, paired = _pair_buffer(lagging, n), 0
    for sample in range(n_samples):
        for _ in range(steps_per_sample):
            np.dot(J, x, jx)
            np.dot(H, jx, hjx)
            np.dot(J.T, hjx, drift)
            for i in range(n):
                x[i] += (h * (b[i] - drift[i] - damping[i] * x[i])
                         + noise_scale * rng.standard_normal())
            _track(x, adc)
        filled = _sample(x, record, sums, batch, filled, adc, reading, rng)
        if filled < 0:
            return sample
        if lagging:
            paired = _lag(_read_value(x, adc, reading), lag, pairs, paired)
    _flush(batch, filled, sums[1])
    _flush_pairs(pairs, paired, lag[1])
    return n_samples


@njit(cache=True, nogil=True)
def exact_modal_run(decay, drive, noise_sd, y, filtered, g, basis, n_samples, rng,
                    record, second_moments, sums, lag, adc):
    """Exact OU transition over one sample interval, in the eigenbasis of A = V diag(lam) V^T.

    The coordinates y = V^T x evolve independently: y <- decay * y + drive + noise_sd * z1 with
    decay = exp(-lam d), drive = (1 - exp(-lam d)) / lam * V^T b and
    noise_sd = sqrt(kappa0 (1 - exp(-2 lam d)) / lam), all (N,): O(N) work per step.
    ``filtered`` (5, N) (or (5, 0): no anti-alias filter): each mode's filter output g (N,)
    follows exactly, g <- filtered[0] y_old + filtered[1] g + filtered[2] + filtered[3] z1 +
    filtered[4] z2 (device.transition.filtered_modes, with the drive row already times V^T b),
    and the ADC samples g instead of y.
    With an ideal ADC the samples are recorded as they are (the caller maps the sums back
    to x); otherwise each sample is mapped to x = V y (``basis`` = V, (N, N)) and read by the
    ADC, O(N^2). Sums and return value as in :func:`euler_maruyama_run`; the readout's own
    filter gain must be 0.
    """
    n = y.size
    converting = adc[1][ADC_ACTIVE] != 0.0
    has_filter = filtered.shape[1] > 0
    observed = g if has_filter else y
    x, reading = np.empty(n), np.empty(n)
    batch = _second_moment_buffer(second_moments, n)
    filled = 0
    lagging = record and lag[0].shape[0] > 0
    pairs, paired = _pair_buffer(lagging, n), 0
    for sample in range(n_samples):
        for i in range(n):
            z = rng.standard_normal()
            if has_filter:
                g[i] = (filtered[0, i] * y[i] + filtered[1, i] * g[i] + filtered[2, i]
                        + filtered[3, i] * z + filtered[4, i] * rng.standard_normal())
            y[i] = decay[i] * y[i] + drive[i] + noise_sd[i] * z
        if converting:
            np.dot(basis, observed, x)
            filled = _sample(x, record, sums, batch, filled, adc, reading, rng)
        else:
            filled = _sample(observed, record, sums, batch, filled, adc, reading, rng)
        if filled < 0:
            return sample
        if lagging:
            paired = _lag(reading if converting else observed, lag, pairs, paired)
    _flush(batch, filled, sums[1])
    _flush_pairs(pairs, paired, lag[1])
    return n_samples


@njit(cache=True, nogil=True)
def exact_factored_run(U, alpha, beta, decay_perp, noise_perp, drive, x, n_samples, rng,
                       record, second_moments, sums, lag, adc):
    """Exact OU transition over one sample interval for A = J^T H J + lam I, kept factored
    (device.transition.FactoredTransition): with xi ~ N(0, I_N),

        x <- decay_perp x + noise_perp xi + drive + U (alpha * U^T x + beta * U^T xi)

    U (N, r) orthonormal columns; alpha, beta (r,); drive, x (N,). Two passes over U a sample,
    O(rN). Sums, adc (filter gain 0) and return value as in :func:`euler_maruyama_run`.
    """
    n, r = U.shape
    pair, projected = np.empty((2, n)), np.empty((2, r))  # rows: x and xi; U^T x and U^T xi
    coefficients, back, reading = np.empty(r), np.empty(n), np.empty(n)
    batch = _second_moment_buffer(second_moments, n)
    filled = 0
    lagging = record and lag[0].shape[0] > 0
    pairs, paired = _pair_buffer(lagging, n), 0
    for sample in range(n_samples):
        for i in range(n):
            pair[0, i] = x[i]
            pair[1, i] = rng.standard_normal()
        np.dot(pair, U, projected)  # one pass over U for both projections
        for k in range(r):
            coefficients[k] = alpha[k] * projected[0, k] + beta[k] * projected[1, k]
        np.dot(U, coefficients, back)
        for i in range(n):
            x[i] = decay_perp * x[i] + noise_perp * pair[1, i] + drive[i] + back[i]
        filled = _sample(x, record, sums, batch, filled, adc, reading, rng)
        if filled < 0:
            return sample
        if lagging:
            paired = _lag(_read_value(x, adc, reading), lag, pairs, paired)
    _flush(batch, filled, sums[1])
    _flush_pairs(pairs, paired, lag[1])
    return n_samples


@njit(cache=True, nogil=True)
def asymmetry(A):
    """max |A_ij - A_ji| of a square A, in one pass over _TILE x _TILE tile pairs (both tiles
    stay in L1)."""
    n = A.shape[0]
    worst = 0.0
    for i0 in range(0, n, _TILE):
        for j0 in range(i0, n, _TILE):
            for i in range(i0, min(i0 + _TILE, n)):
                for j in range(max(j0, i + 1), min(j0 + _TILE, n)):
                    worst = max(worst, abs(A[i, j] - A[j, i]))
    return worst


def matrix_check(A: np.ndarray) -> tuple[bool, float, float]:
    """A square A's (all finite, max |A_ij|, max |A_ij - A_ji|): numpy's max and min, through
    which NaN and inf propagate (vectorised streaming passes), then :func:`asymmetry` if all
    is finite (0.0 otherwise)."""
    high, low = float(np.max(A)), float(np.min(A))
    if not (np.isfinite(high) and np.isfinite(low)):
        return False, float("nan"), 0.0
    return True, max(abs(high), abs(low)), float(asymmetry(A))


def ideal_adc(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The readout path of an ideal converter without filter for N cells (the kernels' ``adc``
    argument: offsets, parameters, clip counter, filter output)."""
    return np.zeros(n), np.zeros(ADC_PARAMETERS), np.zeros(1, dtype=np.int64), np.zeros(n)


LagState = tuple[np.ndarray, np.ndarray, np.ndarray]


def lag_correlator(lag_samples: int, n: int) -> LagState:
    """An empty lag correlator for ``lag_samples`` = L sample intervals and N cells (the
    kernels' ``lag`` argument: ring (L, N), sum_lag (N, N), position (2,) int64)."""
    return (np.zeros((lag_samples, n)), np.zeros((n, n) if lag_samples else (0, 0)),
            np.zeros(2, dtype=np.int64))


def no_lag(n: int) -> LagState:
    """The ``lag`` argument of a run without the correlator."""
    return lag_correlator(0, n)


def warm_up() -> None:
    """Compile (or load from the cache) every kernel with its one canonical signature."""
    n = 2
    A, vec, x = np.eye(n), np.zeros(n), np.zeros(n)
    sums = (np.zeros(n), np.zeros((n, n)))
    rng = np.random.default_rng(0)
    adc = ideal_adc(n)
    lag = lag_correlator(1, n)
    asymmetry(A)
    euler_maruyama_run(A, vec, x, 0.1, 0.1, 1, 1, rng, True, True, sums, lag, adc)
    euler_maruyama_factored_run(A, A, vec, vec, x, 0.1, 0.1, 1, 1, rng, True, True, sums, lag,
                                adc)
    exact_modal_run(vec, vec, vec, x, np.zeros((5, n)), vec.copy(), A, 1, rng, True, True, sums,
                    lag, adc)
    exact_factored_run(A, vec, vec, 0.5, 0.1, vec, x, 1, rng, True, True, sums, lag, adc)
    from spusim.device import kernels_linear  # it builds on this module's sampling helpers

    kernels_linear.warm_up()


def seconds_per_cell_step(n: int = 128, steps: int = 200) -> float:
    """Wall time of one Euler-Maruyama step per matrix element (s), measured here and now.

    Only for sizing hosts' timeouts; device time never comes from a wall clock.
    """
    A = np.eye(n) * 0.5
    vec, x = np.zeros(n), np.zeros(n)
    sums = (np.zeros(n), np.zeros((0, 0)))
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    euler_maruyama_run(A, vec, x, 0.1, 0.1, steps, 1, rng, True, False, sums, no_lag(n),
                       ideal_adc(n))
    return (time.perf_counter() - started) / (steps * n * n)


KERNELS = (euler_maruyama_run, euler_maruyama_factored_run, exact_modal_run, exact_factored_run,
           asymmetry)
