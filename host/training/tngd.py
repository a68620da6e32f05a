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
sign above: by default with the exact transition of the factored coupling where the device
allows it (the same damping on every cell, no anti-alias filter), which crosses the unrecorded
part of a run in one step; else, or on request (the paper's numerics), by Euler-Maruyama at the
daemon's em_step.

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
synchronous loop. On a daemon that serves ``solve_factored`` (protocol 1.4) steps 1-4 travel
in one request, one round trip instead of 5-7; each step inside costs the simulated time it
would cost on its own. Every step's simulated time is collected per phase in a
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

from spusim.driver.client import Device, Readout
from spusim.training.curvature import Factors, factors
from spusim.training.linearization import Linearization, ParameterSet
from spusim.training.optimizers import Direction, NaturalGradient
from spusim.training.schedules import Schedule, value
from spusim.timing.model import Phase
from spusim.timing.pipeline import IterationCosts

READOUTS = ("final", "average")
INTEGRATORS = ("auto", "exact", "euler_maruyama")
_UPLOADS = ("program_factored", "set_bias", "set_state")


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


class ThermodynamicNGD:
    """The SPU as a preconditioner: d ~ (C + lambda I)^-1 g, read from ``device`` (steps 1-4
    of the module doc). damping lambda, t (analog time per step) and delay t_d (both in units
    of tau) may be schedules of the step. readout: "final" or "average". warm_start: None
    (Algorithm 1's rule), True (keep the state) or False (reset it to g every step). seed:
    restarts the device's noise stream at the first run, for reproducible runs. integrator:
    the device's integrator for the factored coupling, "exact" (no step-size bias or limit,
    the unrecorded part of a run in one step), "euler_maruyama" (the paper's numerics), or
    "auto" (default): "exact" where the device can run it (no mismatch, which makes the
    damping differ between cells, and no anti-alias filter), else "euler_maruyama"."""

    def __init__(self, device: Device, *, damping: Schedule = 0.01, t: Schedule = 50.0,
                 delay: Schedule = 0.0, warm_start: bool | None = None,
                 readout: str = "final", seed: int | None = None,
                 integrator: str = "auto") -> None:
        if integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {list(INTEGRATORS)}, got "
                             f"{integrator!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {list(READOUTS)}, got {readout!r}")
        self.device = device
        self.damping, self.t, self.delay = damping, t, delay
        self.warm_start, self.readout = warm_start, readout
        self.integrator = _resolved(integrator, device.config)
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
        device, clock_before = self.device, self.device.sim_time_ns
        J, H, g = (np.asarray(a.detach().cpu(), dtype=np.float64)
                   for a in (curvature.J, curvature.H, g))
        started = self._programmed_n == len(g)
        delay = value(self.delay, step)
        delay_ns = device.duration_ns(delay) if started and delay > 0 else 0
        state = None if started and self.keeps_state(step) else g
        burn_ns, record_ns = self._windows(value(self.t, step))
        damping = value(self.damping, step)
        if device.supports("solve_factored"):
            solved = device.solve_factored(J, H, damping, g, x=state, delay_ns=delay_ns,
                                           burn_ns=burn_ns, record_ns=record_ns,
                                           integrator=self.integrator, seed=self._take_seed())
            steps, readout = solved.steps, solved.readout
        else:
            steps, readout = self._separately(J, H, damping, g, state, delay_ns, burn_ns,
                                              record_ns)
        self._programmed_n = len(g)
        return readout.mean, _device_step(steps, readout.samples,
                                          device.sim_time_ns - clock_before)

    def _separately(self, J: np.ndarray, H: np.ndarray, damping: float, g: np.ndarray,
                    state: np.ndarray | None, delay_ns: int, burn_ns: int,
                    record_ns: int) -> tuple[list[tuple[str, dict]], Readout]:
        """The step as one op per request (a daemon before protocol 1.4): the (op, result)
        steps, as solve_factored replies them, and the read-out."""
        device = self.device
        steps: list[tuple[str, dict]] = []
        if delay_ns:
            steps.append(("run", device.run(delay_ns, record=False, seed=self._take_seed())))
        steps.append(("program_factored", device.program_factored(
            J, H, damping, integrator=self.integrator)))
        steps.append(("set_bias", device.set_bias(g)))
        if state is not None:
            steps.append(("set_state", device.set_state(state)))
        if burn_ns:
            steps.append(("run", device.run(burn_ns, record=False, seed=self._take_seed())))
        steps.append(("run", device.run(record_ns, record=True, clear=True,
                                        seed=self._take_seed())))
        before = device.phase_ns
        readout = device.read()
        steps.append(("read", {"timing": {phase: ns - before.get(phase, 0) for phase, ns
                                          in device.phase_ns.items()}}))
        return steps, readout

    def _windows(self, t: float) -> tuple[int, int]:
        """(unrecorded, recorded) ns of the run of t tau: the final sample, after t minus one
        interval unrecorded, or the whole window."""
        total = self.device.duration_ns(t)
        interval = int(self.device.config["sample_interval_ns"])
        if self.readout == "final" and total > interval:
            return total - interval, interval
        return 0, total

    def _take_seed(self) -> int | None:
        seed, self._seed = self._seed, None
        return seed


def _resolved(integrator: str, config: dict) -> str:
    """"auto" as the integrator the device ``config`` can run exactly, else as given."""
    if integrator != "auto":
        return integrator
    exact = (config.get("mismatch", 0.0) == 0.0 and config.get("readout_tau_ns", 0.0) == 0.0
             and config.get("dynamics", "overdamped") == "overdamped")
    return "exact" if exact else "euler_maruyama"


def _device_step(steps: list[tuple[str, dict]], samples: int, total_ns: int) -> DeviceStep:
    """A :class:`DeviceStep` from the (op, result) steps of one solve, in order: a run
    before the programming is the delay, the runs after it the analog solve."""
    programmed = [op for op, _ in steps].index("program_factored")
    before, after = steps[:programmed], steps[programmed:]
    uploads = [result for op, result in after if op in _UPLOADS]
    runs = [result for op, result in after if op == "run"]
    reads = [result for op, result in after if op == "read"]
    return DeviceStep(_phases(uploads), _phases(runs).get(Phase.ANALOG, 0), _phases(reads),
                      _phases([result for _, result in before]).get(Phase.ANALOG, 0), total_ns,
                      sum(int(result["dac_clipped"]) for result in uploads),
                      sum(int(result["adc_clipped"]) for _, result in before) +
                      sum(int(result["adc_clipped"]) for result in runs), samples,
                      int(after[0][1]["elements"]))


def _phases(results: list[dict]) -> dict[Phase, int]:
    """The simulated time per phase of these results' ``timing``, summed (zeros left out)."""
    total: dict[Phase, int] = {}
    for result in results:
        for phase, ns in result["timing"].items():
            total[Phase(phase)] = total.get(Phase(phase), 0) + int(ns)
    return {phase: ns for phase, ns in total.items() if ns}


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
                 integrator: str = "auto", **options: Any) -> None:
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

    def _direction(self, lin: Linearization, step: int) -> tuple[Factors, torch.Tensor]:
        """Not a direction yet: the factors and the gradient to upload (float64)."""
        return factors(lin, self.curvature), lin.grad.double()

    def _device_step(self, work: tuple[Factors, torch.Tensor]) -> Direction:
        upload = work
        if self.pipelined:
            upload, self._pending = self._pending or work, work
        started = time.perf_counter()
        estimate, report = self.solver.solve(upload[0], upload[1], self.steps)
        return Direction(torch.from_numpy(estimate), {}, report,
                         time.perf_counter() - started)

    def close(self) -> None:
        """Stop the threads a multi-chip optimizer keeps, one per chip (also stopped when it is
        garbage collected); nothing to do for one chip. The devices stay open: whoever opened
        them closes them. A closed multi-chip optimizer cannot step."""
        from spusim.training import multichip  # it builds on this module

        if isinstance(self.solver, multichip.BlockDiagonalNGD):
            self.solver.close()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The update rule's state and the step count; the device's state restarts from g."""
        super().load_state_dict(state_dict)
        self.solver.restart()
        self._pending = None
