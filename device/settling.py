"""Finite bandwidth of the programming path: a programmed change reaches the cells as a
first-order step response.

When an element is programmed at time t0 (the end of its upload) from the value it had, p_old,
to p_new, the cells see

    p(t) = p_new + r(t) (p_old - p_new),        r(t) = exp(-(t - t0) / tau_p),

element by element (every coupling, factor, damping and bias element has its own settling path
in hardware, so a factored coupling settles as J(t)^T H(t) J(t) + lambda(t), not as a blend of
products). A change counts as settled once r is below half an LSB of the coupling DAC,
2^-(bits + 1): from then on the device runs the new values exactly.

While a change settles, the device integrates with the coefficients frozen over each sample
interval at their interval average, r_bar = r(t) tau_p / d (1 - exp(-d / tau_p)) for an interval
[t, t + d]: that keeps the integral of every coefficient over the interval exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

Value = TypeVar("Value")


def seen_value(new: np.ndarray, old: np.ndarray | None, residual: float) -> np.ndarray:
    """What the cells see with ``residual`` r of a change missing: new + r (old - new),
    element by element; ``old`` None stands for zeros (a reset array)."""
    return (1.0 - residual) * new if old is None else new + residual * (old - new)


@dataclass(frozen=True)
class Settling(Generic[Value]):
    """A programmed change in flight: ``previous`` is what the cells saw when it was programmed
    (None: zero, e.g. a freshly reset array), ``start_ns`` the end of its upload on the device
    clock, ``tau_ns`` the programming path's time constant (> 0)."""

    previous: Value | None
    start_ns: int
    tau_ns: float

    def residual(self, t_ns: float, interval_ns: float = 0.0) -> float:
        """r at device time ``t_ns`` (>= start_ns): the fraction of the change still missing;
        with ``interval_ns``, its average over [t_ns, t_ns + interval_ns]."""
        at_t = math.exp(-max(0.0, t_ns - self.start_ns) / self.tau_ns)
        if not interval_ns:
            return at_t
        x = interval_ns / self.tau_ns
        return at_t * -math.expm1(-x) / x

    def settled_at_ns(self, threshold: float) -> float:
        """The device time at which r falls to ``threshold`` (0 < threshold < 1)."""
        return self.start_ns + self.tau_ns * math.log(1.0 / threshold)


def settling_samples(settlings: list[Settling], start_ns: int, interval_ns: int,
                     total: int, threshold: float) -> int:
    """How many of the ``total`` sample intervals of a run starting at ``start_ns`` begin
    before every change in ``settlings`` has settled to ``threshold``."""
    if not settlings:
        return 0
    end = max(s.settled_at_ns(threshold) for s in settlings)
    return min(total, max(0, math.ceil((end - start_ns) / interval_ns)))
