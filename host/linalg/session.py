"""One linear-algebra operation's use of the device: the ops it sends, the clipping the device
reports for each, and the simulated device time it costs.

Every routine in this package goes through a :class:`Session`, so none can drop a count: a
clipped coupling or bias refuses at once (before any sampling time is spent) and a clipped
reading at the end of the run that saw it, unless ``on_clip="warn"``, in which case the
:meth:`Session.finish` warns once with the totals.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spusim.driver.client import Device, Readout
from spusim.linalg.converters import Converters
from spusim.linalg.errors import ConverterClipped, check_on_clip, clipping_message, warn_clipped


class Session:
    """Device ops for one operation, with clipping counted and checked.

    on_clip: "raise" (:class:`ConverterClipped` at the first clip) or "warn". scaled: whether
    the host scaled the problem into the DACs' range (for the error message).
    """

    def __init__(self, device: Device, on_clip: str, scaled: bool) -> None:
        check_on_clip(on_clip)
        self.device, self.on_clip, self.scaled = device, on_clip, scaled
        self.converters = Converters.of(device.config)
        self.kappa0 = float(device.config["kappa0"])
        self.counts = {"dac_clipped": 0, "bias_clipped": 0, "adc_clipped": 0}
        self.settle_ns = 0  # longest settling time of a programmed value (finite bandwidth)
        self._start_ns, self._start_phases = device.sim_time_ns, device.phase_ns

    def require_noise(self, operation: str) -> None:
        """ValueError unless the device has thermal noise (kappa0 > 0), which ``operation``
        reads its answer from."""
        if self.kappa0 <= 0:
            raise ValueError(f"{operation} needs thermal noise: this device runs with "
                             "kappa0 = 0")

    def program(self, A: np.ndarray, *, integrator: str | None = None,
                drift: str = "symmetric") -> None:
        reply = self.device.program(A, integrator=integrator, drift=drift)
        self.settle_ns = max(self.settle_ns, int(reply.get("settle_ns", 0)))
        self._count("dac_clipped", reply.get("dac_clipped", 0))

    def set_bias(self, b: np.ndarray) -> None:
        reply = self.device.set_bias(b)
        self.settle_ns = max(self.settle_ns, int(reply.get("settle_ns", 0)))
        self._count("bias_clipped", reply.get("dac_clipped", 0))

    def set_state(self, x: np.ndarray) -> None:
        self._count("bias_clipped", self.device.set_state(x).get("dac_clipped", 0))

    def run(self, duration_ns: int, **options: Any) -> None:
        self._count("adc_clipped", self.device.run(duration_ns, **options).get("adc_clipped", 0))

    def read(self, *, second_moments: bool = False, lag_moment: bool = False) -> Readout:
        return self.device.read(second_moments=second_moments, lag_moment=lag_moment)

    def duration_ns(self, t_tau: float) -> int:
        return self.device.duration_ns(t_tau)

    def _count(self, name: str, clipped: int) -> None:
        self.counts[name] += int(clipped)
        if clipped and self.on_clip == "raise":
            raise ConverterClipped(clipping_message(self.counts, self.scaled), self.counts)

    def finish(self) -> dict[str, Any]:
        """Warn if anything clipped (``on_clip="warn"``); the operation's device-time costs:
        device_time_ns, phase_ns and sim_time_ns."""
        if any(self.counts.values()):
            warn_clipped(self.counts, self.scaled)
        device = self.device
        phases = {phase: ns - self._start_phases.get(phase, 0)
                  for phase, ns in device.phase_ns.items()
                  if ns != self._start_phases.get(phase, 0)}
        return {"device_time_ns": device.sim_time_ns - self._start_ns, "phase_ns": phases,
                "sim_time_ns": device.sim_time_ns}
