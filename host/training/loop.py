"""The training loop: any optimizer of host/training/optimizers.py or host/training/tngd.py on a
torch model, with both clocks recorded every iteration.

    model = mlp(64, 10)
    history = train(model, NGD(model), load_digits(), iterations=200, batch_size=64)
    history.series("loss"), history.series("sim_time_ns"), history.rows()

Each :class:`IterationRecord` holds the loss and accuracy on the iteration's batch at theta_k
(before its update), the test loss and accuracy at theta_k every ``eval_every`` iterations, the
host's wall time of the step, and the simulated time:

- digital_ns: the digital step (gradient, curvature, preconditioner, update; not the time spent
  waiting for a device) as the digital clock prices it. By default the clock is
  timing.digital's roofline on the TNGD paper's A100 (``parse_digital("roofline:a100")``),
  priced from the work the step did, counted (host/training/work.py: FLOPs, bytes, sequential
  model calls): the same seed gives the same simulated time to the nanosecond on any machine.
  ``digital=Measured(scale)`` prices the host's own wall time times a stated factor instead,
  which varies from run to run; History.clock names the clock used;
- iteration_ns: the iteration's time in the hybrid loop. For digital optimizers it is
  digital_ns; for TNGD the device's phase times (from its replies) and digital_ns go through
  timing.serial.SerialClock (Algorithm 1, synchronous) or timing.pipeline.LoopClock
  (``pipelined=True``, Fig. 1); sim_time_ns is its running total.

TNGD records also carry the device's report (host/training/tngd.py's DeviceStep: phase times, clipped
converter values, samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

from spusim.training.data import Dataset, batches
from spusim.training.losses import Loss
from spusim.training.optimizers import FirstOrder, NaturalGradient, StepReport, name_of
from spusim.training.tngd import TNGD, DeviceStep
from spusim.timing.digital import DigitalClock, parse_digital
from spusim.timing.pipeline import LoopClock
from spusim.timing.serial import SerialClock


@dataclass(frozen=True)
class IterationRecord:
    """One iteration (see the module doc). Times: seconds of host wall time, ns simulated."""

    iteration: int
    loss: float
    accuracy: float | None
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
    """A training run: per-iteration records, and the test loss and accuracy at the end (NaN
    if the run was interrupted: ``interrupted`` True, the records those completed)."""

    optimizer: str
    records: list[IterationRecord]
    final_test_loss: float
    final_test_accuracy: float
    interrupted: bool = False
    clock: str = ""

    def series(self, name: str) -> np.ndarray:
        """One field over the iterations (NaN where it was not measured), e.g. "loss",
        "test_accuracy", "sim_time_ns", "device_adc_clipped"."""
        return np.array([row.get(name, np.nan) for row in self.rows()], dtype=float)

    def rows(self) -> list[dict[str, Any]]:
        return [record.row() for record in self.records]


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorDataset, loss: str = "cross_entropy",
             chunk: int = 1000) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on all of ``data``, in chunks of ``chunk`` samples
    (accuracy NaN for regression)."""
    fn = Loss(loss)
    dtype = next(model.parameters()).dtype
    total, correct, n = 0.0, 0.0, len(data)
    for start in range(0, n, chunk):
        x, y = data[start:start + chunk]
        y = fn.targets(y, dtype)
        z = model(x.to(dtype) if x.is_floating_point() else x)
        total += float(fn.value(z, y)) * len(y)
        accuracy = fn.accuracy(z, y)
        correct += math.nan if accuracy is None else accuracy * len(y)
    return total / n, correct / n


def train(model: nn.Module, optimizer: NaturalGradient | FirstOrder, data: Dataset,
          iterations: int, *, batch_size: int = 64, seed: int = 0, eval_every: int | None = 10,
          digital: DigitalClock | None = None,
          callback: Callable[[IterationRecord], None] | None = None) -> History:
    """Train ``model`` (the module ``optimizer`` steps) in place for ``iterations`` steps on
    minibatches of ``data.train`` (shuffled from ``seed``, a fresh permutation each epoch). The
    test set is evaluated every ``eval_every`` iterations (None: only at the end). ``digital``
    prices the digital step (default: ``parse_digital()``, the A100 roofline on counted work;
    a measured clock turns the optimizer's work counting off, so as not to time it).
    ``callback`` sees each record. Ctrl-C (KeyboardInterrupt) ends the run early: the
    History then holds the iterations completed, ``interrupted`` True."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    loss = optimizer.loss_fn.name
    digital = digital or parse_digital()
    optimizer.work.enabled = not digital.measured
    stream = batches(data.train, batch_size, seed)
    pipelined = isinstance(optimizer, TNGD) and optimizer.pipelined
    clock = LoopClock() if pipelined else SerialClock()
    records: list[IterationRecord] = []
    sim_time_ns = 0
    try:
        for k in range(iterations):
            x, y = next(stream)
            test_loss = test_accuracy = None
            if eval_every and k % eval_every == 0:
                test_loss, test_accuracy = evaluate(model, data.test, loss)
            optimizer.step(x, y)
            step = optimizer.report
            assert step is not None
            digital_ns = digital.price(step.work, step.digital_seconds)
            iteration_ns = _iteration_ns(step, digital_ns, clock)
            sim_time_ns += iteration_ns
            record = IterationRecord(k, step.loss, step.accuracy, test_loss, test_accuracy,
                                     step.grad_norm, step.direction_norm, step.host_seconds,
                                     step.digital_seconds, digital_ns, iteration_ns,
                                     sim_time_ns, step.info, step.device)
            records.append(record)
            if callback is not None:
                callback(record)
    except KeyboardInterrupt:
        return History(name_of(optimizer), records, math.nan, math.nan, interrupted=True,
                       clock=digital.label)
    final_loss, final_accuracy = evaluate(model, data.test, loss)
    return History(name_of(optimizer), records, final_loss, final_accuracy, clock=digital.label)


def _iteration_ns(step: StepReport, digital_ns: int, clock: LoopClock | SerialClock) -> int:
    """The iteration's simulated time: digital only, or the hybrid loop's clock."""
    if not isinstance(step.device, DeviceStep):
        return digital_ns
    return clock.add(step.device.costs(digital_ns))
