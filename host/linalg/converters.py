"""What the device's converters do to the values the host sends, as docs/protocol.md specifies
them (signed, ``bits`` bits over +-full_scale, round to the nearest code, clip at the ends), and
the scale that fits a matrix or vector into a converter's range.

The host needs this to scale its problem into range and to know the values the chip actually
programmed (the DAC's rounding is deterministic), so that a result's error bound can include
the quantization. Mismatch and offsets are random per chip: only their size is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Converter:
    """One converter bank: ``bits`` of resolution over [-full_scale, full_scale) (device
    units); full_scale None is ideal (no rounding, no clipping)."""

    bits: int
    full_scale: float | None

    @classmethod
    def from_config(cls, config: dict[str, Any], bank: str, range_key: str) -> Converter:
        """The bank ``bank`` ("dac" or "adc") of ``hello``'s config, with range ``range_key``."""
        full_scale = config.get(range_key)
        return cls(int(config["timing"][bank]["bits"]),
                   None if full_scale is None else float(full_scale))

    @property
    def step(self) -> float:
        """One LSB (device units); 0 when ideal."""
        return 0.0 if self.full_scale is None else self.full_scale / 2 ** (self.bits - 1)

    @property
    def largest(self) -> float:
        """The largest magnitude programmed without clipping (inf when ideal)."""
        return np.inf if self.full_scale is None else self.full_scale - self.step

    def programmed(self, values: np.ndarray) -> np.ndarray:
        """The values the converter realises for ``values`` (device units)."""
        if self.full_scale is None:
            return np.array(values, dtype=float)
        codes = np.round(np.asarray(values, dtype=float) / self.step)
        top = 2 ** (self.bits - 1)
        return np.clip(codes, -top, top - 1) * self.step

    def scale_for(self, values: np.ndarray) -> float:
        """s > 0 such that s * values just fits the range (1 when ideal or all zero): the
        largest magnitude lands on the largest code, using every bit of resolution."""
        largest = float(np.max(np.abs(values))) if np.size(values) else 0.0
        if self.full_scale is None or largest == 0.0:
            return 1.0
        return self.largest / largest


@dataclass(frozen=True)
class Converters:
    """The device's three banks: coupling DAC, bias/state DAC and ADC."""

    coupling: Converter
    bias: Converter
    adc: Converter

    @classmethod
    def of(cls, config: dict[str, Any]) -> Converters:
        return cls(Converter.from_config(config, "dac", "dac_full_scale"),
                   Converter.from_config(config, "dac", "bias_full_scale"),
                   Converter.from_config(config, "adc", "adc_full_scale"))
