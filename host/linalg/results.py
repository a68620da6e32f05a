"""The result objects of thermodynamic linear algebra: an estimate, its sampling error, what it
cost in simulated device time, and every systematic effect the device reported.

error_estimate = sampling_error + systematics.bound: the sampling part from the spread of block
averages, the systematic part a first-order bound from the converters' quantization (the values
the chip actually programmed), the chip's mismatch and offsets (their sizes), and the ADC's
step. A clipped value makes the bias unknowable: routines refuse unless asked to warn
(:mod:`spusim.linalg.errors`), and the counts stay in :class:`Systematics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np


@dataclass(frozen=True)
class Systematics:
    """Systematic effects of one operation, as reported by the device and its configuration.

    dac_clipped, bias_clipped, adc_clipped: values clipped by the coupling DAC, the bias/state
    DAC and the ADC over the whole operation. coupling_scale, bias_scale: the factors the host
    multiplied the matrix and the vector by to fit the DACs' range (undone on the result).
    coupling_step, bias_step: one DAC LSB in the user's units of the matrix and the vector (0:
    ideal); adc_step: one ADC LSB in device units. quantization_error: ||A_programmed - A||_F
    in the user's units, from the values the DAC realised. mismatch: the chip's relative
    element error (standard deviation); bias_offset, readout_offset: its per-cell offsets
    (device units). readout_tau_ns: the anti-alias filter's time constant (0: none), whose
    variance loss the bound includes. settle_ns: the longest settling of a programmed value
    (finite programming bandwidth), waited out before sampling. quantization_bound,
    mismatch_bound, readout_bound: the error each effect can cause in the result (same norm as
    ``error_estimate``), to first order: the DACs' rounding; the mismatch; the offsets, the
    ADC's step and the readout filter. :attr:`bound` is their sum.
    """

    dac_clipped: int
    bias_clipped: int
    adc_clipped: int
    coupling_scale: float
    bias_scale: float
    coupling_step: float
    bias_step: float
    adc_step: float
    quantization_error: float
    mismatch: float
    bias_offset: float
    readout_offset: float
    readout_tau_ns: float
    settle_ns: int
    quantization_bound: float
    mismatch_bound: float
    readout_bound: float

    @property
    def bound(self) -> float:
        """The first-order bound on the result's systematic error: the three parts' sum."""
        return self.quantization_bound + self.mismatch_bound + self.readout_bound

    @property
    def clipped(self) -> bool:
        return bool(self.dac_clipped or self.bias_clipped or self.adc_clipped)


@dataclass(frozen=True)
class Estimate:
    """What every estimate reports besides its value.

    standard_error: per entry, from the spread of the block averages. sampling_error: its
    norm, the expected size of the estimate's random error. error_estimate: sampling_error +
    systematics.bound. samples: ADC samples (or readings) averaged, in ``blocks`` blocks.
    device_time_ns: simulated device time it took (uploads, burn-in, sampling, reads), split
    by phase in ``phase_ns``. sim_time_ns: the device clock at the end.
    """

    standard_error: np.ndarray
    error_estimate: float
    sampling_error: float
    samples: int
    blocks: int
    device_time_ns: int
    phase_ns: dict[str, int]
    sim_time_ns: int
    systematics: Systematics

    @classmethod
    def of(cls, standard_error: np.ndarray, systematics: Systematics, samples: int,
           blocks: int, costs: Mapping[str, Any], *, other_error: float = 0.0,
           **fields: Any) -> Self:
        """The result: sampling_error = ||standard_error|| (the class's norm: Euclidean, or
        Frobenius for a matrix), error_estimate = sampling_error + ``other_error`` (an error
        of the method itself, e.g. a quadrature's) + systematics.bound; ``costs``: what
        Session.finish returns; ``fields``: the subclass's own."""
        sampling = float(np.linalg.norm(standard_error))
        return cls(standard_error=standard_error, sampling_error=sampling,
                   error_estimate=sampling + other_error + systematics.bound,
                   systematics=systematics, samples=samples, blocks=blocks, **costs, **fields)


@dataclass(frozen=True)
class SolveResult(Estimate):
    """x: (N,) estimate of A^-1 b; standard_error (N,); norms are Euclidean."""

    x: np.ndarray


@dataclass(frozen=True)
class InverseResult(Estimate):
    """inverse: (N, N) estimate of A^-1; standard_error (N, N); norms are Frobenius."""

    inverse: np.ndarray


@dataclass(frozen=True)
class LogdetResult(Estimate):
    """logdet: estimate of log det A (a scalar); standard_error () array. quadrature_error:
    the estimated error of the integration rule in lambda (error_estimate = sampling_error +
    quadrature_error + systematics.bound).
    nodes: the couplings' interpolation points lambda_k (K,) the device equilibrated at."""

    logdet: float
    quadrature_error: float
    nodes: np.ndarray


@dataclass(frozen=True)
class LyapunovResult(Estimate):
    """X: (N, N) estimate of the solution of A X + X A^T = Q; standard_error (N, N);
    Frobenius norms."""

    X: np.ndarray


@dataclass(frozen=True)
class ExpnegmResult(Estimate):
    """expnegm: (N, N) estimate of e^{-tA}; standard_error (N, N); Frobenius norms. shift:
    the alpha added to A to make A + A^T positive definite (the estimate is e^{alpha t}
    e^{-t(A + alpha I)}, whose errors grow by e^{alpha t}); 0 when none was needed. samples:
    the lag pairs the device's lag correlator averaged."""

    expnegm: np.ndarray
    shift: float
