"""The synchronous hybrid loop (TNGD's Algorithm 1) as a clock: nothing overlaps but the delay.

In Algorithm 1 the host computes the gradient and curvature at theta_k, uploads them, waits for
the device's estimate and only then updates theta: per iteration

    digital(k) -> transfer_in(k) -> dac(k) -> analog(k) -> adc(k) -> transfer_out(k)

Between a readout and the next upload the device follows the emulator's rule (timing.pipeline's
module doc): it runs a delay t_d under the old programming from the measurement (the end of
analog(k-1)) on, and is otherwise held, so the host's compute time never evolves its state. The
delay runs while the readout converts and the host computes; the next upload waits for it. So
an iteration lasts

    max(digital, t_d - readout) + upload + analog + readout

where readout (adc + transfer_out) is the previous iteration's, and there is no delay before
the first upload (the emulator runs none: Algorithm 1 starts from g~_0 = grad l(theta_0)).
timing.pipeline.LoopClock times the pipelined loop (Eqs. 15-18) instead, in which digital(k)
overlaps the device's work. All times are integer ns.
"""

from __future__ import annotations

from spusim.timing.model import Phase
from spusim.timing.pipeline import DELAY_LANE, DEVICE, HOST, Event, IterationCosts, Timeline


class SerialClock(Timeline):
    """:meth:`add` places one iteration of the synchronous loop and returns its time, ns;
    :attr:`schedule` holds every phase as an event (lanes host, device, device-delay)."""

    def __init__(self) -> None:
        super().__init__()
        self._estimate: Event | None = None  # transfer_out of the previous iteration
        self._measurement: Event | None = None  # analog of the previous iteration

    @property
    def iteration_ns(self) -> list[int]:
        """Each iteration's time, from the previous estimate to its own, ns."""
        return self.schedule.iteration_ns

    @property
    def now_ns(self) -> int:
        """When the latest estimate came back (0 before the first iteration)."""
        return self._estimate.end_ns if self._estimate else 0

    def add(self, cost: IterationCosts) -> int:
        """Place one iteration; returns its time, from the previous estimate to this one."""
        k = len(self.schedule.iteration_ns)
        digital = self._place(HOST, Phase.DIGITAL, k, cost.digital_ns, self._estimate)
        delay = None
        if self._measurement is not None and cost.delay_ns:
            delay = self._place(DELAY_LANE, Phase.DELAY, k - 1, cost.delay_ns, self._measurement)
        upload = self._place(HOST, Phase.TRANSFER_IN, k, cost.upload.get(Phase.TRANSFER_IN, 0),
                             digital, delay)
        dac = self._place(DEVICE, Phase.DAC, k, cost.upload.get(Phase.DAC, 0), upload)
        analog = self._place(DEVICE, Phase.ANALOG, k, cost.analog_ns, dac)
        adc = self._place(DEVICE, Phase.ADC, k, cost.readout.get(Phase.ADC, 0), analog)
        download = self._place(HOST, Phase.TRANSFER_OUT, k,
                               cost.readout.get(Phase.TRANSFER_OUT, 0), adc)
        took = download.end_ns - self.now_ns
        self.schedule.iteration_ns.append(took)
        self._estimate, self._measurement = download, analog
        return took
