"""Cost model of the device's phases, in integer nanoseconds of simulated time.

First cut (the full hybrid-loop model grows from here): moving values over the host-device link,
and the analog evolution itself. Every cost is a pure function of the work requested; nothing
here reads a wall clock.

Defaults are the TNGD paper's timing assumptions (arXiv 2405.13817, App. C): 16 bits per value
and a 50 Gb/s link. The link latency is not given there and defaults to 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    """Where simulated time goes. Names are stable: they appear in replies and reports."""

    TRANSFER_IN = "transfer_in"  # host -> device over the link
    ANALOG = "analog"  # the analog array evolving (and the ADC sampling it)
    TRANSFER_OUT = "transfer_out"  # device -> host over the link


@dataclass(frozen=True)
class LinkModel:
    """The digital link between host and device.

    bits_per_value: width of one transferred value (DAC/ADC word), bits.
    bandwidth_bps: link throughput, bits per second.
    latency_ns: fixed cost per transfer, ns.
    """

    bits_per_value: int = 16
    bandwidth_bps: float = 50e9
    latency_ns: int = 0

    def __post_init__(self) -> None:
        if self.bits_per_value <= 0 or self.bandwidth_bps <= 0 or self.latency_ns < 0:
            raise ValueError(f"invalid link parameters: {self}")

    def transfer_ns(self, n_values: int) -> int:
        """Time to move ``n_values`` values, rounded up to whole nanoseconds (0 for none)."""
        if n_values <= 0:
            return 0
        bits = n_values * self.bits_per_value
        return self.latency_ns + math.ceil(bits * 1e9 / self.bandwidth_bps)


@dataclass(frozen=True)
class TimingModel:
    """Per-op costs of the device, as ``{Phase: ns}`` maps (phases that cost nothing omitted)."""

    link: LinkModel = LinkModel()

    def upload(self, n_values: int) -> dict[Phase, int]:
        """Programming ``n_values`` values (matrix entries, bias or state)."""
        return {Phase.TRANSFER_IN: self.link.transfer_ns(n_values)}

    def evolve(self, duration_ns: int) -> dict[Phase, int]:
        """Letting the array evolve for ``duration_ns`` of analog time."""
        return {Phase.ANALOG: duration_ns}

    def download(self, n_values: int) -> dict[Phase, int]:
        """Reading ``n_values`` values back to the host."""
        return {Phase.TRANSFER_OUT: self.link.transfer_ns(n_values)}


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
