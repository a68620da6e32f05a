"""Thermodynamic natural gradient descent (TNGD, arXiv 2405.13817, Algorithm 1) on an SPU, as
a torch optimizer:

    with Device.spawn(kappa0=1e-3) as device:
        opt = TNGD(model, device=device, loss="cross_entropy", lr=0.01, damping=0.01, t=50.0)
        for x, y in loader:
            loss = opt.step(x, y)   # forward, gradient, factors, device solve, update

Each step the host computes the gradient g and the curvature in factored form C = J^T H J (the
GGN: J = J_f ((b d_z) x N) from torch.func, H = H_L / b; or the empirical Fisher;
host/training/curvature.py) and the device solves (C + lambda I) x = g by letting its state
relax under

    dx = -((C + lambda I) x - g) dt/tau + sqrt(2 kappa0/tau) dW        (Eq. 15, damping explicit)

for an analog time t; the state read back is the natural-gradient estimate, which the update
rule (SGD with momentum, or ``update=Adam(lr, betas=(0, 0))``: TNGD-Adam as the paper ran it)
applies. The paper's typos are corrected: C = (1/b) J_f^T H_L J_f with J_f of shape (b d_z) x N
(Eq. 16's order; Eqs. 9 and 22 write the transpose), and the device integrates with the drift
sign above (Euler-Maruyama at the daemon's em_step, as the paper does, or on request the exact
transition of the factored coupling).

The wire is float64: a float32 model's factors and gradient are computed in float32, uploaded
as float64, and the estimate is cast back to float32 for the update.

One device solve (:class:`ThermodynamicNGD`, the only code here that calls the device), in
order:

1. delay (t_d > 0, not on the first step): run t_d under the previous step's programming, the
   analog state drifting on between a measurement and the next upload (section 4, Fig. 4b);
2. upload: ``program_factored(J, H, damping=lambda)`` and ``set_bias(g)``; the state is kept
   from the previous step (warm start) or reset to g by ``set_state(g)``. Algorithm 1's rule by
   default (``warm_start=None``): reset when t_d = 0, kept when t_d > 0; ``warm_start`` True
   or False forces either. Reset, the estimate follows the SGD (t = 0) to NGD (t -> infinity)
   interpolation <x(t)> = e^{-At} g + (I - e^{-At}) A^-1 g. The first step always sets the
   state to g (Algorithm 1: g~_0 = grad l(theta_0)), and so does the first after the number of
   trainable parameters changed or a ``load_state_dict``;
3. analog run of t (rounded up to whole ADC sample intervals, at least one);
4. readout: ``"final"`` reads the last ADC sample (the state at t: a run of t minus one
   interval unrecorded, then one recorded interval), ``"average"`` the mean of every sample of
   the window.

``pipelined=True`` uploads the gradient and curvature of the previous step instead of the
current one (Eqs. 15-18, Fig. 1: the device solves with theta_{k-1}'s factors while the host
computes theta_k's), the loop that timing.pipeline.LoopClock times; the default is Algorithm 1's
synchronous loop. Every device call's simulated time is collected per phase in a
:class:`DeviceStep`, from which the training loop builds the iteration's timing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from spusim.driver.client import Device
from spusim.training.curvature import Factors, factors
from spusim.training.linearization import Linearization, ParameterSet
from spusim.training.optimizers import Direction, NaturalGradient
from spusim.training.schedules import Schedule, value
from spusim.timing.model import Phase
from spusim.timing.pipeline import IterationCosts

READOUTS = ("final", "average")


@dataclass(frozen=True)
class DeviceStep:
    """The device's part of one TNGD step, from its replies.

    upload: transfer_in and dac of the factors, the bias and
    any state (ns); analog_ns: the run of t; readout: adc and transfer_out (ns); delay_ns: the
    run of t_d under the old programming. total_ns: the device clock's advance over the
    step. dac_clipped / adc_clipped: values the converters clipped (uploads; ADC readings of
    the step's runs). samples: ADC samples averaged into the estimate. elements: programmed
    coupling elements, m (m + 2N).
    """

    upload: dict[Phase, int]
    analog_ns: int
    readout: dict[Phase, int]
    delay_ns: int
    total_ns: int
    dac_clipped: int
    adc_clipped: int
    samples: int
    elements: int

    def costs(self, digital_ns: int) -> IterationCosts:
        """The step's phases for timing.pipeline.LoopClock (or timing.serial.SerialClock)."""
        return IterationCosts(digital_ns, self.upload, self.analog_ns, self.readout,
                              self.delay_ns)


class _PhaseMeter:
    """Device time per phase since the last :meth:`take`, from Device.phase_ns."""

    def __init__(self, device: Device) -> None:
        self._device = device
        self._last = device.phase_ns

    def take(self) -> dict[Phase, int]:
        now = self._device.phase_ns
        spent = {Phase(phase): ns - self._last.get(phase, 0) for phase, ns in now.items()
                 if ns != self._last.get(phase, 0)}
        self._last = now
        return spent


class ThermodynamicNGD:
    """The SPU as a preconditioner: d ~ (C + lambda I)^-1 g, read from ``device`` (steps 1-4
    of the module doc). damping lambda, t (analog time per step) and delay t_d (both in units
    of tau) may be schedules of the step. readout: "final" or "average". warm_start: None
    (Algorithm 1's rule), True (keep the state) or False (reset it to g every step). seed:
    restarts the device's noise stream at the first run, for reproducible runs. integrator:
    the device's integrator for the factored coupling, "euler_maruyama" (default, the
    paper's) or "exact" (no step-size bias or limit)."""

    def __init__(self, device: Device, *, damping: Schedule = 0.01, t: Schedule = 50.0,
                 delay: Schedule = 0.0, warm_start: bool | None = None,
                 readout: str = "final", seed: int | None = None,
                 integrator: str = "euler_maruyama") -> None:
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {list(READOUTS)}, got {readout!r}")
        self.device = device
        self.damping, self.t, self.delay = damping, t, delay
        self.warm_start, self.readout, self.integrator = warm_start, readout, integrator
        self._seed = seed
        self._programmed_n: int | None = None  # N of the last upload; None: nothing to keep

    def restart(self) -> None:
        """Forget the device's state: the next solve sets it to g (and runs no delay)."""
        self._programmed_n = None

    def keeps_state(self, step: int) -> bool:
        """Whether ``step`` starts from the previous state (else from g)."""
        if self.warm_start is not None:
            return self.warm_start
        return value(self.delay, step) > 0

    def solve(self, curvature: Factors, g: torch.Tensor,
              step: int) -> tuple[np.ndarray, DeviceStep]:
        """One device solve of (J^T H J + lambda I) x = g (steps 1-4 of the module doc): the
        estimate (N,) float64 and what the device did."""
        device, meter = self.device, _PhaseMeter(self.device)
        J, H, g = (np.asarray(a.detach().cpu(), dtype=np.float64)
                   for a in (curvature.J, curvature.H, g))
        started = self._programmed_n == len(g)
        clock_before, adc_clipped = device.sim_time_ns, 0
        delay = value(self.delay, step)
        if started and delay > 0:
            adc_clipped += device.run(device.duration_ns(delay), record=False,
                                      seed=self._take_seed())["adc_clipped"]
        delay_ns = meter.take().get(Phase.ANALOG, 0)

        programmed = device.program_factored(J, H, value(self.damping, step),
                                             integrator=self.integrator)
        dac_clipped = programmed["dac_clipped"] + device.set_bias(g)["dac_clipped"]
        if not (started and self.keeps_state(step)):
            dac_clipped += device.set_state(g)["dac_clipped"]
        self._programmed_n = len(g)
        upload = meter.take()

        adc_clipped += self._run(value(self.t, step))
        analog_ns = meter.take().get(Phase.ANALOG, 0)
        readout = device.read()
        return readout.mean, DeviceStep(upload, analog_ns, meter.take(), delay_ns,
                                        device.sim_time_ns - clock_before, dac_clipped,
                                        adc_clipped, readout.samples,
                                        int(programmed["elements"]))

    def _run(self, t: float) -> int:
        """Run for t tau recording the final sample or the whole window; ADC clips."""
        device = self.device
        total = device.duration_ns(t)
        interval = int(device.config["sample_interval_ns"])
        clipped = 0
        if self.readout == "final" and total > interval:
            clipped += device.run(total - interval, record=False,
                                  seed=self._take_seed())["adc_clipped"]
            total = interval
        return clipped + device.run(total, record=True, clear=True,
                                    seed=self._take_seed())["adc_clipped"]

    def _take_seed(self) -> int | None:
        seed, self._seed = self._seed, None
        return seed


class TNGD(NaturalGradient):
    """TNGD as a torch optimizer over ``model``'s parameters (module doc). The paper's
    hyperparameters are the defaults: lr 0.01, damping lambda 0.01, t = 50 tau, Algorithm 1's
    reset rule; ``update=Adam(1e-3, betas=(0.0, 0.0))`` is TNGD-Adam as the paper ran it.
    ``device``: a connected Device with room for N (else the daemon refuses the upload with
    CAPACITY_EXCEEDED: spawn it with more ``cells``); or ``devices``, several chips as one
    block-diagonal preconditioner, the parameters cut by ``partition`` ("layer",
    "contiguous" or a list of block sizes) and the chips' transfers on a ``link`` "separate"
    or "shared" (host/training/multichip.py). The other options are
    :class:`ThermodynamicNGD`'s and NaturalGradient's (params, loss, lr, momentum, update,
    curvature); ``pipelined``: solve with the previous step's factors (module doc)."""

    name = "tngd"

    def __init__(self, model: nn.Module, params: Iterable[Any] | None = None, *,
                 device: Device | None = None, devices: Sequence[Device] | None = None,
                 partition: str | Sequence[int] = "layer", link: str = "separate",
                 t: Schedule = 50.0, delay: Schedule = 0.0,
                 warm_start: bool | None = None, readout: str = "final",
                 pipelined: bool = False, seed: int | None = None,
                 integrator: str = "euler_maruyama", **options: Any) -> None:
        super().__init__(model, params, **options)
        if (device is None) == (devices is None):
            raise TypeError("TNGD needs device=... (one chip) or devices=[...] (several)")
        solver = {"damping": self.damping, "t": t, "delay": delay, "warm_start": warm_start,
                  "readout": readout, "seed": seed, "integrator": integrator}
        if devices is None:
            self.solver = ThermodynamicNGD(device, **solver)
        else:
            from spusim.training import multichip  # it builds on this module

            chosen = ParameterSet(model, [p for g in self.param_groups for p in g["params"]])
            cells = min(int(chip.config["cells"]) for chip in devices)
            self.solver = multichip.BlockDiagonalNGD(
                devices, multichip.block_sizes(chosen, len(devices), partition, cells),
                link=link, **solver)
        self.pipelined = pipelined
        self._pending: tuple[Factors, torch.Tensor] | None = None

    def _digital_step(self, params: ParameterSet, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[Linearization, Any]:
        """The gradient and the factors to upload (float64)."""
        lin = Linearization(self.model, params, x, y, self.loss_fn)
        return lin, (factors(lin, self.curvature), lin.grad.double())

    def _device_step(self, work: tuple[Factors, torch.Tensor]) -> Direction:
        upload = work
        if self.pipelined:
            upload, self._pending = self._pending or work, work
        started = time.perf_counter()
        estimate, report = self.solver.solve(upload[0], upload[1], self.steps)
        return Direction(torch.from_numpy(estimate), {}, report,
                         time.perf_counter() - started)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The update rule's state and the step count; the device's state restarts from g."""
        super().load_state_dict(state_dict)
        self.solver.restart()
        self._pending = None
