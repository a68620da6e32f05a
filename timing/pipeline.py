"""The hybrid digital-analog loop of TNGD as a schedule: who does what, when, and what waits.

The loop is pipelined as in the TNGD paper's Fig. 1 and Eqs. 15-18, where the device solves with
the gradient and curvature of the previous iterate: in iteration k the host uploads the factors
it computed in iteration k-1, then computes the next ones while the device evolves, and finally
reads the device's estimate back. Two lanes, each doing one thing at a time:

    host:          transfer_in(k) ........ digital(k) ........ transfer_out(k)
    device:                 dac(k)  analog(k)  adc(k)
    device-delay:                             [t_d under the old programming, then held]

Dependencies: dac after transfer_in; analog after dac; adc after analog; digital(k) after the
estimate of iteration k-1 is back (it needs theta_k); transfer_out(k) after adc(k);
transfer_in(k+1) after digital(k) and no sooner than t_d after the measurement (the end of
analog(k)). So one iteration lasts transfer_in + max(digital, dac + analog + adc) + transfer_out
when t_d is short: a digital step longer than the analog run hides it, a shorter one does not.
All times are integer ns; nothing here reads a clock.

Between a readout and the next upload the device follows one rule, the emulator's (the daemon's
state evolves only while it runs): it runs t_d under the old programming, from the measurement
on, and is otherwise held. The host's compute time never evolves the state, however long it is;
so from one upload to the next the state evolves exactly t + t_d (:meth:`Schedule.evolved_ns`),
which is what the emulator runs (docs/timing.md, "Between a readout and the next upload").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from spusim.timing.model import Phase

HOST, DEVICE = "host", "device"
DELAY_LANE = "device-delay"  # the analog state drifting on while the device lane converts


@dataclass(frozen=True)
class IterationCosts:
    """Durations of one iteration's phases, ns.

    digital_ns: gradient and curvature factors on the host. upload: transfer_in and dac.
    analog_ns: the analog run t. readout: adc and transfer_out. delay_ns: t_d, the least time
    between a measurement and the next upload, during which the device keeps the old drift.
    """

    digital_ns: int
    upload: dict[Phase, int]
    analog_ns: int
    readout: dict[Phase, int]
    delay_ns: int = 0


@dataclass(frozen=True)
class Event:
    """One phase of one iteration on one lane, [start_ns, end_ns)."""

    lane: str
    phase: Phase
    iteration: int
    start_ns: int
    end_ns: int
    cause: Event | None = None  # the event whose end fixed this one's start (None: time 0)

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass(frozen=True)
class Schedule:
    """The loop laid out in time. ``iteration_ns[k]``: from estimate k-1 back to estimate k."""

    events: list[Event]
    iteration_ns: list[int]

    def critical_path(self, iteration: int = -1) -> list[Event]:
        """The chain of events that fixed when ``iteration``'s estimate came back, in order:
        back from the iteration's latest-ending transfer_out (of several chips', the last)
        through each event's cause, to the previous iteration's estimate (or time 0).
        ``iteration`` indexes the iterations that have a transfer_out (-1: the last)."""
        ends = [e for e in self.events if e.phase == Phase.TRANSFER_OUT]
        k = sorted({e.iteration for e in ends})[iteration]
        end = max((e for e in ends if e.iteration == k), key=lambda e: e.end_ns)
        since = max((e.end_ns for e in ends if e.iteration == k - 1), default=0)
        path: list[Event] = []
        event: Event | None = end
        while event is not None and event.end_ns > since:
            path.append(event)
            event = event.cause
        return path[::-1]

    def dominant_phase(self, iteration: int = -1) -> Phase:
        """The phase with the most time on ``iteration``'s critical path."""
        totals = phase_sums(self.critical_path(iteration))
        return max(totals, key=lambda phase: totals[phase])

    def phase_totals(self) -> dict[Phase, int]:
        """Time spent in each phase over the whole schedule, ns (overlapping phases both count)."""
        return phase_sums(self.events)

    @property
    def total_ns(self) -> int:
        return max(event.end_ns for event in self.events)

    def evolved_ns(self, iteration: int) -> int:
        """Analog time the device's state evolved under ``iteration``'s programming: its run t
        and the delay t_d after it, ns (the idle rest of the gap to the next upload is held)."""
        return sum(e.duration_ns for e in self.events if e.iteration == iteration
                   and e.phase in (Phase.ANALOG, Phase.DELAY))


def phase_sums(events: Iterable[Event]) -> dict[Phase, int]:
    """The events' durations summed phase by phase, ns (a phase without events is absent)."""
    totals: dict[Phase, int] = {}
    for event in events:
        totals[event.phase] = totals.get(event.phase, 0) + event.duration_ns
    return totals


class Timeline:
    """Events placed one after another in :attr:`schedule` (the clocks' common part)."""

    def __init__(self) -> None:
        self.schedule = Schedule([], [])

    def _place(self, lane: str, phase: Phase, k: int, duration: int,
               *after: Event | None) -> Event:
        """Start at the latest end of the given events (no earlier than 0)."""
        start, cause = 0, None
        for event in after:
            if event is not None and event.end_ns > start:
                start, cause = event.end_ns, event
        placed = Event(lane, phase, k, start, start + duration, cause)
        self.schedule.events.append(placed)
        return placed


class LoopClock(Timeline):
    """The loop's clock, one iteration at a time: :meth:`add` places an iteration's phases
    after the previous ones and returns the time it took, ns.

    The first digital step (iteration -1, the factors uploaded by iteration 0) is placed at
    time 0 with the first iteration's ``digital_ns``. :attr:`schedule` is everything so far.
    """

    def __init__(self) -> None:
        super().__init__()
        self._digital: Event | None = None  # the latest digital step
        self._estimate: Event | None = None  # transfer_out of the previous iteration
        self._measurement: Event | None = None  # analog of the previous iteration
        self._device: Event | None = None  # the device lane's latest event

    @property
    def now_ns(self) -> int:
        """When the latest estimate came back (0 before the first iteration)."""
        return self._estimate.end_ns if self._estimate else 0

    def add(self, cost: IterationCosts) -> int:
        """Place one iteration; returns its time, from the previous estimate to this one."""
        k = len(self.schedule.iteration_ns)
        if self._digital is None:
            self._digital = self._place(HOST, Phase.DIGITAL, -1, cost.digital_ns)
        delay = None
        if self._measurement is not None and cost.delay_ns:
            delay = self._place(DELAY_LANE, Phase.DELAY, k - 1, cost.delay_ns, self._measurement)
        upload = self._place(HOST, Phase.TRANSFER_IN, k, cost.upload.get(Phase.TRANSFER_IN, 0),
                             self._estimate, self._digital, delay)
        dac = self._place(DEVICE, Phase.DAC, k, cost.upload.get(Phase.DAC, 0), upload,
                          self._device)
        analog = self._place(DEVICE, Phase.ANALOG, k, cost.analog_ns, dac)
        adc = self._place(DEVICE, Phase.ADC, k, cost.readout.get(Phase.ADC, 0), analog)
        self._digital = self._place(HOST, Phase.DIGITAL, k, cost.digital_ns, upload,
                                    self._estimate)
        download = self._place(HOST, Phase.TRANSFER_OUT, k,
                               cost.readout.get(Phase.TRANSFER_OUT, 0), self._digital, adc)
        took = download.end_ns - self.now_ns
        self.schedule.iteration_ns.append(took)
        self._device, self._estimate, self._measurement = adc, download, analog
        return took


def schedule(costs: Sequence[IterationCosts]) -> Schedule:
    """Lay out ``len(costs)`` iterations of the loop (see :class:`LoopClock`)."""
    clock = LoopClock()
    for cost in costs:
        clock.add(cost)
    return clock.schedule
