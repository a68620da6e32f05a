"""First-order bounds on the systematic error of a result, from what the host knows: the values
the DACs actually programmed (their rounding is deterministic), the sizes of the chip's
mismatch and offsets (random per chip, so counted at two standard deviations), and the ADC's
step.

Where a bound needs ||A^-1||_2, it comes from the device's own data, not from a digital
factorisation: an inverse's estimate has it directly, and a solve's batch means bound it
through their spread. Each mode a of A contributes to the variance of a time average over T
tau at least 2 kappa0 / (a^2 T) (continuous sampling; discrete samples only add), so
tr(A^-2) <= T sum_i Var(mean_i) / (2 kappa0), and ||A^-1||_2 <= sqrt(tr(A^-2)); the variance
is taken at the upper end of its 95 % chi-square interval from the blocks.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2

from spusim.linalg.results import Systematics
from spusim.linalg.session import Session

# A bound in parts: (quantization, mismatch, readout), each in the result's units and norm.
Parts = tuple[float, float, float]

# Random chip errors (mismatch, offsets) enter the bounds at this many standard deviations.
_SIGMAS = 2.0


def programmed_error(session: Session, matrix: np.ndarray, scale: float) -> np.ndarray:
    """What the coupling DAC made of ``scale * matrix``, minus it, in the matrix's units."""
    scaled = scale * matrix
    return (session.converters.coupling.programmed(scaled) - scaled) / scale


def bias_error(session: Session, vector: np.ndarray, scale: float) -> np.ndarray:
    """What the bias DAC made of ``scale * vector``, minus it, in the vector's units."""
    scaled = scale * vector
    return (session.converters.bias.programmed(scaled) - scaled) / scale


def inverse_norm_from_spread(mean_variance: float, t_sample: float, kappa0: float,
                             blocks: int) -> float:
    """Upper bound on ||A^-1||_2 (device units) from the summed variance of the block-averaged
    means over t_sample tau (see the module docstring); inf without thermal noise."""
    if kappa0 <= 0:
        return np.inf
    upper = mean_variance * (blocks - 1) / chi2.ppf(0.05, blocks - 1)
    return float(np.sqrt(t_sample * upper / (2 * kappa0)))


def solve_bound(session: Session, A: np.ndarray, b: np.ndarray, x: np.ndarray,
                standard_error: np.ndarray, scales: tuple[float, float], t_sample: float,
                blocks: int, rounding: np.ndarray) -> Parts:
    """Bound on ||x - A^-1 b|| from quantization, mismatch, offsets and ADC steps, in parts.

    x - A^-1 b = A_q^-1 (delta_b - delta_A x) for the programmed A_q = A + delta_A and
    b_q = b + delta_b, so ||.|| <= ||A_q^-1||_2 ||delta_b - delta_A x||; the mismatch's
    delta_A x = sigma (A o E) x has the RMS size sigma ||A diag(x)||_F; the bias offsets add to
    delta_b; the readings' offsets and ADC rounding add to x directly. scales: (s_A, s_b);
    rounding: the DAC's delta_A (:func:`programmed_error`).
    """
    s_a, s_b = scales
    config, n = session.device.config, A.shape[0]
    residuals = np.array([
        np.linalg.norm(bias_error(session, b, s_b) - rounding @ x),
        mismatch_bound(session, A * x[None, :]),
        _SIGMAS * float(config["bias_offset"]) * np.sqrt(n) / s_b])
    parts = np.zeros(3)
    if np.any(residuals > 0):
        device_variance = float(np.sum((standard_error * s_b / s_a) ** 2))
        norm = s_a * inverse_norm_from_spread(device_variance, t_sample, session.kappa0, blocks)
        present = residuals > 0  # (an infinite norm at kappa0 = 0 times a zero part is 0)
        parts[present] = norm * residuals[present]
    reading = _SIGMAS * float(config["readout_offset"]) + session.converters.adc.step / 2
    return (float(parts[0]), float(parts[1]),
            float(parts[2]) + reading * np.sqrt(n) * s_a / s_b)


def inverse_bound(session: Session, A: np.ndarray, X: np.ndarray, s_a: float,
                  rounding: np.ndarray) -> Parts:
    """Bound on ||X - A^-1||_F for an inverse X read from the covariance kappa0 (s_a A)^-1.

    A_q^-1 - A^-1 = -A_q^-1 delta_A A^-1 ~ -X delta_A X; for the mismatch delta_A = sigma A o E
    (E standard normal) its RMS size is sigma sqrt(c^T (A o A) c), c = the squared column norms
    of X, counted at 2 sigma. The readings' errors (:func:`moment_error`, device units) scale by
    s_a / kappa0 into X's units. rounding: the DAC's delta_A (:func:`programmed_error`).
    """
    columns = np.sum(X * X, axis=0)
    reading = moment_error(session, A.shape[0], float(np.linalg.norm(X, 2)) / s_a)
    return (float(np.linalg.norm(X @ rounding @ X)),
            mismatch_bound(session, np.sqrt(np.outer(columns, columns)) * A),
            reading * s_a / session.kappa0)


def mismatch_bound(session: Session, matrix: np.ndarray) -> float:
    """2 sigma ||matrix||_F: the Frobenius size of the chip's mismatch on ``matrix``."""
    return _SIGMAS * float(session.device.config["mismatch"]) * float(np.linalg.norm(matrix))


def moment_error(session: Session, n: int, inverse_norm: float) -> float:
    """Bound (Frobenius, device units^2) on the error of a zero-mean second moment read from n
    cells: readout offsets o o^T, the mean m m^T the bias offsets cause through a drift whose
    inverse has norm ``inverse_norm`` (device units), the ADC rounding step^2 / 12, and the
    anti-alias filter of rate a (per tau), which shrinks each mode's variance by a / (a +
    lambda): kappa0 (a I + A)^-1 missing, at most kappa0 sqrt(n) / a for a drift with a
    positive definite symmetric part."""
    config = session.device.config
    error = (_SIGMAS**2 * n * (float(config["readout_offset"]) ** 2
                               + (inverse_norm * float(config["bias_offset"])) ** 2)
             + np.sqrt(n) * session.converters.adc.step**2 / 12)
    filter_tau_ns = float(config.get("readout_tau_ns") or 0.0)
    if filter_tau_ns:
        error += session.kappa0 * np.sqrt(n) * filter_tau_ns / session.device.tau_ns
    return error


def systematics(session: Session, scales: tuple[float, float], rounding: np.ndarray,
                parts: Parts) -> Systematics:
    """The :class:`Systematics` of an operation that programmed a matrix scaled by
    ``scales[0]`` and a vector by ``scales[1]``; ``rounding``: what the coupling DAC made of
    the matrix, minus it (:func:`programmed_error`, the matrix's units)."""
    s_a, s_b = scales
    config, conv = session.device.config, session.converters
    return Systematics(
        dac_clipped=session.counts["dac_clipped"], bias_clipped=session.counts["bias_clipped"],
        adc_clipped=session.counts["adc_clipped"], coupling_scale=s_a, bias_scale=s_b,
        coupling_step=conv.coupling.step / s_a, bias_step=conv.bias.step / s_b,
        adc_step=conv.adc.step,
        quantization_error=float(np.linalg.norm(rounding)),
        mismatch=float(config["mismatch"]), bias_offset=float(config["bias_offset"]),
        readout_offset=float(config["readout_offset"]),
        readout_tau_ns=float(config.get("readout_tau_ns") or 0.0), settle_ns=session.settle_ns,
        quantization_bound=float(parts[0]), mismatch_bound=float(parts[1]),
        readout_bound=float(parts[2]))
