"""What the device's converters do to values: DAC quantization and clipping of programmed
values, and the ADC's parameters for the kernels.

A signed converter of ``bits`` bits and full scale F has the codes k = -2^(bits-1) ...
2^(bits-1) - 1 and the step F / 2^(bits-1); a value beyond the range clips to its end, one
inside rounds to the nearest code, off by at most half a step. ``full_scale = None`` is an
ideal converter: values pass unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Quantizer:
    """A signed converter: ``bits`` of resolution over [-full_scale, full_scale) (state units).

    ``full_scale = None`` means ideal (no clipping, no rounding).
    """

    bits: int
    full_scale: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 52:
            raise ValueError(f"converter bits must be in 1..52, got {self.bits}")
        if self.full_scale is not None and not 0 < self.full_scale < np.inf:
            raise ValueError(f"full scale must be positive and finite, got {self.full_scale}")

    @property
    def step(self) -> float:
        """One LSB, or 0 for an ideal converter."""
        return 0.0 if self.full_scale is None else self.full_scale / 2 ** (self.bits - 1)

    def apply(self, values: np.ndarray) -> tuple[np.ndarray, int]:
        """The converted values (a new array) and how many of them clipped."""
        if self.full_scale is None:
            return np.array(values, dtype=np.float64), 0
        codes = np.round(np.asarray(values, dtype=np.float64) / self.step)
        lowest, highest = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        clipped = int(np.count_nonzero((codes < lowest) | (codes > highest)))
        return np.clip(codes, lowest, highest) * self.step, clipped
