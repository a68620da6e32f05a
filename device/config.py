"""The emulated device's parameters: one frozen record, echoed to hosts by ``hello``.

Units are in the names. Defaults: tau = RC = 1 kOhm x 1 nF = 1 us and an Euler-Maruyama step of
0.1 tau follow the TNGD paper (arXiv 2405.13817, App. C and D). The capacity, noise level,
ADC sample interval and seed are emulator choices, not taken from a paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from protocol import INTEGRATORS, MAX_HEADER_BYTES
from timing import TimingModel


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
    profile: name of the parameter set this configuration started from (timing.PROFILES).
    timing: the timing model: host-device link, DAC and ADC banks.
    """

    cells: int = 4096
    resistance_ohm: float = 1e3
    capacitance_farad: float = 1e-9
    kappa0: float = 1e-2
    integrator: str = "exact"
    em_step_ns: int = 100
    sample_interval_ns: int = 100
    seed: int = 0
    profile: str = "tngd-paper"
    timing: TimingModel = field(default_factory=TimingModel)

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.cells <= 16384:
            problems.append(f"cells={self.cells} must be in 1..16384")
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

    def describe(self) -> dict[str, Any]:
        """The configuration as sent in ``hello`` (msgpack-serialisable)."""
        return {**asdict(self), "tau_ns": self.tau_ns}
