"""The training loop: any optimizer of host/training/optimizers.py or host/training/tngd.py on a model, with both
clocks recorded every iteration.

    history = train(model, optimizer, load_digits(), iterations=200, batch_size=64)
    history.series("loss"), history.series("sim_time_ns"), history.rows()

Each :class:`IterationRecord` holds the loss and accuracy on the iteration's batch at theta_k
(before its update), the test loss and accuracy at theta_k every ``eval_every`` iterations, the
host's wall time of the step, and the simulated time:

- digital_ns: the host's own compute (gradient, curvature, preconditioner, update; not the time
  spent waiting for a device) as timing.digital.Measured(scale) prices it: its wall time times
  a stated factor (e.g. this host's speed relative to a target accelerator);
- iteration_ns: the iteration's time in the hybrid loop. For digital optimizers it is
  digital_ns; for TNGD the device's phase times (from its replies) and digital_ns go through
  timing.serial.SerialClock (Algorithm 1, synchronous) or timing.pipeline.LoopClock
  (``pipelined=True``, Fig. 1); sim_time_ns is its running total.

TNGD records also carry the device's report (host/training/tngd.py's DeviceStep: phase times, clipped
converter values, samples).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from spusim.training.data import Dataset, batches
from spusim.training.models import Model
from spusim.training.optimizers import Optimizer, StepReport
from spusim.training.tngd import DeviceStep
from spusim.timing.digital import Measured
from spusim.timing.pipeline import LoopClock
from spusim.timing.serial import SerialClock


@dataclass(frozen=True)
class IterationRecord:
    """One iteration (see the module doc). Times: seconds of host wall time, ns simulated."""

    iteration: int
    loss: float
    accuracy: float
    test_loss: float | None
    test_accuracy: float | None
    grad_norm: float
    direction_norm: float
    host_seconds: float
    digital_seconds: float
    digital_ns: int
    iteration_ns: int
    sim_time_ns: int
    info: dict[str, float] = field(default_factory=dict)
    device: DeviceStep | None = None

    def row(self) -> dict[str, Any]:
        """A flat dict of scalars (device fields prefixed ``device_``, phases by name), for
        CSV or JSON."""
        row = {key: value for key, value in asdict(self).items()
               if key not in ("info", "device")}
        row.update(self.info)
        if self.device is not None:
            for key, value in asdict(self.device).items():
                if isinstance(value, dict):
                    row.update({f"device_{phase}_ns": ns for phase, ns in value.items()})
                else:
                    row[f"device_{key}"] = value
        return row


@dataclass
class History:
    """A training run: per-iteration records, and the test loss and accuracy at the end."""

    optimizer: str
    records: list[IterationRecord]
    final_test_loss: float
    final_test_accuracy: float

    def series(self, name: str) -> np.ndarray:
        """One field over the iterations (NaN where it was not measured), e.g. "loss",
        "test_accuracy", "sim_time_ns", "device_adc_clipped"."""
        return np.array([row.get(name, np.nan) for row in self.rows()], dtype=float)

    def rows(self) -> list[dict[str, Any]]:
        return [record.row() for record in self.records]


def train(model: Model, optimizer: Optimizer, data: Dataset, iterations: int, *,
          batch_size: int = 64, seed: int = 0, eval_every: int | None = 10,
          digital: Measured | None = None,
          callback: Callable[[IterationRecord], None] | None = None) -> History:
    """Train ``model`` in place for ``iterations`` steps on minibatches of ``data.train``
    (shuffled from ``seed``, a fresh permutation each epoch). The test set is evaluated every
    ``eval_every`` iterations (None: only at the end). ``digital`` prices the host's compute
    (default: Measured(scale=1), this host's own time). ``callback`` sees each record."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    digital = digital or Measured()
    stream = batches(data.train, batch_size, seed)
    pipelined = bool(getattr(optimizer.preconditioner, "pipelined", False))
    clock = LoopClock() if pipelined else SerialClock()
    records: list[IterationRecord] = []
    sim_time_ns = 0
    for k in range(iterations):
        batch = next(stream)
        _, accuracy = model.evaluate(batch)
        test_loss = test_accuracy = None
        if eval_every and k % eval_every == 0:
            test_loss, test_accuracy = model.evaluate(data.test)
        step = optimizer.step(model, batch)
        digital_ns = digital.ns(step.digital_seconds)
        iteration_ns = _iteration_ns(step, digital_ns, clock)
        sim_time_ns += iteration_ns
        record = IterationRecord(k, step.loss, accuracy, test_loss, test_accuracy,
                                 step.grad_norm, step.direction_norm, step.host_seconds,
                                 step.digital_seconds, digital_ns, iteration_ns, sim_time_ns,
                                 step.info, step.device)
        records.append(record)
        if callback is not None:
            callback(record)
    final_loss, final_accuracy = model.evaluate(data.test)
    return History(optimizer.name, records, final_loss, final_accuracy)


def _iteration_ns(step: StepReport, digital_ns: int, clock: LoopClock | SerialClock) -> int:
    """The iteration's simulated time: digital only, or the hybrid loop's clock."""
    if not isinstance(step.device, DeviceStep):
        return digital_ns
    return clock.add(step.device.costs(digital_ns))
