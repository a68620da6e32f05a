"""K chips as one preconditioner: one iteration's device part when the parameters are split into
K blocks and each block is solved on its own chip (host/training/multichip.py).

Each chip i does what one chip does, on its own block: transfer_in_i, dac_i, analog_i, adc_i,
transfer_out_i (its :class:`~spusim.timing.pipeline.IterationCosts`, from its daemon's
replies). The chips work concurrently, so their DAC, analog and ADC phases overlap; the link
decides whether their transfers do:

- ``"separate"``: a link per chip (each chip on its own port): nothing waits for another chip,
  and the device part lasts max_i (transfer_in_i + dac_i + analog_i + adc_i + transfer_out_i);
- ``"shared"``: one full-duplex link from the host to all chips (a bus or a switch port):
  uploads go one after another in chip order, readouts one after another as the chips finish.
  For K equal chips the device part lasts dac + analog + adc + max(K transfer_in +
  transfer_out, transfer_in + K transfer_out).

The iteration's time is the critical path (timing.pipeline.Schedule.critical_path): the chain
of events that fixed when the last estimate came back. :func:`combine` reduces the K chips to
the phases on that path, one IterationCosts that timing.serial.SerialClock (Algorithm 1) places
as it would one chip's: its device part then lasts exactly the K-chip schedule's.
timing.pipeline.LoopClock (the pipelined loop) overlaps the host's digital step with the device
part between the path's upload and readout, an approximation: off the path a chip may finish
its upload earlier. All times are integer ns; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence

from spusim.timing.model import Phase
from spusim.timing.pipeline import Event, IterationCosts, Schedule, Timeline, phase_sums

LINKS = ("separate", "shared")


def check_link(link: str) -> str:
    if link not in LINKS:
        raise ValueError(f"link must be one of {list(LINKS)}, got {link!r}")
    return link


def chips_schedule(chips: Sequence[IterationCosts], link: str = "separate") -> Schedule:
    """The device part of one iteration on ``len(chips)`` chips, from the first upload (time
    0) to the last readout: lanes ``chip{i}`` (DAC, analog, ADC) and the links (``link{i}``
    per chip, or ``link-in`` and ``link-out`` shared). ``iteration_ns`` holds its length."""
    if not chips:
        raise ValueError("no chips")
    return _ChipsTimeline(chips, check_link(link) == "shared").schedule


class _ChipsTimeline(Timeline):
    """The K chips' events placed by :func:`chips_schedule`'s rules."""

    def __init__(self, chips: Sequence[IterationCosts], shared: bool) -> None:
        super().__init__()
        upload: Event | None = None
        converted = []  # each chip's ADC event
        for i, chip in enumerate(chips):
            upload = self._place("link-in" if shared else f"link{i}", Phase.TRANSFER_IN, 0,
                                 chip.upload.get(Phase.TRANSFER_IN, 0),
                                 upload if shared else None)
            dac = self._place(f"chip{i}", Phase.DAC, 0, chip.upload.get(Phase.DAC, 0), upload)
            analog = self._place(f"chip{i}", Phase.ANALOG, 0, chip.analog_ns, dac)
            converted.append(self._place(f"chip{i}", Phase.ADC, 0,
                                         chip.readout.get(Phase.ADC, 0), analog))
        download: Event | None = None
        for i in sorted(range(len(chips)), key=lambda i: (converted[i].end_ns, i)):
            download = self._place("link-out" if shared else f"link{i}", Phase.TRANSFER_OUT,
                                   0, chips[i].readout.get(Phase.TRANSFER_OUT, 0),
                                   converted[i], download if shared else None)
        self.schedule.iteration_ns.append(self.schedule.total_ns)


def combine(chips: Sequence[IterationCosts], link: str = "separate") -> IterationCosts:
    """One iteration on K chips as one chip's costs: the digital step (the host's, the same
    for every chip), the phases on the critical path of :func:`chips_schedule` summed by
    phase, and the longest delay t_d."""
    digital = {chip.digital_ns for chip in chips}
    if len(digital) > 1:
        raise ValueError(f"the chips disagree on the host's digital step: {sorted(digital)} ns")
    totals = phase_sums(chips_schedule(chips, link).critical_path())
    return IterationCosts(
        digital.pop(),
        {p: totals[p] for p in (Phase.TRANSFER_IN, Phase.DAC) if totals.get(p)},
        totals.get(Phase.ANALOG, 0),
        {p: totals[p] for p in (Phase.ADC, Phase.TRANSFER_OUT) if totals.get(p)},
        max(chip.delay_ns for chip in chips))
