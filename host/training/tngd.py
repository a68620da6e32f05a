"""Thermodynamic natural gradient descent (TNGD, arXiv 2405.13817, Algorithm 1) on an SPU.

Each step the host computes the gradient g and the curvature in factored form C = J^T H J (the
GGN: J = J_f ((b d_z) x N), H = H_L / b; or the empirical Fisher; host/training/curvature.py) and the
device solves (C + lambda I) x = g by letting its state relax under

    dx = -((C + lambda I) x - g) dt/tau + sqrt(2 kappa0/tau) dW        (Eq. 15, damping explicit)

for an analog time t; the state read back is the natural-gradient estimate, which an outer
update rule (SGD with momentum, or Adam) applies. The paper's typos are corrected: C = (1/b)
J_f^T H_L J_f with J_f of shape (b d_z) x N (Eq. 16's order; Eqs. 9 and 22 write the transpose),
and the device integrates with the drift sign above: by default with the exact transition of
the factored coupling where the device allows it (the same damping on every cell, no anti-alias
filter), which crosses the unrecorded part of a run in one step; else, or on request (the
paper's numerics), by Euler-Maruyama at the daemon's em_step.

One step of :class:`ThermodynamicNGD` on the device, in order:

1. delay (t_d > 0, not on the first step): run t_d under the previous step's programming, the
   analog state drifting on between a measurement and the next upload (section 4, Fig. 4b);
2. upload: ``program_factored(J, H, damping=lambda)`` and ``set_bias(g)``; the state is
   warm-started (it persists from the previous step, as on hardware), or with
   ``warm_start=False`` reset to g by ``set_state(g)``: the SGD (t = 0) to NGD (t -> infinity)
   interpolation, <x(t)> = e^{-At} g + (I - e^{-At}) A^-1 g. The first step always sets the
   state to g (Algorithm 1: g~_0 = grad l(theta_0));
3. analog run of t (rounded up to whole ADC sample intervals, at least one);
4. readout: ``"final"`` reads the last ADC sample (the state at t: a run of t minus one
   interval unrecorded, then one recorded interval), ``"average"`` the mean of every sample of
   the window.

``pipelined=True`` uploads the gradient and curvature of the previous step instead of the
current one (Eqs. 15-18, Fig. 1: the device solves with theta_{k-1}'s factors while the host
computes theta_k's), the loop that timing.pipeline.LoopClock times; the default is Algorithm 1's
synchronous loop. On a daemon that serves ``solve_factored`` (protocol 1.2) steps 1-4 travel
in one request, one round trip instead of 5-7; each step inside costs the simulated time it
would cost on its own. Every step's simulated time is collected per phase in a
:class:`DeviceStep`, from which the training loop builds the iteration's timing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from spusim.driver.client import Device, Readout
from spusim.training.curvature import CURVATURES, Factors, factors
from spusim.training.models import Linearization
from spusim.training.optimizers import Direction, Optimizer
from spusim.training.schedules import Schedule, value
from spusim.training.updates import SGD, Adam, UpdateRule
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
    """The SPU as a preconditioner: d ~ (C + lambda I)^-1 g, read from ``device``.

    damping lambda, t (analog time per step) and delay t_d (both in units of tau) may be
    schedules of the step. curvature: "ggn" or "fisher". readout: "final" or "average".
    warm_start: keep the state between steps (False: set it to g every step). seed: restarts
    the device's noise stream at the first run, for reproducible runs. integrator: the
    device's integrator for the factored coupling, "exact" (no step-size bias or limit, the
    unrecorded part of a run in one step), "euler_maruyama" (the paper's numerics), or "auto"
    (default): "exact" where the device can run it (no mismatch, which makes the damping
    differ between cells, and no anti-alias filter), else "euler_maruyama".
    """

    def __init__(self, device: Device, *, damping: Schedule = 0.01, t: Schedule = 50.0,
                 delay: Schedule = 0.0, warm_start: bool = True, readout: str = "final",
                 curvature: str = "ggn", pipelined: bool = False,
                 seed: int | None = None, integrator: str = "auto") -> None:
        if integrator not in INTEGRATORS:
            raise ValueError(f"integrator must be one of {list(INTEGRATORS)}, got "
                             f"{integrator!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {list(READOUTS)}, got {readout!r}")
        if curvature not in CURVATURES:
            raise ValueError(f"curvature must be one of {list(CURVATURES)}, got {curvature!r}")
        self.device = device
        self.damping, self.t, self.delay = damping, t, delay
        self.warm_start, self.readout, self.curvature = warm_start, readout, curvature
        self.pipelined, self.integrator = pipelined, _resolved(integrator, device.config)
        self._seed = seed
        self._started = False
        self._pending: tuple[Factors, np.ndarray] | None = None

    def __call__(self, lin: Linearization, step: int) -> Direction:
        upload = (factors(lin, self.curvature), lin.grad)
        if self.pipelined:
            upload, self._pending = self._pending or upload, upload
        started = time.perf_counter()
        estimate, report = self.solve(upload[0], upload[1], step)
        return Direction(estimate, {}, report, time.perf_counter() - started)

    def solve(self, curvature: Factors, g: np.ndarray,
              step: int) -> tuple[np.ndarray, DeviceStep]:
        """One device solve of (J^T H J + lambda I) x = g (steps 1-4 of the module doc): the
        estimate (N,) and what the device did."""
        device, clock_before = self.device, self.device.sim_time_ns
        delay = value(self.delay, step)
        delay_ns = device.duration_ns(delay) if self._started and delay > 0 else 0
        state = None if self._started and self.warm_start else g
        burn_ns, record_ns = self._windows(value(self.t, step))
        damping = value(self.damping, step)
        if device.supports("solve_factored"):
            solved = device.solve_factored(curvature.J, curvature.H, damping, g, x=state,
                                           delay_ns=delay_ns, burn_ns=burn_ns,
                                           record_ns=record_ns, integrator=self.integrator,
                                           seed=self._take_seed())
            steps, readout = solved.steps, solved.readout
        else:
            steps, readout = self._separately(curvature, damping, g, state, delay_ns, burn_ns,
                                              record_ns)
        self._started = True
        return readout.mean, _device_step(steps, readout.samples,
                                          device.sim_time_ns - clock_before)

    def _separately(self, curvature: Factors, damping: float, g: np.ndarray,
                    state: np.ndarray | None, delay_ns: int, burn_ns: int,
                    record_ns: int) -> tuple[list[tuple[str, dict]], Readout]:
        """The step as one op per request (a daemon before protocol 1.2): the (op, result)
        steps, as solve_factored replies them, and the read-out."""
        device = self.device
        steps: list[tuple[str, dict]] = []
        if delay_ns:
            steps.append(("run", device.run(delay_ns, record=False, seed=self._take_seed())))
        steps.append(("program_factored", device.program_factored(
            curvature.J, curvature.H, damping, integrator=self.integrator)))
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


def tngd(device: Device, update: UpdateRule | None = None, *, lr: Schedule = 0.01,
         momentum: Schedule = 0.0, damping: Schedule = 0.01, t: Schedule = 50.0,
         delay: Schedule = 0.0, warm_start: bool = True, readout: str = "final",
         curvature: str = "ggn", pipelined: bool = False, seed: int | None = None,
         integrator: str = "auto") -> Optimizer:
    """TNGD with SGD(lr, momentum) on top, or with ``update`` (e.g. ``Adam(lr, 0, 0)``:
    TNGD-Adam as the paper ran it); the other arguments as in :class:`ThermodynamicNGD`."""
    rule = update if update is not None else SGD(lr, momentum)
    name = "tngd-adam" if isinstance(rule, Adam) else "tngd"
    return Optimizer(name, ThermodynamicNGD(device, damping=damping, t=t, delay=delay,
                                            warm_start=warm_start, readout=readout,
                                            curvature=curvature, pipelined=pipelined,
                                            seed=seed, integrator=integrator), rule)
