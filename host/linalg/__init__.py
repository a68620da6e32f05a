"""Thermodynamic linear algebra on an SPU: each answer is read from the device's dynamics.

    from spusim import linalg
    linalg.solve(device, A, b)      # A^-1 b, from the stationary mean
    linalg.inv(device, A)           # A^-1, from the stationary covariance kappa0 A^-1
    linalg.logdet(device, A)        # log det A, by thermodynamic integration of the coupling
    linalg.lyapunov(device, A, Q)   # X with A X + X A^T = Q, from a general-drift OU process
    linalg.expnegm(device, A, t)    # e^{-tA}, from the lag-t autocovariance

Every routine returns an :class:`~spusim.linalg.results.Estimate`: the value, its standard
error from batch means, the samples, the simulated device time per phase, and the
:class:`~spusim.linalg.results.Systematics` the device reported (clipping, quantization steps,
mismatch, offsets) with a bound on the error they cause. A clipped converter raises
:class:`ConverterClipped` unless ``on_clip="warn"``. Modules: solve (solve, inv), logdet,
lyapunov, expnegm, ou (the general-drift process both run, and the transform that realises a
diffusion Q); session (device ops with clipping counted), sampling (schedules, batch means),
converters (DAC/ADC behaviour, scaling), bounds (systematic error bounds), results, errors.
docs/physics.md gives the error laws.
"""

from spusim.linalg.errors import ClippingWarning, ConverterClipped
from spusim.linalg.expnegm import expnegm
from spusim.linalg.logdet import logdet
from spusim.linalg.lyapunov import lyapunov
from spusim.linalg.results import (
    Estimate,
    ExpnegmResult,
    InverseResult,
    LogdetResult,
    LyapunovResult,
    SolveResult,
    Systematics,
)
from spusim.linalg.sampling import Progress
from spusim.linalg.solve import inv, solve

__all__ = [
    "ClippingWarning", "ConverterClipped", "Estimate", "ExpnegmResult", "InverseResult",
    "LogdetResult", "LyapunovResult", "Progress", "SolveResult", "Systematics", "expnegm", "inv",
    "logdet", "lyapunov", "solve",
]
