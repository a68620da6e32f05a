"""Timing model: simulated time of every device phase, never read from a wall clock.

A pure leaf: imported by device/ (to advance the device clock) and host/ (to predict it).
"""

from spusim.timing.model import PROFILES, ConverterModel, LinkModel, Phase, SimClock, TimingModel

__all__ = ["PROFILES", "ConverterModel", "LinkModel", "Phase", "SimClock", "TimingModel"]
