"""The digital side's compute time: a roofline estimate of counted work (the default), or the
host's measured wall time, scaled.

A roofline estimate of a piece of work is max(flops / peak, bytes / memory bandwidth) on a named
accelerator at a fraction ``efficiency`` of its peaks, plus a fixed latency per sequential model
call. It depends on the work only, so identical runs get identical times on any machine. The
default clock (:data:`DEFAULT_DIGITAL`) is the TNGD paper's A100 (arXiv 2405.13817, App. E: its
runs used an A100 80GB) at :data:`DEFAULT_EFFICIENCY` with :data:`DEFAULT_CALL_LATENCY_NS` per
call, both our assumptions (stated at their definitions). A measured time is the host's own wall
time of the step times a stated factor; it changes from run to run and is labelled "measured".

:func:`parse_digital` reads a ``--digital`` spec:
``roofline[:ACCELERATOR[:EFFICIENCY[:LATENCY_US]]]`` or ``measured[:SCALE]``.
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


# Our assumption, no published source: the fraction of the A100's FP32 and HBM peaks that eager
# PyTorch kernels reach on large operands (cuBLAS GEMMs and streaming elementwise kernels run
# near peak; small ones are latency-bound, which the per-call latency below carries instead).
DEFAULT_EFFICIENCY = 0.8
# Our assumption: the fixed cost of one sequential model pass (forward, backward, or a vmapped
# Jacobian pass) on a GPU from eager PyTorch: kernel launches and Python dispatch, of the order of
# 10 us. The TNGD paper states no such figure.
DEFAULT_CALL_LATENCY_NS = 10_000.0


@dataclass(frozen=True)
class Roofline:
    """Compute time as a roofline bound on ``accelerator``, at ``efficiency`` of its peaks, plus
    ``call_latency_ns`` for each sequential model call. (The dataclass defaults are the bare
    bound, peak and no latency; the clock's defaults are :data:`DEFAULT_DIGITAL`'s.)"""

    accelerator: Accelerator
    efficiency: float = 1.0
    call_latency_ns: float = 0.0
    measured = False

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

    def price(self, work: Work, host_seconds: float) -> int:
        """The digital step's simulated time, ns: from ``work`` (``host_seconds`` is unused)."""
        return self.ns(work)

    @property
    def label(self) -> str:
        """E.g. "roofline a100 (efficiency 0.8, 10 us per call)"."""
        name = next((key for key, acc in ACCELERATORS.items() if acc == self.accelerator),
                    self.accelerator.name)
        return (f"roofline {name} (efficiency {self.efficiency:g}, "
                f"{self.call_latency_ns / 1e3:g} us per call)")


@dataclass(frozen=True)
class Measured:
    """Compute time as the host's measured wall time multiplied by ``scale``: not reproducible
    (it varies with the host and its load), and labelled so."""

    scale: float = 1.0
    measured = True

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    def ns(self, host_seconds: float) -> int:
        return math.ceil(host_seconds * 1e9 * self.scale)

    def price(self, work: Work, host_seconds: float) -> int:
        """The digital step's simulated time, ns: from ``host_seconds`` (``work`` is unused)."""
        return self.ns(host_seconds)

    @property
    def label(self) -> str:
        """E.g. "measured (host wall time x 1)"."""
        return f"measured (host wall time x {self.scale:g})"


DigitalClock = Roofline | Measured
DEFAULT_DIGITAL = "roofline:a100"
DIGITAL_FORMS = ("roofline[:ACCELERATOR[:EFFICIENCY[:LATENCY_US]]]", "measured[:SCALE]")


def parse_digital(spec: str = DEFAULT_DIGITAL) -> DigitalClock:
    """The digital clock a ``--digital`` spec names. ``roofline`` takes an accelerator of
    :data:`ACCELERATORS` (default a100), an efficiency in (0, 1] (default
    :data:`DEFAULT_EFFICIENCY`) and a latency per sequential model call in us (default
    :data:`DEFAULT_CALL_LATENCY_NS` / 1e3); ``measured`` a scale factor > 0 (default 1). An
    empty field takes its default. Raises ValueError naming the allowed forms."""
    try:
        return _parse(spec)
    except ValueError as error:
        raise ValueError(f"--digital {spec!r}: {error}; the forms are "
                         f"{' or '.join(DIGITAL_FORMS)}") from None


def _parse(spec: str) -> DigitalClock:
    kind, *fields = spec.strip().lower().split(":")
    if kind == "measured" and len(fields) <= 1:
        return Measured(_number(fields, 0, 1.0, "SCALE"))
    if kind == "roofline" and len(fields) <= 3:
        name = fields[0] if fields and fields[0] else "a100"
        if name not in ACCELERATORS:
            raise ValueError(f"unknown accelerator {name!r} (known: {', '.join(ACCELERATORS)})")
        latency_us = _number(fields, 2, DEFAULT_CALL_LATENCY_NS / 1e3, "LATENCY_US")
        return Roofline(ACCELERATORS[name], _number(fields, 1, DEFAULT_EFFICIENCY, "EFFICIENCY"),
                        latency_us * 1e3)
    raise ValueError("not a known form")


def _number(fields: list[str], index: int, default: float, name: str) -> float:
    """Field ``index`` as a finite number (``default`` if absent or empty)."""
    if index >= len(fields) or not fields[index]:
        return default
    try:
        value = float(fields[index])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a number, got {fields[index]!r}")
    return value
