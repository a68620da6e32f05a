"""How thermodynamic linear algebra refuses or warns: a converter clipped a value.

A clipped coupling, bias or reading is a systematic error of unknown size (the value the chip
used is not the one asked for), so by default every routine raises :class:`ConverterClipped`
with the counts; ``on_clip="warn"`` returns the result with a :class:`ClippingWarning` instead.
"""

from __future__ import annotations

import warnings

ON_CLIP = ("raise", "warn")


class ConverterClipped(RuntimeError):
    """A DAC or the ADC clipped values during the operation.

    counts: {"dac_clipped": coupling values, "bias_clipped": bias or state values,
    "adc_clipped": readings} clipped so far.
    """

    def __init__(self, message: str, counts: dict[str, int]) -> None:
        super().__init__(message)
        self.counts = dict(counts)


class ClippingWarning(UserWarning):
    """A result computed although a converter clipped (``on_clip="warn"``): it is biased."""


def clipping_message(counts: dict[str, int], scaled: bool) -> str:
    """What clipped, how often, and what to do about it."""
    parts = [f"{name}={count}" for name, count in counts.items() if count]
    remedy = ("the readings left the ADC's range: lower kappa0 or ask the daemon for a wider "
              "adc_full_scale" if counts.get("adc_clipped") else
              "enable scale=True (the default) or shrink A and b")
    if not scaled and not counts.get("adc_clipped"):
        remedy = "pass scale=True (the default) to scale A and b into the converters' range"
    return (f"the device clipped values ({', '.join(parts)}): the result would be biased by an "
            f"unknown amount; {remedy}, or pass on_clip='warn' to get it anyway")


def check_on_clip(on_clip: str) -> None:
    if on_clip not in ON_CLIP:
        raise ValueError(f"on_clip must be one of {list(ON_CLIP)}, got {on_clip!r}")


def warn_clipped(counts: dict[str, int], scaled: bool) -> None:
    """Emit the :class:`ClippingWarning` of a result computed despite clipping."""
    warnings.warn(clipping_message(counts, scaled), ClippingWarning, stacklevel=3)
