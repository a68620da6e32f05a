"""Faults the daemon injects on purpose, so that host software can be tested against failures.

Three kinds (docs/reliability.md describes each and the client's answer to it):

* Transmission faults act on a reply as it leaves the daemon, after it was produced (and, for a
  device op carrying a session, cached): ``drop_reply`` loses it; ``delay_reply`` holds it back
  ``delay_ms`` milliseconds of wall time.
* Daemon faults act on device ops: ``busy`` answers BUSY without executing the op; ``reset``
  power-cycles the device before the op executes (new boot id, clock back to 0, programmed
  state gone); ``crash_run`` kills the daemon process half-way through a ``run``.
* Readout faults change what ``read`` returns (the ADC path; the analog dynamics are not
  altered): ``stuck_cells`` pins cells at fixed values, ``rail`` saturates every averaged
  reading at +-rail (second moments at rail^2), ``adc_glitch`` adds +-``glitch_size`` to one
  random element of the mean.

Every fault that fires at random is a :class:`Trigger`: probability p each time it is
consulted, at most ``count`` times. One random stream seeded by ``seed`` makes the decisions,
so the same sequence of requests meets the same faults.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from spusim.protocol import FAULT_TRIGGERS


@dataclass(frozen=True)
class Trigger:
    """Fires with probability ``p`` each time it is consulted, at most ``count`` times
    (None: no limit). ``Trigger()`` never fires."""

    p: float = 0.0
    count: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"a fault probability must be in [0, 1], got {self.p}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"a fault count must be positive, got {self.count}")

    @classmethod
    def from_wire(cls, value: dict[str, Any] | None) -> Trigger:
        """``nil`` (off) or ``{"p": probability (default 1), "count": nil or int}``."""
        if value is None:
            return cls()
        return cls(float(value.get("p", 1.0)), value.get("count"))

    def describe(self) -> dict[str, Any] | None:
        return {"p": self.p, "count": self.count} if self.p > 0 else None


@dataclass(frozen=True)
class FaultConfig:
    """The faults a daemon injects. The default injects none.

    seed: seed of the random stream that decides when triggers fire.
    drop_reply, delay_reply, busy, reset, crash_run, adc_glitch: triggers (module docstring).
    delay_ms: how long a delayed reply is held back, ms of wall time.
    glitch_size: size of an ADC glitch, state units.
    stuck_cells: (cell index, value) pairs; cells at or beyond N are ignored.
    rail: readings saturate at +-rail (state units); None: no saturation.
    """

    seed: int = 0
    drop_reply: Trigger = field(default_factory=Trigger)
    delay_reply: Trigger = field(default_factory=Trigger)
    busy: Trigger = field(default_factory=Trigger)
    reset: Trigger = field(default_factory=Trigger)
    crash_run: Trigger = field(default_factory=Trigger)
    adc_glitch: Trigger = field(default_factory=Trigger)
    delay_ms: float = 100.0
    glitch_size: float = 10.0
    stuck_cells: tuple[tuple[int, float], ...] = ()
    rail: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.delay_ms < float("inf"):
            raise ValueError(f"delay_ms must be >= 0 and finite, got {self.delay_ms}")
        if self.rail is not None and not 0 < self.rail < float("inf"):
            raise ValueError(f"rail must be positive and finite, got {self.rail}")
        if any(index < 0 for index, _ in self.stuck_cells):
            raise ValueError("stuck cell indices must be >= 0")

    @property
    def active(self) -> bool:
        """Whether any fault is switched on."""
        return (any(self.trigger(name).p > 0 for name in FAULT_TRIGGERS)
                or bool(self.stuck_cells) or self.rail is not None)

    def trigger(self, name: str) -> Trigger:
        value: Trigger = getattr(self, name)
        return value

    def describe(self) -> dict[str, Any]:
        """The wire form: the arguments of ``inject_fault`` that set this configuration."""
        wire: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Trigger):
                value = value.describe()
            elif item.name == "stuck_cells":
                value = [[index, level] for index, level in value]
            wire[item.name] = value
        return wire

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> FaultConfig:
        """The configuration an ``inject_fault`` request's validated ``args`` describe."""
        return cls(seed=args["seed"],
                   **{name: Trigger.from_wire(args[name]) for name in FAULT_TRIGGERS},
                   delay_ms=float(args["delay_ms"]), glitch_size=float(args["glitch_size"]),
                   stuck_cells=tuple((int(i), float(v)) for i, v in args["stuck_cells"]),
                   rail=None if args["rail"] is None else float(args["rail"]))


class FaultInjector:
    """Decides which faults fire and applies the readout faults; counts what it injected.

    Consulted from the daemon's network thread and its device worker, hence the lock.
    """

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        """Switch to ``config``: restart the random stream, the counts and the counters."""
        with self._lock:
            self._config = config
            self._rng = random.Random(config.seed)
            self._left = {name: config.trigger(name).count for name in FAULT_TRIGGERS}
            # the faults that can fire at all: the others are answered without the lock
            self._armed = frozenset(name for name in FAULT_TRIGGERS if config.trigger(name).p)
            self._injected = dict.fromkeys(FAULT_TRIGGERS, 0)

    @property
    def config(self) -> FaultConfig:
        return self._config

    def fires(self, name: str) -> bool:
        """Whether fault ``name`` (one of FAULT_TRIGGERS) strikes now; consumes its count."""
        if name not in self._armed:  # p = 0: never, and no random number drawn
            return False
        with self._lock:
            trigger, left = self._config.trigger(name), self._left[name]
            if trigger.p == 0 or left == 0 or self._rng.random() >= trigger.p:
                return False
            if left is not None:
                self._left[name] = left - 1
            self._injected[name] += 1
            return True

    def corrupt_readout(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``read``'s arrays (mean (N,), optional second_moment (N, N)) as the faulty ADC path
        delivers them: stuck cells, then rail saturation, then a glitch. New arrays."""
        config = self._config
        glitch = self.fires("adc_glitch")
        if not (glitch or config.stuck_cells or config.rail is not None):
            return arrays
        mean = np.array(arrays["mean"], dtype=np.float64)
        moment = arrays.get("second_moment")
        moment = None if moment is None else np.array(moment, dtype=np.float64)
        stuck = [(index, level) for index, level in config.stuck_cells if index < mean.size]
        for index, level in stuck:
            mean[index] = level
        if moment is not None:
            for index, level in stuck:  # E[x_i x_j] = v_i E[x_j], E[x_i^2] = v_i^2
                moment[index, :] = level * mean
                moment[:, index] = level * mean
        if config.rail is not None:
            np.clip(mean, -config.rail, config.rail, out=mean)
            if moment is not None:
                np.clip(moment, -config.rail**2, config.rail**2, out=moment)
        if glitch and mean.size:
            with self._lock:
                index, sign = self._rng.randrange(mean.size), self._rng.choice((-1.0, 1.0))
            mean[index] += sign * config.glitch_size
        return {"mean": mean} if moment is None else {"mean": mean, "second_moment": moment}

    def status(self) -> dict[str, Any]:
        """For ``status``: whether faults are on, the configuration, and how many struck."""
        with self._lock:
            return {"active": self._config.active, "config": self._config.describe(),
                    "injected": dict(self._injected)}
