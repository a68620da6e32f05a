"""The emulated device's parameters: one frozen record, echoed to hosts by ``hello``.

Units are in the names. Defaults: tau = RC = 1 kOhm x 1 nF = 1 us and an Euler-Maruyama step of
0.1 tau follow the TNGD paper (arXiv 2405.13817, App. C and D). The capacity, noise level,
ADC sample interval and seed are emulator choices, not taken from a paper. The defaults are the
``ideal`` profile: every non-ideality off. ``PROFILES`` holds the named parameter sets.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from spusim.device.converters import Quantizer
from spusim.protocol import INTEGRATORS, MAX_HEADER_BYTES
from spusim.timing import PROFILES as TIMING_PROFILES
from spusim.timing import TimingModel

DYNAMICS = ("overdamped", "underdamped", "rlc")


@dataclass(frozen=True)
class DeviceConfig:
    """Parameters of one emulated SPU.

    cells: capacity, the largest N of an N x N coupling matrix.
    resistance_ohm, capacitance_farad: the cells' R and C; tau = RC is the time unit of the
        dynamics dx = -(A x - b) dt/tau + sqrt(2 kappa0/tau) dW.
    kappa0: noise intensity, so the stationary covariance is kappa0 * A^-1 (state units^2).
    integrator: default integrator, "exact" (exact OU transition) or "euler_maruyama".
    em_step_ns: Euler-Maruyama step.
    sample_interval_ns: ADC sample interval; a multiple of em_step_ns. The exact integrator
        steps from sample to sample.
    seed: seed of the device's noise stream at power-on.
    profile: name of the parameter set this configuration started from (``PROFILES``).
    timing: the timing model: host-device link, DAC and ADC banks (their bits also set the
        converters' resolution below).
    dac_full_scale: range of the coupling DAC, +-value; None: ideal (no rounding, no clipping).
    bias_full_scale: range of the bias and state DAC; None: ideal.
    adc_full_scale: range of the ADC; None: ideal.
    readout_noise: standard deviation of the noise the ADC adds to each reading (state units).
    mismatch: relative standard deviation of every programmed element's fixed error.
    bias_offset, readout_offset: standard deviation of the fixed per-cell offsets added to the
        bias and to every reading (state units).
    serial: the chip's serial number: same serial, same mismatch and offsets.
    dynamics: the cells: "overdamped" RC cells (first order), "underdamped" Langevin cells
        (position and momentum, ``mass`` and ``friction`` in tau units), or the SPU board's
        "rlc" cells (voltage and inductor current; a programmed A becomes the Maxwell
        capacitance matrix capacitance_farad * A, with resistance_ohm and inductance_henry).
        Second-order dynamics run the exact integrator only.
    sign_capable: rlc only: couplings can realise either sign (differential), so any symmetric
        positive definite matrix can be programmed.
    program_tau_ns: finite bandwidth of the programming path: every programmed element (coupling,
        factor, damping, bias) moves from its old to its new value as a first-order step
        response with this time constant, starting when its upload ends; the cells run while it
        settles (a host waits with an unrecorded run). 0: instantaneous.
    readout_tau_ns: anti-alias filter before the ADC: a first-order low-pass of time constant
        readout_tau_ns (-3 dB at 1 / (2 pi readout_tau_ns)) on every cell's signal; the ADC
        samples its output. 0: no filter.
    """

    cells: int = 4096
    resistance_ohm: float = 1e3
    capacitance_farad: float = 1e-9
    kappa0: float = 1e-2
    integrator: str = "exact"
    em_step_ns: int = 100
    sample_interval_ns: int = 100
    seed: int = 0
    profile: str = "ideal"
    timing: TimingModel = field(default_factory=TimingModel)
    dac_full_scale: float | None = None
    bias_full_scale: float | None = None
    adc_full_scale: float | None = None
    readout_noise: float = 0.0
    mismatch: float = 0.0
    bias_offset: float = 0.0
    readout_offset: float = 0.0
    serial: int = 0
    dynamics: str = "overdamped"
    mass: float = 1.0
    friction: float = 1.0
    inductance_henry: float = 1e-6
    sign_capable: bool = False
    program_tau_ns: float = 0.0
    readout_tau_ns: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.cells <= 65536:
            problems.append(f"cells={self.cells} must be in 1..65536")
        if self.resistance_ohm <= 0 or self.capacitance_farad <= 0:
            problems.append("resistance and capacitance must be positive")
        elif self.tau_ns < 1:
            problems.append(f"tau = RC = {self.tau_seconds:.3g} s is below 1 ns")
        if not self.kappa0 >= 0:
            problems.append(f"kappa0={self.kappa0} must be >= 0")
        if self.integrator not in INTEGRATORS:
            problems.append(f"integrator={self.integrator!r} must be one of {list(INTEGRATORS)}")
        if self.em_step_ns < 1 or self.sample_interval_ns < 1:
            problems.append("em_step_ns and sample_interval_ns must be >= 1")
        elif self.sample_interval_ns % self.em_step_ns:
            problems.append(f"sample_interval_ns={self.sample_interval_ns} must be a multiple "
                            f"of em_step_ns={self.em_step_ns}")
        if not 0 <= self.seed < 2**63:
            problems.append(f"seed={self.seed} must be a non-negative 63-bit integer")
        elif self.timing.adc.time_ns(self.cells, self.cells) > self.sample_interval_ns:
            problems.append("the ADC cannot convert all cells within one sample interval "
                            f"({self.sample_interval_ns} ns)")
        for name in ("readout_noise", "mismatch", "bias_offset", "readout_offset",
                     "program_tau_ns", "readout_tau_ns"):
            if not 0 <= getattr(self, name) < math.inf:
                problems.append(f"{name}={getattr(self, name)} must be >= 0 and finite")
        if self.dynamics not in DYNAMICS:
            problems.append(f"dynamics={self.dynamics!r} must be one of {list(DYNAMICS)}")
        for name in ("mass", "friction", "inductance_henry"):
            if not 0 < getattr(self, name) < math.inf:
                problems.append(f"{name}={getattr(self, name)} must be positive and finite")
        if not 0 <= self.serial < 2**63:
            problems.append(f"serial={self.serial} must be a non-negative 63-bit integer")
        try:
            self.coupling_dac, self.bias_dac, self.adc  # noqa: B018  (validates the ranges)
        except ValueError as error:
            problems.append(str(error))
        if problems:
            raise ValueError("invalid device configuration: " + "; ".join(problems))

    @property
    def tau_seconds(self) -> float:
        return self.resistance_ohm * self.capacitance_farad

    @property
    def tau_ns(self) -> int:
        """tau = RC in whole nanoseconds."""
        return round(self.tau_seconds * 1e9)

    @property
    def max_frame_bytes(self) -> int:
        """Largest frame the daemon accepts: twice a full coupling matrix, so that a matrix
        somewhat over capacity is still answered (CAPACITY_EXCEEDED); larger frames are
        dropped by the transport without a reply."""
        return max(2 * 8 * self.cells * self.cells, MAX_HEADER_BYTES)

    @property
    def coupling_dac(self) -> Quantizer:
        """The DAC of the programmed couplings (matrix, factors, damping)."""
        return Quantizer(self.timing.dac.bits, self.dac_full_scale)

    @property
    def bias_dac(self) -> Quantizer:
        """The DAC of the bias and of a set state."""
        return Quantizer(self.timing.dac.bits, self.bias_full_scale)

    @property
    def adc(self) -> Quantizer:
        return Quantizer(self.timing.adc.bits, self.adc_full_scale)

    @property
    def ideal_readout(self) -> bool:
        """True when the ADC converts its input exactly (no offset, noise, clipping or rounding;
        the anti-alias filter in front of it is ``readout_tau_ns``)."""
        return (self.adc_full_scale is None and self.readout_noise == 0
                and self.readout_offset == 0)

    def describe(self) -> dict[str, Any]:
        """The configuration as sent in ``hello`` (msgpack-serialisable)."""
        return {**asdict(self), "tau_ns": self.tau_ns}


# Named parameter sets. Values the papers do not give (ranges, mismatch, noise: papers.md
# marks them NOT FOUND) are plausible choices, documented in docs/physics.md as such.
PROFILES: dict[str, dict[str, Any]] = {
    "ideal": {},
    # The TNGD paper's assumptions: 16-bit conversions, RC = 1 us; the ranges are ours.
    "tngd-paper": {"dac_full_scale": 16.0, "bias_full_scale": 16.0, "adc_full_scale": 16.0},
    # The 8-cell SPU board (arXiv 2312.04836): 8 capacitively coupled RLC cells read at 12 MHz;
    # L = 1 uH (a 5 MHz resonance with 1 nF), 12-bit converters, 1 % component tolerance and
    # 1 mV-scale offsets and noise are our assumptions.
    "spu-8cell": {"cells": 8, "dynamics": "rlc", "inductance_henry": 1e-6,
                  "dac_full_scale": 2.0, "bias_full_scale": 2.0,
                  "adc_full_scale": 2.0, "mismatch": 0.01, "bias_offset": 1e-3,
                  "readout_offset": 1e-3, "readout_noise": 1e-3},
}
_CONVERTER_BITS = {"tngd-paper": 16, "spu-8cell": 12}


def profile_config(name: str, **overrides: Any) -> DeviceConfig:
    """The configuration of profile ``name`` with ``overrides`` applied (field names)."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; known: {sorted(PROFILES)}")
    timing = TIMING_PROFILES[name]
    if name in _CONVERTER_BITS:
        bits = _CONVERTER_BITS[name]
        timing = replace(timing, dac=replace(timing.dac, bits=bits),
                         adc=replace(timing.adc, bits=bits))
    return DeviceConfig(**{"profile": name, "timing": timing, **PROFILES[name], **overrides})
