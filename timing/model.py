"""Cost model of the device's phases, in integer nanoseconds of simulated time.

Every cost is a pure function of the work requested and the model's parameters; nothing here
reads a wall clock. Phases that cost nothing are left out of the ``{Phase: ns}`` maps.

Defaults are the TNGD paper's assumptions (arXiv 2405.13817, App. C): 16 bits per value and a
50 Gb/s link. The paper gives no DAC or ADC conversion times, settling times or link latency;
they are parameters here and default to 0, which reproduces the paper's arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


class Phase(StrEnum):
    """Where simulated time goes. Names are stable: they appear in replies and reports."""

    DIGITAL = "digital"  # the host computing gradient, Jacobian and Hessian factors
    TRANSFER_IN = "transfer_in"  # host -> device over the link
    DAC = "dac"  # converting programmed values, then settling
    ANALOG = "analog"  # the analog array evolving (the ADC samples it meanwhile)
    ADC = "adc"  # converting the node values of the last sample for readout
    TRANSFER_OUT = "transfer_out"  # device -> host over the link
    DELAY = "delay"  # t_d under the old programming after a measurement (then held until upload)


@dataclass(frozen=True)
class LinkModel:
    """The digital link between host and device.

    bits_per_value: width of one transferred value, bits. bandwidth_bps: bits per second.
    latency_ns: fixed cost of each transfer, ns.
    """

    bits_per_value: int = 16
    bandwidth_bps: float = 50e9
    latency_ns: int = 0

    def __post_init__(self) -> None:
        if (self.bits_per_value <= 0 or not 0 < self.bandwidth_bps < math.inf
                or self.latency_ns < 0):
            raise ValueError(f"invalid link parameters: {self}")

    def transfer_ns(self, n_values: int) -> int:
        """Time to move ``n_values`` values: latency + bits / bandwidth, rounded up (0 for none)."""
        if n_values <= 0:
            return 0
        return self.latency_ns + math.ceil(n_values * self.bits_per_value * 1e9
                                           / self.bandwidth_bps)


@dataclass(frozen=True)
class ConverterModel:
    """A bank of DACs (programming) or ADCs (readout).

    bits: resolution. conversion_ns: one conversion by one converter, ns. channels: converters
    working in parallel; 0 means one per cell (a matrix then converts row by row, N rows at
    once). settle_tau_ns: time constant of the first-order settling that follows, ns; settling
    to half an LSB takes settle_tau_ns * ln(2^(bits + 1)).
    """

    bits: int = 16
    conversion_ns: float = 0.0
    channels: int = 0
    settle_tau_ns: float = 0.0

    def __post_init__(self) -> None:
        if (self.bits <= 0 or self.channels < 0
                or not 0 <= self.conversion_ns < math.inf or not 0 <= self.settle_tau_ns < math.inf):
            raise ValueError(f"invalid converter parameters: {self}")

    def settle_ns(self) -> float:
        """Time for a first-order output to settle within half an LSB, ns."""
        return self.settle_tau_ns * (self.bits + 1) * math.log(2)

    def time_ns(self, n_values: int, cells: int) -> int:
        """Converting ``n_values`` values on a device of ``cells`` cells, then settling."""
        if n_values <= 0:
            return 0
        rounds = math.ceil(n_values / (self.channels or cells))
        return math.ceil(rounds * self.conversion_ns + self.settle_ns())


@dataclass(frozen=True)
class TimingModel:
    """Per-op costs of the device as ``{Phase: ns}`` maps (phases that cost nothing omitted)."""

    link: LinkModel = field(default_factory=LinkModel)
    dac: ConverterModel = field(default_factory=ConverterModel)
    adc: ConverterModel = field(default_factory=ConverterModel)

    def upload(self, n_values: int, cells: int) -> dict[Phase, int]:
        """Sending ``n_values`` values (matrix entries, bias or state) and programming them."""
        return _nonzero({Phase.TRANSFER_IN: self.link.transfer_ns(n_values),
                         Phase.DAC: self.dac.time_ns(n_values, cells)})

    def evolve(self, duration_ns: int) -> dict[Phase, int]:
        """Letting the array evolve for ``duration_ns`` of analog time."""
        return _nonzero({Phase.ANALOG: duration_ns})

    def readout(self, cells: int, n_values: int) -> dict[Phase, int]:
        """Converting the last sample of ``cells`` nodes and sending ``n_values`` values back."""
        return _nonzero({Phase.ADC: self.adc.time_ns(cells, cells),
                         Phase.TRANSFER_OUT: self.link.transfer_ns(n_values)})


class SimClock:
    """Simulated device time: starts at 0 ns, only ever moves forward, by costs from the model."""

    def __init__(self) -> None:
        self._now_ns = 0

    @property
    def now_ns(self) -> int:
        return self._now_ns

    def advance(self, costs: dict[Phase, int]) -> int:
        """Add the phases' costs; returns the total advance in ns."""
        total = sum(costs.values())
        if total < 0:
            raise ValueError(f"negative cost {costs}")
        self._now_ns += total
        return total


def _nonzero(costs: dict[Phase, int]) -> dict[Phase, int]:
    return {phase: ns for phase, ns in costs.items() if ns}


PROFILES: dict[str, TimingModel] = {
    # The TNGD paper's model: 16-bit values over 50 Gb/s; conversions and settling not stated.
    "tngd-paper": TimingModel(),
    # The ideal device keeps the paper's link: only its physics is idealised.
    "ideal": TimingModel(),
    # The 8-cell SPU board reads its cells at a 12 MHz base frequency (arXiv 2312.04836, from a
    # secondary source); its link and DAC are not published, so the paper's link is kept.
    "spu-8cell": TimingModel(adc=ConverterModel(conversion_ns=1e9 / 12e6)),
}
