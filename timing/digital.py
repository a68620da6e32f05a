"""The digital side's compute time: measured on the host and scaled, or a roofline estimate.

A roofline estimate of a piece of work is max(flops / peak, bytes / memory bandwidth) on a named
accelerator, plus a fixed latency per sequential model call (kernel launches; 0 by default): a
lower bound unless ``efficiency`` < 1 scales the peaks down and the latency is set. A measured time is the host's own wall time of the
step times a stated factor (e.g. the ratio of the target accelerator's speed to this host's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Work:
    """Floating-point operations, bytes moved to or from memory, and sequential model calls
    (forward or backward passes that cannot run in parallel) of one piece of work."""

    flops: float
    bytes: float
    calls: int = 0

    def __add__(self, other: Work) -> Work:
        return Work(self.flops + other.flops, self.bytes + other.bytes, self.calls + other.calls)

    def __mul__(self, times: int) -> Work:
        return Work(self.flops * times, self.bytes * times, self.calls * times)

    __rmul__ = __mul__


@dataclass(frozen=True)
class Accelerator:
    """A device's peak FP32 throughput (FLOP/s) and memory bandwidth (bytes/s), with a source."""

    name: str
    peak_flops: float
    memory_bandwidth: float
    source: str


ACCELERATORS: dict[str, Accelerator] = {
    "a100": Accelerator(
        "NVIDIA A100 80GB SXM", 19.5e12, 2.039e12,
        "NVIDIA A100 datasheet: 19.5 TFLOP/s FP32 (non-tensor), 2,039 GB/s HBM2e. The TNGD "
        "paper ran its experiments on an A100 80GB."),
    "epyc-7763": Accelerator(
        "AMD EPYC 7763 (64 cores)", 64 * 2.45e9 * 32, 8 * 25.6e9,
        "AMD spec: 64 cores at 2.45 GHz base, 8 channels of DDR4-3200 (25.6 GB/s each); 32 FP32 "
        "FLOP/cycle/core from Zen 3's two 256-bit FMA pipes (derived). The CPU of the TNGD "
        "paper's Fig. 2."),
}


@dataclass(frozen=True)
class Roofline:
    """Compute time as a roofline bound on ``accelerator``, at ``efficiency`` of its peaks, plus
    ``call_latency_ns`` for each sequential model call."""

    accelerator: Accelerator
    efficiency: float = 1.0
    call_latency_ns: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {self.efficiency}")
        if not 0 <= self.call_latency_ns < math.inf:
            raise ValueError(f"call_latency_ns must be >= 0, got {self.call_latency_ns}")

    def ns(self, work: Work) -> int:
        a, e = self.accelerator, self.efficiency
        return math.ceil(max(work.flops / (a.peak_flops * e),
                             work.bytes / (a.memory_bandwidth * e)) * 1e9
                         + work.calls * self.call_latency_ns)


@dataclass(frozen=True)
class Measured:
    """Compute time as the host's measured wall time multiplied by ``scale``."""

    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    def ns(self, host_seconds: float) -> int:
        return math.ceil(host_seconds * 1e9 * self.scale)
