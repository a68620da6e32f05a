"""The synchronous hybrid loop (TNGD's Algorithm 1) as a clock: nothing overlaps.

In Algorithm 1 the host computes the gradient and curvature at theta_k, uploads them, waits for
the device's estimate and only then updates theta: per iteration

    digital(k) -> transfer_in(k) -> dac(k) -> analog(k) -> adc(k) -> transfer_out(k)

with one exception: the device drifts on under the old programming while the host computes,
and a delay t_d holds the next upload until t_d after the measurement (the end of analog(k-1)).
So an iteration lasts max(digital, t_d - readout) + upload + analog + readout, where readout is
the previous iteration's. timing.pipeline.LoopClock times the pipelined loop (Eqs. 15-18)
instead, in which digital(k) overlaps the device's work. All times are integer ns.
"""

from __future__ import annotations

from spusim.timing.model import Phase
from spusim.timing.pipeline import IterationCosts


class SerialClock:
    """:meth:`add` places one iteration of the synchronous loop and returns its time, ns."""

    def __init__(self) -> None:
        self.iteration_ns: list[int] = []
        self._readout_ns: int | None = None  # adc + transfer_out of the previous iteration

    @property
    def now_ns(self) -> int:
        """When the latest estimate came back (0 before the first iteration)."""
        return sum(self.iteration_ns)

    def add(self, cost: IterationCosts) -> int:
        """Place one iteration; returns its time, from the previous estimate to this one."""
        wait = cost.digital_ns
        if self._readout_ns is not None:  # the upload waits t_d after the measurement
            wait = max(wait, cost.delay_ns - self._readout_ns)
        readout = cost.readout.get(Phase.ADC, 0) + cost.readout.get(Phase.TRANSFER_OUT, 0)
        took = (wait + cost.upload.get(Phase.TRANSFER_IN, 0) + cost.upload.get(Phase.DAC, 0)
                + cost.analog_ns + readout)
        self.iteration_ns.append(took)
        self._readout_ns = readout
        return took
