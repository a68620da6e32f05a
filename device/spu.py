"""The emulated SPU: programmed state, noise stream, ADC averager and simulated clock.

One instance is one chip. Its state persists between calls like real hardware: programming a new
matrix or bias leaves the cell state alone unless asked (or unless the size changes). Each op
validates its input, advances the simulated clock by the timing model's cost, and returns
``(result, arrays)`` for the reply; bad input raises :class:`protocol.ProtocolError` and changes
nothing.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from spusim.device import kernels, kernels_linear
from spusim.device.config import DeviceConfig
from spusim.device.coupling import (
    CircuitTransition,
    Coupling,
    DenseCoupling,
    FactoredCoupling,
    circuit_transition,
)
from spusim.device.mismatch import Array, deviations
from spusim.device.settling import Settling, seen_value, settling_samples
from spusim.device.transition import ExactTransition, FactoredTransition
from spusim.protocol import ErrorCode, ProtocolError
from spusim.timing import Phase, SimClock

# Kernel work per chunk of a run (multiply-adds); between chunks a run can be cancelled.
_CHUNK_WORK = 1 << 22

log = logging.getLogger("spusim.device")

Result = tuple[dict[str, Any], dict[str, np.ndarray]]


@dataclass
class _Averager:
    """Running sums of the ADC samples: first moments always, second moments and lag products
    x_k x_{k-L}^T (the lag correlator, L = lag_samples sample intervals) on request."""

    sum_x: np.ndarray  # (n,)
    sum_xx: np.ndarray  # (n, n), or (0, 0) while no second moments are recorded
    sum_lag: np.ndarray  # (n, n), or (0, 0) while no lag products are recorded
    samples: int = 0
    second_moment_samples: int = 0
    lag_samples: int = 0  # L of the lag products held (0: none)
    lag_pairs: int = 0

    @classmethod
    def empty(cls, n: int, second_moments: bool = False, lag_samples: int = 0) -> _Averager:
        return cls(np.zeros(n), np.zeros((n, n) if second_moments else (0, 0)),
                   np.zeros((n, n) if lag_samples else (0, 0)), lag_samples=lag_samples)

    def absorb(self, run: _Averager, basis: np.ndarray | None) -> None:
        """Add a run's sums, taken in the coordinates y = basis^T x (None: in x itself)."""
        sum_x, sum_xx, sum_lag = run.sum_x, run.sum_xx, run.sum_lag
        if basis is not None:
            sum_x = basis @ sum_x
            sum_xx = basis @ sum_xx @ basis.T if run.second_moment_samples else sum_xx
            sum_lag = basis @ sum_lag @ basis.T if run.lag_pairs else sum_lag
        self.sum_x += sum_x
        self.samples += run.samples
        if run.second_moment_samples:
            self.sum_xx = self.sum_xx + sum_xx if self.second_moment_samples else sum_xx
            self.second_moment_samples += run.second_moment_samples
        if run.lag_pairs:
            self.sum_lag = self.sum_lag + sum_lag if self.lag_pairs else sum_lag
            self.lag_pairs += run.lag_pairs
            self.lag_samples = run.lag_samples


# The kernels' ``adc`` argument: readout offsets, parameters, clip counter, filter output.
AdcState = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class EmulatedSPU:
    """An SPU of ``config.cells`` cells: RC cells solving dx = -(A x - b) dt/tau +
    sqrt(2 kappa0/tau) dW, or the underdamped or RLC cells of ``config.dynamics``.

    What the host programs passes through the chip's converters and mismatch first: the dynamics
    run with the values as realised, and the ADC reads the state as configured.
    """

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.timing = config.timing
        self.clock = SimClock()
        self._rng = np.random.default_rng(config.seed)
        self._power_on()

    def _power_on(self) -> None:
        self._coupling: Coupling | None = None
        self._b = np.zeros(0)
        self._x = np.zeros(0)
        self._hidden = np.zeros(0)  # second-order cells: momenta or inductor currents
        self._coupling_settling: Settling[Coupling] | None = None  # programmed changes in flight
        self._bias_settling: Settling[np.ndarray] | None = None
        self._settling_checked = False  # the settling path's Euler-Maruyama checks passed
        self._integrator = self.config.integrator
        self._ready = False  # the programmed coupling passed the integrator's checks
        self._transition: ExactTransition | FactoredTransition | CircuitTransition | None = None
        self._averager = _Averager.empty(0)
        self._adc: AdcState = kernels.ideal_adc(0)

    @property
    def n(self) -> int:
        """Number of active cells (0 until something is programmed)."""
        return 0 if self._coupling is None else self._coupling.n

    # --- ops -------------------------------------------------------------------------------

    def program(self, A: np.ndarray, reset_state: bool = False,
                integrator: str | None = None, drift: str = "symmetric") -> Result:
        """Program the dense N x N coupling matrix A: symmetric (positive definiteness is
        checked by the first run), or with ``drift="general"`` any real matrix whose
        eigenvalues have positive real parts (overdamped cells; checked by the first run)."""
        coupling = DenseCoupling.program(A, self.config, general=drift == "general")
        return self._install(coupling, reset_state, integrator or self.config.integrator)

    def program_factored(self, J: np.ndarray, H: np.ndarray, damping: float,
                         reset_state: bool = False, integrator: str | None = None) -> Result:
        """Program the coupling J^T H J + damping I from J (m, N) and H (m, m). Runs use
        Euler-Maruyama unless ``integrator`` is "exact" (uniform damping, no readout filter)."""
        return self._install(self._factored(J, H, damping, integrator), reset_state,
                             integrator or "euler_maruyama")

    def _factored(self, J: np.ndarray, H: np.ndarray, damping: float,
                  integrator: str | None) -> FactoredCoupling:
        """The factored coupling as this chip realises it, checked for ``integrator``."""
        if self.config.dynamics != "overdamped":
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, "factored programming runs on "
                                "overdamped cells only (second-order cells need the dense "
                                "matrix)", dynamics=self.config.dynamics)
        coupling = FactoredCoupling.program(J, H, damping, self.config)
        if integrator == "exact" and (reason := coupling.exact_unavailable(self.config)):
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, reason, integrator=integrator)
        return coupling

    def solve_factored(self, J: np.ndarray, H: np.ndarray, b: np.ndarray, damping: float,
                       record_ns: int, x: np.ndarray | None = None,
                       integrator: str | None = None, delay_ns: int = 0, burn_ns: int = 0,
                       seed: int | None = None,
                       cancel: threading.Event | None = None) -> Result:
        """One TNGD step in one request, doing exactly what these ops would do in turn:
        run(delay_ns, record=false) under the coupling programmed before (if delay_ns > 0),
        program_factored(J, H, damping, integrator), set_bias(b), set_state(x) (if x is
        given), run(burn_ns, record=false) (if burn_ns > 0), run(record_ns, clear=true),
        read(). ``seed`` restarts the noise stream at the first run.

        Everything that can be checked before the first step is (the coupling, b and x
        against its N, the durations), so a bad request changes nothing. A step that fails
        later (a run's checks, divergence, cancellation) leaves the steps before it done, as
        separate ops would, and its error lists them in ``details.completed``; a cancelled
        one's ``completed_ns`` counts all its runs' analog time so far. Returns each
        step's result in order ("steps": [{"op", "result"}]), their phases summed
        ("timing"), and the read's mean.
        """
        coupling = self._factored(J, H, damping, integrator)
        for what, v in (("bias b", b), ("state x", x)):
            if v is not None and v.shape != (coupling.n,):
                raise ProtocolError(ErrorCode.BAD_SHAPE, f"{what} must have shape "
                                    f"[{coupling.n}] to match J, got {list(v.shape)}",
                                    expected=[coupling.n], shape=list(v.shape))
            if v is not None and not np.isfinite(v).all():
                raise ProtocolError(ErrorCode.NON_FINITE, f"{what} contains NaN or inf")
        interval = self.config.sample_interval_ns
        for name, ns in (("delay_ns", delay_ns), ("burn_ns", burn_ns), ("record_ns", record_ns)):
            if ns % interval:
                raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"{name}={ns} is not a multiple of "
                                    f"the ADC sample interval ({interval} ns)",
                                    sample_interval_ns=interval, argument=name)
        if delay_ns:
            self._programmed()
        steps: list[dict[str, Any]] = []
        seeds = iter((seed,))

        def step(op: str, call: Any, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
            try:
                result, arrays = call(*args, **kwargs)
            except ProtocolError as error:
                error.details["completed"] = [done["op"] for done in steps]
                if error.code == ErrorCode.CANCELLED:  # the op's runs so far, not this one's
                    error.details["completed_ns"] += sum(
                        done["result"]["timing"].get(Phase.ANALOG.value, 0) for done in steps)
                raise
            steps.append({"op": op, "result": result})
            return arrays

        if delay_ns:
            step("run", self.run, delay_ns, record=False, seed=next(seeds, None), cancel=cancel)
        step("program_factored", self._install, coupling, False, integrator or "euler_maruyama")
        step("set_bias", self.set_bias, b)
        if x is not None:
            step("set_state", self.set_state, x)
        if burn_ns:
            step("run", self.run, burn_ns, record=False, seed=next(seeds, None), cancel=cancel)
        step("run", self.run, record_ns, clear=True, seed=next(seeds, None), cancel=cancel)
        arrays = step("read", self.read)
        timing: dict[str, int] = {}
        for done in steps:
            for phase, ns in done["result"]["timing"].items():
                timing[phase] = timing.get(phase, 0) + ns
        return {"steps": steps, "timing": timing}, arrays

    def set_bias(self, b: np.ndarray) -> Result:
        """Set the bias vector b (N,), through the bias DAC and the chip's bias offsets."""
        b = self._checked_vector(b, "bias b")
        if self.config.dynamics == "rlc" and np.any(b):
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, "RLC cells cannot hold a bias: their "
                                "inductors short DC, so the voltages average 0 whatever the "
                                "bias (they sample and invert, they do not solve A x = b)")
        realised, clipped = self.config.bias_dac.apply(b)
        seen = self._bias_seen(self.clock.now_ns)
        self._b = realised + self._offsets(Array.BIAS_OFFSET, self.config.bias_offset)
        result, arrays = self._uploaded(b.size, clipped)
        self._bias_settling = self._settling(seen)
        return {**result, "settle_ns": self._settle_ns()}, arrays

    def set_state(self, x: np.ndarray) -> Result:
        """Set the cell state x (N,), e.g. to warm-start a run (through the bias DAC)."""
        self._x, clipped = self.config.bias_dac.apply(self._checked_vector(x, "state x"))
        self._hidden = np.zeros(self.n)
        return self._uploaded(x.size, clipped)

    def run(self, duration_ns: int, record: bool = True, second_moments: bool = False,
            clear: bool = False, seed: int | None = None, lag_samples: int = 0,
            cancel: threading.Event | None = None) -> Result:
        """Evolve for ``duration_ns``, the ADC sampling every ``sample_interval_ns``.

        ``record`` adds the samples to the averager (``second_moments`` also their outer
        products; ``lag_samples`` = L >= 1 also the lag products x_k x_{k-L}^T of samples L
        intervals apart within this run, from a ring buffer of its last L samples: (samples -
        L) pairs); ``clear`` first discards what it holds; ``seed`` restarts the noise stream.
        ``cancel`` stops the run between chunks (CANCELLED, ``completed_ns``).

        An unrecorded run takes no ADC readings, so none can clip (``adc_clipped`` 0); with an
        exact integrator it crosses its interval in one exact transition once no programmed
        change is settling (``jumped_ns`` in the result; ``stepped_reason`` says why the rest,
        if any, was stepped sample by sample).
        """
        self._programmed()
        interval = self.config.sample_interval_ns
        if duration_ns % interval:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                f"duration_ns={duration_ns} is not a multiple of the ADC sample "
                                f"interval ({interval} ns)", sample_interval_ns=interval)
        self._check_lag(lag_samples, record, clear)
        self._prepare()
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if clear:
            self._averager = _Averager.empty(self.n)
        lag = kernels.lag_correlator(lag_samples, self.n)  # its ring holds x
        clipped = self._adc[2]  # the ADC's clip counter, reported per run
        clipped[0] = 0
        total = duration_ns // interval
        done = jumped = 0
        for stepper, count in self._segments(self.clock.now_ns, total, jump=not record):
            # in the stepper's coordinates, as is the ring buffer while it steps
            sums = _Averager.empty(self.n, second_moments, lag_samples)
            lag = _lag_in(lag, stepper.basis, sums.sum_lag)
            if not record and isinstance(stepper, (_ModalStepper, _FactoredStepper)):
                jumped = stepper.span * interval
            taken, failure = self._advance(stepper, count, done, record, second_moments, sums,
                                           lag, cancel)
            done += taken
            if failure is not None and failure.code == ErrorCode.DIVERGED:
                self._x, self._hidden = np.zeros(self.n), np.zeros(self.n)
                self._adc[3][:] = 0.0
                self._averager = _Averager.empty(self.n)
                raise failure
            self._x, self._hidden = stepper.state_x(), stepper.hidden(self._hidden)
            stepper.store_filter(self._adc[3])
            self._averager.absorb(sums, stepper.basis)
            lag = _lag_in(lag, None if stepper.basis is None else stepper.basis.T, sums.sum_lag)
            if failure is not None:
                raise failure
        result = {"samples": total if record else 0, "adc_clipped": int(clipped[0]),
                  "timing": _wire(self.timing.evolve(duration_ns))}
        if record:
            return result, {}
        reason = self._stepped_reason() if jumped < duration_ns else None
        if reason is not None:
            log.debug("unrecorded run of %d ns: %d ns stepped because %s", duration_ns,
                      duration_ns - jumped, reason)
        return {**result, "jumped_ns": jumped, "stepped_reason": reason}, {}

    def _stepped_reason(self) -> str:
        """Why (part of) an unrecorded run was stepped sample by sample instead of jumped."""
        if isinstance(self._transition, (ExactTransition, FactoredTransition)):
            return ("a programmed change was settling: its intervals are stepped with the "
                    "coefficients frozen at their interval averages")
        if isinstance(self._transition, CircuitTransition):
            return ("a circuit's exact transition (second-order cells, or a general drift) "
                    "is stepped sample by sample: one over the whole run would cost matrix "
                    "exponentials of the circuit, more than stepping all but very long runs")
        return ("euler_maruyama steps by em_step_ns, the paper's numerics; the exact "
                "integrator crosses an unrecorded run in one transition")

    def _check_lag(self, lag_samples: int, record: bool, clear: bool) -> None:
        """Refuse a lag correlator that would record nothing or mix lags in the averager."""
        if not lag_samples:
            return
        if not record:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, "lag_samples needs record=true: an "
                                "unrecorded run takes no samples", argument="lag_samples")
        held = self._averager.lag_samples
        if held and held != lag_samples and not clear:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"the averager holds lag products at "
                                f"lag_samples={held}; read them or run with clear=true before "
                                f"recording lag_samples={lag_samples}", argument="lag_samples",
                                held=held)

    def _advance(self, stepper: _Stepper, count: int, before: int, record: bool,
                 second_moments: bool, sums: _Averager, lag: kernels.LagState,
                 cancel: threading.Event | None) -> tuple[int, ProtocolError | None]:
        """Run ``stepper`` for ``count`` steps in chunks, moving the clock with each chunk
        (so status shows a long run's progress) and stopping early on ``cancel`` or
        divergence. A step covers ``stepper.span`` samples (1, or a whole unrecorded jump).
        ``before``: samples of this run already taken. Returns (samples taken, the error that
        stopped it or None)."""
        interval = self.config.sample_interval_ns
        span = stepper.span
        chunk = max(kernels.SECOND_MOMENT_BATCH if second_moments else 1,
                    _CHUNK_WORK // self._work_per_sample(second_moments or sums.lag_samples > 0))
        done = 0
        while done < count:
            if cancel is not None and cancel.is_set():
                completed = (before + done * span) * interval
                return done * span, ProtocolError(ErrorCode.CANCELLED,
                                                  f"run stopped after {completed} ns",
                                                  completed_ns=completed)
            size = min(chunk, count - done)
            held = int(lag[2][1])
            taken = stepper.advance(size, record, second_moments, sums, lag)
            self.clock.advance(self.timing.evolve(min(taken + 1, size) * span * interval))
            done += taken
            if record:
                sums.samples += taken
                sums.second_moment_samples += taken if second_moments else 0
                if sums.lag_samples:  # samples past the run's first L
                    sums.lag_pairs += taken - (int(lag[2][1]) - held)
            if taken < size:
                failed_ns = (before + (done + 1) * span) * interval
                return done * span, ProtocolError(ErrorCode.DIVERGED,
                                                  f"the cell state left the finite range "
                                                  f"{failed_ns} ns into the run; the state and "
                                                  "the recorded samples were cleared",
                                                  completed_ns=failed_ns)
        return done * span, None

    def read(self, second_moments: bool = False, clear: bool = True,
             lag_moment: bool = False) -> Result:
        """Time averages of the recorded samples: mean (N,), second moment (N, N) E[x x^T],
        and with ``lag_moment`` the lag moment (N, N) E[x_k x_{k-L}^T] of the runs recorded
        with lag_samples = L (not symmetric; ``lag_pairs`` products, ``lag_samples`` L)."""
        self._programmed()
        averager = self._averager
        if averager.samples == 0:
            raise ProtocolError(ErrorCode.NO_SAMPLES,
                                "no samples recorded since the last clearing read: run with "
                                "record=true first")
        if second_moments and averager.second_moment_samples == 0:
            raise ProtocolError(ErrorCode.NO_SAMPLES,
                                "no second moments recorded: run with second_moments=true first")
        if lag_moment and averager.lag_pairs == 0:
            raise ProtocolError(ErrorCode.NO_SAMPLES,
                                "no lag products recorded: run with lag_samples >= 1 for longer "
                                "than lag_samples sample intervals first")
        arrays = {"mean": averager.sum_x / averager.samples}
        n_values = self.n
        if second_moments:
            moment = averager.sum_xx / averager.second_moment_samples
            arrays["second_moment"] = (moment + moment.T) / 2
            n_values += self.n * (self.n + 1) // 2  # a symmetric matrix: its upper triangle
        result = {"samples": averager.samples,
                  "second_moment_samples": averager.second_moment_samples if second_moments else 0}
        if lag_moment:
            arrays["lag_moment"] = averager.sum_lag / averager.lag_pairs
            n_values += self.n * self.n
            result.update(lag_pairs=averager.lag_pairs, lag_samples=averager.lag_samples)
        if clear:
            self._averager = _Averager.empty(self.n)
        timing = self.timing.readout(self.n, n_values)
        self.clock.advance(timing)
        return {**result, "timing": _wire(timing)}, arrays

    def reset(self) -> Result:
        """Back to the power-on state: nothing programmed, state and averager cleared.

        The clock and the noise stream go on, as they would on a chip.
        """
        self._power_on()
        return {"timing": {}}, {}

    def status(self) -> dict[str, Any]:
        """Snapshot of the device for ``status`` (msgpack-serialisable)."""
        coupling = type(self._coupling).__name__.removesuffix("Coupling").lower()
        return {"programmed": self._coupling is not None,
                "coupling": coupling if self._coupling is not None else None,
                "n": self.n, "integrator": self._integrator,
                "samples": self._averager.samples,
                "second_moment_samples": self._averager.second_moment_samples,
                "sim_time_ns": self.clock.now_ns}

    # --- helpers ---------------------------------------------------------------------------

    def _programmed(self) -> Coupling:
        if self._coupling is None:
            raise ProtocolError(ErrorCode.NOT_PROGRAMMED,
                                "no coupling is programmed: send 'program' first")
        return self._coupling

    def _install(self, coupling: Coupling, reset_state: bool, integrator: str) -> Result:
        """Make ``coupling`` the chip's; a new size resets state, bias and averager.

        With a finite programming bandwidth the change settles from what the cells saw (from
        zero when the new coupling occupies other elements: another size or kind)."""
        n = coupling.n
        resized = n != self.n
        seen = (self._coupling_seen(self.clock.now_ns) if coupling.same_array(self._coupling)
                else None)
        self._coupling, self._integrator = coupling, integrator
        self._ready, self._transition = False, None
        if resized:
            self._averager = _Averager.empty(n)
            self._adc = (self._offsets(Array.READOUT_OFFSET, self.config.readout_offset, n),
                         self._adc_parameters(), np.zeros(1, dtype=np.int64), np.zeros(n))
            self._b = self._offsets(Array.BIAS_OFFSET, self.config.bias_offset, n)
            self._bias_settling = None
        if resized or reset_state:
            self._x, self._hidden = np.zeros(n), np.zeros(n)
            self._adc[3][:] = 0.0  # the filter output follows the cleared state
        timing = self.timing.upload(coupling.elements, cells=n)
        self.clock.advance(timing)
        self._coupling_settling = self._settling(seen)
        self._settling_checked = False
        return {"n": n, "elements": coupling.elements, "integrator": integrator,
                "state_reset": resized or reset_state, "bias_reset": resized,
                "dac_clipped": coupling.dac_clipped, "settle_ns": self._settle_ns(),
                "timing": _wire(timing)}, {}

    def _offsets(self, array: Array, sigma: float, n: int | None = None) -> np.ndarray:
        """The chip's fixed per-cell offsets (zeros when ``sigma`` is 0)."""
        n = self.n if n is None else n
        return sigma * deviations(self.config.serial, array, (n,)) if sigma else np.zeros(n)

    def _adc_parameters(self) -> np.ndarray:
        """The readout parameters for the time-stepping kernels, whose anti-alias filter
        advances once per Euler-Maruyama step (the exact integrators carry the filter in their
        state and get a copy with gain 0, see :meth:`_exact_readout`)."""
        config = self.config
        params = np.zeros(kernels.ADC_PARAMETERS)
        params[kernels.ADC_ACTIVE] = 0.0 if config.ideal_readout else 1.0
        params[kernels.ADC_NOISE_SD] = config.readout_noise
        params[kernels.ADC_STEP] = config.adc.step
        params[kernels.ADC_MAX_CODE] = 2 ** (config.adc.bits - 1) - 1
        if config.readout_tau_ns:
            params[kernels.FILTER_GAIN] = -np.expm1(-config.em_step_ns / config.readout_tau_ns)
        return params

    def _exact_readout(self) -> AdcState:
        """The readout path for the exact integrators: same arrays, filter gain 0."""
        offsets, params, clipped, filtered = self._adc
        params = params.copy()
        params[kernels.FILTER_GAIN] = 0.0
        return offsets, params, clipped, filtered

    # --- finite programming bandwidth (device/settling.py) ---------------------------------

    def _settling(self, previous: Any) -> Settling | None:
        """A change programmed now from ``previous`` (what the cells saw; None: zero), or None
        when the programming path is instantaneous."""
        tau = self.config.program_tau_ns
        return Settling(previous, self.clock.now_ns, tau) if tau else None

    def _settled_threshold(self) -> float:
        """A change counts as settled within half an LSB of the coupling DAC."""
        return 2.0 ** -(self.timing.dac.bits + 1)

    def _settle_ns(self) -> int:
        """How long a change programmed now takes to settle (0: instantaneous), ns."""
        return math.ceil(self.config.program_tau_ns * -math.log(self._settled_threshold()))

    def _coupling_seen(self, t_ns: int, interval_ns: int = 0) -> Coupling:
        """The coupling the cells see at ``t_ns`` (its average over ``interval_ns`` from
        there)."""
        coupling, settling = self._programmed(), self._coupling_settling
        if settling is None:
            return coupling
        return coupling.seen(settling.previous, settling.residual(t_ns, interval_ns))

    def _bias_seen(self, t_ns: int, interval_ns: int = 0) -> np.ndarray:
        """The bias the cells see at ``t_ns`` (its average over ``interval_ns`` from there)."""
        settling = self._bias_settling
        if settling is None:
            return self._b
        return seen_value(self._b, settling.previous, settling.residual(t_ns, interval_ns))

    def _segments(self, start_ns: int, total: int,
                  jump: bool = False) -> Iterator[tuple[_Stepper, int]]:
        """(stepper, steps) covering a run of ``total`` samples from device time
        ``start_ns``: while a programmed change settles, one stepper per sample interval with the
        coefficients frozen at their interval average (Euler-Maruyama on RC cells, the exact
        circuit step on second-order cells), then the programmed integrator for the rest; with
        ``jump`` (an unrecorded run) an exact integrator crosses the rest in one step.
        Lazy: each stepper starts from the state the previous left."""
        config, interval = self.config, self.config.sample_interval_ns
        pending = [s for s in (self._coupling_settling, self._bias_settling) if s is not None]
        settling = settling_samples(pending, start_ns, interval, total,
                                    self._settled_threshold())
        if settling:
            self._check_settling_path()
        for k in range(settling):
            t = start_ns + k * interval
            coupling, bias = self._coupling_seen(t, interval), self._bias_seen(t, interval)
            if config.dynamics != "overdamped":  # the circuit's exact step, redone per interval
                yield _CircuitStepper(circuit_transition(coupling.A, "exact", config), self._x,
                                      self._hidden, self._adc[3], bias, self._rng,
                                      self._exact_readout()), 1
                continue
            yield _EulerStepper(coupling, bias, self._x, self._rng,
                                config.em_step_ns / config.tau_ns, config.kappa0,
                                interval // config.em_step_ns, self._adc), 1
        if settling < total:
            self._coupling_settling = self._bias_settling = None  # settled
            rest = total - settling
            stepper = self._stepper(rest if jump else 1)
            yield stepper, rest // stepper.span

    def _check_settling_path(self) -> None:
        """Refuse a settling run Euler-Maruyama cannot step: the new coupling and the one it
        settles from must both be stable at em_step_ns (a dense blend then is too: its
        spectrum lies between theirs). Once per programmed change. (Second-order cells step
        exactly; each interval's circuit is checked as it is built.)"""
        if self._settling_checked or self.config.dynamics != "overdamped":
            return
        settling = self._coupling_settling
        if self._integrator != "euler_maruyama":  # else the run's own check covered it
            self._programmed().check("euler_maruyama", self.config)
        if settling is not None and settling.previous is not None:
            settling.previous.check("euler_maruyama", self.config)
        self._settling_checked = True

    def _checked_vector(self, v: np.ndarray, what: str) -> np.ndarray:
        """``v`` checked against the programmed size and for finiteness (not yet converted)."""
        self._programmed()
        if v.shape != (self.n,):
            raise ProtocolError(ErrorCode.BAD_SHAPE,
                                f"{what} must have shape [{self.n}] to match the programmed "
                                f"matrix, got {list(v.shape)}", expected=[self.n],
                                shape=list(v.shape))
        if not np.isfinite(v).all():
            raise ProtocolError(ErrorCode.NON_FINITE, f"{what} contains NaN or inf")
        return v

    def _uploaded(self, n_values: int, clipped: int) -> Result:
        timing = self.timing.upload(n_values, cells=self.n)
        self.clock.advance(timing)
        return {"dac_clipped": clipped, "timing": _wire(timing)}, {}

    def _steps_per_sample(self) -> int:
        if self._integrator == "exact":
            return 1
        return self.config.sample_interval_ns // self.config.em_step_ns

    def _work_per_sample(self, second_moments: bool) -> int:
        """Rough kernel work of one sample interval (multiply-adds), to size a run's chunks."""
        n = self.n
        if isinstance(self._transition, CircuitTransition):
            work = self._transition.step.phi.size
        elif isinstance(self._transition, FactoredTransition):
            work = 2 * self._transition.basis.size
        elif self._transition is not None:
            work = 16 * n
        else:
            work = self._programmed().elements * self._steps_per_sample()
        return work + (n * n if second_moments else 0)

    def _prepare(self) -> None:
        """Check the programmed coupling for the integrator, once per program (and, for the
        exact integrator, precompute its transition)."""
        if not self._ready:
            self._transition = self._programmed().check(self._integrator, self.config)
            self._ready = True

    def _stepper(self, span: int = 1) -> _Stepper:
        """The programmed integrator, set up from the current state and bias for one run; an
        exact one steps ``span`` sample intervals at a time (the others one)."""
        transition = self._transition
        if isinstance(transition, (FactoredTransition, ExactTransition)) and span > 1:
            transition = transition.over(span * self.config.sample_interval_ns
                                         / self.config.tau_ns)
        if isinstance(transition, CircuitTransition):
            return _CircuitStepper(transition, self._x, self._hidden, self._adc[3],
                                   self._b, self._rng, self._exact_readout())
        if isinstance(transition, FactoredTransition):
            return _FactoredStepper(transition, self._x, self._b, self._rng, self._adc, span)
        if transition is not None:
            return _ModalStepper(transition, self._x, self._adc[3], self._b, self._rng,
                                 self._exact_readout(), span)
        config = self.config
        return _EulerStepper(self._programmed(), self._b, self._x, self._rng,
                             config.em_step_ns / config.tau_ns, config.kappa0,
                             self._steps_per_sample(), self._adc)


class _ModalStepper:
    """The exact integrator: the state as y = V^T x, every mode on its own (O(N) a step), and
    with an anti-alias filter its output as g = V^T f, each alongside its mode.

    With an ideal ADC the run's sums stay in modal coordinates (``basis`` maps them back once);
    otherwise each sample is mapped to x for the ADC and the sums are in x already (``basis``
    None).
    """

    def __init__(self, transition: ExactTransition, x: np.ndarray, filtered: np.ndarray,
                 b: np.ndarray, rng: np.random.Generator, adc: AdcState, span: int = 1) -> None:
        self._t, self._rng, self._adc, self.span = transition, rng, adc, span
        V = transition.eigenvectors
        self.basis = V if adc[1][kernels.ADC_ACTIVE] == 0.0 else None
        modal_b = V.T @ b
        self._y = V.T @ x
        self._drive = transition.drive_gain * modal_b
        self._g = V.T @ filtered if transition.has_filter else np.zeros(0)
        self._filtered = transition.filtered.copy()
        if transition.has_filter:
            self._filtered[2] *= modal_b  # the filter's drive row, for this bias

    def advance(self, count: int, record: bool, second_moments: bool, sums: _Averager,
                lag: kernels.LagState) -> int:
        t = self._t
        return int(kernels.exact_modal_run(t.decay, self._drive, t.noise_sd, self._y,
                                           self._filtered, self._g, t.eigenvectors, count,
                                           self._rng, record, second_moments,
                                           (sums.sum_x, sums.sum_xx), lag, self._adc))

    def state_x(self) -> np.ndarray:
        return self._t.eigenvectors @ self._y

    def hidden(self, previous: np.ndarray) -> np.ndarray:
        return previous

    def store_filter(self, filtered: np.ndarray) -> None:
        if self._t.has_filter:
            filtered[:] = self._t.eigenvectors @ self._g


class _InPlaceStepper:
    """A stepper that advances the device's x array itself: no basis change, no hidden
    coordinates, and the filter output (if any) advanced in the readout path's own array."""

    basis = None
    span = 1  # sample intervals a step covers
    _x: np.ndarray

    def state_x(self) -> np.ndarray:
        return self._x

    def hidden(self, previous: np.ndarray) -> np.ndarray:
        return previous

    def store_filter(self, filtered: np.ndarray) -> None:
        """Nothing to store: the kernel advanced it in place, or there is no filter."""


class _FactoredStepper(_InPlaceStepper):
    """The exact integrator of a factored coupling, on x itself (O(rN) a step)."""

    def __init__(self, transition: FactoredTransition, x: np.ndarray, b: np.ndarray,
                 rng: np.random.Generator, adc: AdcState, span: int = 1) -> None:
        self._t, self._x, self._rng, self._adc, self.span = transition, x, rng, adc, span
        self._drive = transition.drive(b)

    def advance(self, count: int, record: bool, second_moments: bool, sums: _Averager,
                lag: kernels.LagState) -> int:
        t = self._t
        return int(kernels.exact_factored_run(t.basis, t.alpha, t.beta, t.decay_perp,
                                              t.noise_perp, self._drive, self._x, count,
                                              self._rng, record, second_moments,
                                              (sums.sum_x, sums.sum_xx), lag, self._adc))


class _EulerStepper(_InPlaceStepper):
    """Euler-Maruyama on x itself, with step h (tau units) and steps_per_sample per sample."""

    def __init__(self, coupling: Coupling, b: np.ndarray, x: np.ndarray,
                 rng: np.random.Generator, h: float, kappa0: float, steps_per_sample: int,
                 adc: AdcState) -> None:
        self._coupling, self._b, self._x, self._rng, self._adc = coupling, b, x, rng, adc
        self._h, self._noise = h, float(np.sqrt(2.0 * kappa0 * h))
        self._steps = steps_per_sample

    def advance(self, count: int, record: bool, second_moments: bool, sums: _Averager,
                lag: kernels.LagState) -> int:
        return self._coupling.euler(self._b, self._x, self._h, self._noise, count, self._steps,
                                    self._rng, record, second_moments,
                                    (sums.sum_x, sums.sum_xx), lag, self._adc)


class _CircuitStepper:
    """Second-order cells as a linear circuit: the exact step of z = (f, x, hidden), f (the
    anti-alias filter's output) present or not as :class:`device.coupling.CircuitTransition`
    says, O(d^2) a sample; the ADC reads z[:N]."""

    basis = None
    span = 1

    def __init__(self, ct: CircuitTransition, x: np.ndarray, hidden: np.ndarray,
                 filtered: np.ndarray, b: np.ndarray, rng: np.random.Generator,
                 adc: AdcState) -> None:
        self._step, self._rng, self._adc, self._n = ct.step, rng, adc, x.size
        self._filtered = ct.filtered
        self._hidden_size = ct.hidden_size
        parts = [filtered] * ct.filtered + [x, hidden[:ct.hidden_size]]
        self._z = np.concatenate(parts)
        self._x_at = x.size if ct.filtered else 0
        self._drive = ct.step.drive(ct.circuit.input_vector(b))

    def advance(self, count: int, record: bool, second_moments: bool, sums: _Averager,
                lag: kernels.LagState) -> int:
        step = self._step
        return int(kernels_linear.linear_sde_run(
            step.phi, self._drive, step.noise_factor, self._z, count, self._rng, record,
            second_moments, self._n, (sums.sum_x, sums.sum_xx), lag, self._adc))

    def state_x(self) -> np.ndarray:
        return self._z[self._x_at:self._x_at + self._n].copy()

    def hidden(self, previous: np.ndarray) -> np.ndarray:
        if not self._hidden_size:  # overdamped cells with a general drift
            return previous
        return self._z[self._x_at + self._n:].copy()

    def store_filter(self, filtered: np.ndarray) -> None:
        if self._filtered:
            filtered[:] = self._z[:self._n]


_Stepper = _ModalStepper | _FactoredStepper | _EulerStepper | _CircuitStepper


def _lag_in(lag: kernels.LagState, basis: np.ndarray | None,
            sum_lag: np.ndarray) -> kernels.LagState:
    """The lag correlator with its ring buffer's samples s mapped to basis^T s (None: as
    they are) and ``sum_lag`` (a segment's own) as its sum; the position is carried on. An
    empty ring (no correlator, or no sample held yet) is not mapped: nothing in it is read
    before it is written."""
    ring, _, position = lag
    if basis is None or not position[1]:
        return ring, sum_lag, position
    return np.ascontiguousarray(ring @ basis), sum_lag, position


def _wire(timing: dict[Phase, int]) -> dict[str, int]:
    return {phase.value: ns for phase, ns in timing.items()}
