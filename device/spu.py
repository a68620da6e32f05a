"""The emulated SPU: programmed state, noise stream, ADC averager and simulated clock.

One instance is one chip. Its state persists between calls like real hardware: programming a new
matrix or bias leaves the cell state alone unless asked (or unless the size changes). Each op
validates its input, advances the simulated clock by the timing model's cost, and returns
``(result, arrays)`` for the reply; bad input raises :class:`protocol.ProtocolError` and changes
nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from device import kernels
from device.config import DeviceConfig
from device.transition import (
    ExactTransition,
    check_euler_step,
    check_positive_definite,
    exact_transition,
)
from protocol import ErrorCode, ProtocolError
from timing import Phase, SimClock

# Kernel work per chunk of a run (multiply-adds); between chunks a run can be cancelled.
_CHUNK_WORK = 1 << 22
# Largest relative asymmetry max|A - A^T| / max|A| accepted as symmetric.
_SYMMETRY_TOLERANCE = 1e-10

Result = tuple[dict[str, Any], dict[str, np.ndarray]]


@dataclass
class _Averager:
    """Running sums of the ADC samples: first moments always, second moments on request."""

    sum_x: np.ndarray  # (n,)
    sum_xx: np.ndarray  # (n, n), or (0, 0) while no second moments are recorded
    samples: int = 0
    second_moment_samples: int = 0

    @classmethod
    def empty(cls, n: int, second_moments: bool = False) -> _Averager:
        return cls(np.zeros(n), np.zeros((n, n) if second_moments else (0, 0)))

    def absorb(self, run: _Averager, basis: np.ndarray | None) -> None:
        """Add a run's sums, taken in the coordinates y = basis^T x (None: in x itself)."""
        sum_x, sum_xx = run.sum_x, run.sum_xx
        if basis is not None:
            sum_x = basis @ sum_x
            sum_xx = basis @ sum_xx @ basis.T if run.second_moment_samples else sum_xx
        self.sum_x += sum_x
        self.samples += run.samples
        if run.second_moment_samples:
            self.sum_xx = self.sum_xx + sum_xx if self.second_moment_samples else sum_xx
            self.second_moment_samples += run.second_moment_samples


def canonical(array: np.ndarray) -> np.ndarray:
    """A C-contiguous, aligned, writeable float64 copy-if-needed: the kernels' one signature."""
    flags = array.flags
    if array.dtype == np.float64 and flags.c_contiguous and flags.aligned and flags.writeable:
        return array
    return np.array(array, dtype=np.float64, order="C")


class EmulatedSPU:
    """An SPU of ``config.cells`` RC cells solving dx = -(A x - b) dt/tau + sqrt(2 kappa0/tau) dW."""

    def __init__(self, config: DeviceConfig) -> None:
        self.config = config
        self.timing = config.timing
        self.clock = SimClock()
        self._rng = np.random.default_rng(config.seed)
        self._power_on()

    def _power_on(self) -> None:
        self._A: np.ndarray | None = None
        self._b = np.zeros(0)
        self._x = np.zeros(0)
        self._integrator = self.config.integrator
        self._ready = False  # the programmed matrix passed the integrator's checks
        self._transition: ExactTransition | None = None
        self._averager = _Averager.empty(0)

    @property
    def n(self) -> int:
        """Number of active cells (0 until a matrix is programmed)."""
        return 0 if self._A is None else self._A.shape[0]

    # --- ops -------------------------------------------------------------------------------

    def program(self, A: np.ndarray, reset_state: bool = False,
                integrator: str | None = None) -> Result:
        """Program the N x N coupling matrix A (symmetric; checked positive definite at run)."""
        if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
            raise ProtocolError(ErrorCode.BAD_SHAPE,
                                f"the coupling matrix must be square and non-empty, got shape "
                                f"{list(A.shape)}", shape=list(A.shape))
        n = A.shape[0]
        if n > self.config.cells:
            raise ProtocolError(ErrorCode.CAPACITY_EXCEEDED,
                                f"a {n} x {n} matrix needs {n} cells; this device has "
                                f"{self.config.cells}", cells=self.config.cells, requested=n)
        A = canonical(A)
        _check_symmetric_finite(A)
        resized = n != self.n
        self._A = A
        self._integrator = integrator or self.config.integrator
        self._ready, self._transition = False, None
        if resized:
            self._b = np.zeros(n)
            self._averager = _Averager.empty(n)
        if resized or reset_state:
            self._x = np.zeros(n)
        timing = self.timing.upload(n * n, cells=n)
        self.clock.advance(timing)
        return {"n": n, "integrator": self._integrator, "state_reset": resized or reset_state,
                "bias_reset": resized, "timing": _wire(timing)}, {}

    def set_bias(self, b: np.ndarray) -> Result:
        """Set the bias vector b (N,)."""
        self._b = self._checked_vector(b, "bias b")
        return self._uploaded(b.size)

    def set_state(self, x: np.ndarray) -> Result:
        """Set the cell state x (N,), e.g. to warm-start a run."""
        self._x = self._checked_vector(x, "state x")
        return self._uploaded(x.size)

    def run(self, duration_ns: int, record: bool = True, second_moments: bool = False,
            clear: bool = False, seed: int | None = None,
            cancel: threading.Event | None = None) -> Result:
        """Evolve for ``duration_ns``, the ADC sampling every ``sample_interval_ns``.

        ``record`` adds the samples to the averager (``second_moments`` also their outer
        products); ``clear`` first discards what it holds; ``seed`` restarts the noise stream.
        ``cancel`` stops the run between chunks.
        """
        self._programmed()
        interval = self.config.sample_interval_ns
        if duration_ns % interval:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                f"duration_ns={duration_ns} is not a multiple of the ADC sample "
                                f"interval ({interval} ns)", sample_interval_ns=interval)
        self._prepare()
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if clear:
            self._averager = _Averager.empty(self.n)
        stepper = self._stepper()
        sums = _Averager.empty(self.n, second_moments)  # this run's, in the stepper's coordinates
        total = duration_ns // interval
        chunk = max(kernels.SECOND_MOMENT_BATCH if second_moments else 1,
                    _CHUNK_WORK // self._work_per_sample(second_moments))
        done, failure = 0, None
        while done < total and failure is None:
            if cancel is not None and cancel.is_set():
                failure = ProtocolError(ErrorCode.SHUTTING_DOWN,
                                        f"run stopped after {done * interval} of {duration_ns} "
                                        "ns because the daemon is shutting down",
                                        completed_ns=done * interval)
                break
            count = min(chunk, total - done)
            taken = stepper.advance(count, record, second_moments, sums)
            # The clock moves with each chunk, so status shows a long run's progress.
            self.clock.advance(self.timing.evolve(min(taken + 1, count) * interval))
            done += taken
            if record:
                sums.samples += taken
                sums.second_moment_samples += taken if second_moments else 0
            if taken < count:
                failure = ProtocolError(ErrorCode.DIVERGED,
                                        f"the cell state left the finite range "
                                        f"{(done + 1) * interval} ns into the run; the state and "
                                        "the recorded samples were cleared",
                                        completed_ns=(done + 1) * interval)
        if failure is not None and failure.code == ErrorCode.DIVERGED:
            self._x, self._averager = np.zeros(self.n), _Averager.empty(self.n)
        else:
            self._x = stepper.state_x()
            self._averager.absorb(sums, stepper.basis)
        if failure is not None:
            raise failure
        return {"samples": total if record else 0,
                "timing": _wire(self.timing.evolve(duration_ns))}, {}

    def read(self, second_moments: bool = False, clear: bool = True) -> Result:
        """Time averages of the recorded samples: mean (N,), and second moment (N, N) E[x x^T]."""
        self._programmed()
        averager = self._averager
        if averager.samples == 0:
            raise ProtocolError(ErrorCode.NO_SAMPLES,
                                "no samples recorded since the last clearing read: run with "
                                "record=true first")
        if second_moments and averager.second_moment_samples == 0:
            raise ProtocolError(ErrorCode.NO_SAMPLES,
                                "no second moments recorded: run with second_moments=true first")
        arrays = {"mean": averager.sum_x / averager.samples}
        n_values = self.n
        if second_moments:
            moment = averager.sum_xx / averager.second_moment_samples
            arrays["second_moment"] = (moment + moment.T) / 2
            n_values += self.n * (self.n + 1) // 2  # a symmetric matrix: its upper triangle
        result = {"samples": averager.samples,
                  "second_moment_samples": averager.second_moment_samples if second_moments else 0}
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
        return {"programmed": self._A is not None, "n": self.n, "integrator": self._integrator,
                "samples": self._averager.samples,
                "second_moment_samples": self._averager.second_moment_samples,
                "sim_time_ns": self.clock.now_ns}

    # --- helpers ---------------------------------------------------------------------------

    def _programmed(self) -> np.ndarray:
        if self._A is None:
            raise ProtocolError(ErrorCode.NOT_PROGRAMMED,
                                "no coupling matrix is programmed: send 'program' first")
        return self._A

    def _checked_vector(self, v: np.ndarray, what: str) -> np.ndarray:
        self._programmed()
        if v.shape != (self.n,):
            raise ProtocolError(ErrorCode.BAD_SHAPE,
                                f"{what} must have shape [{self.n}] to match the programmed "
                                f"matrix, got {list(v.shape)}", expected=[self.n],
                                shape=list(v.shape))
        if not np.isfinite(v).all():
            raise ProtocolError(ErrorCode.NON_FINITE, f"{what} contains NaN or inf")
        return np.array(v, dtype=np.float64, order="C")

    def _uploaded(self, n_values: int) -> Result:
        timing = self.timing.upload(n_values, cells=self.n)
        self.clock.advance(timing)
        return {"timing": _wire(timing)}, {}

    def _steps_per_sample(self) -> int:
        if self._integrator == "exact":
            return 1
        return self.config.sample_interval_ns // self.config.em_step_ns

    def _work_per_sample(self, second_moments: bool) -> int:
        """Rough kernel work of one sample interval (multiply-adds), to size a run's chunks."""
        n = self.n
        work = 16 * n if self._transition is not None else n * n * self._steps_per_sample()
        return work + (n * n if second_moments else 0)

    def _prepare(self) -> None:
        """Check the programmed matrix for this integrator, once per program.

        Positive definiteness for both; step stability for Euler-Maruyama; the exact integrator
        also precomputes its transition operators.
        """
        if self._ready:
            return
        config, A = self.config, self._programmed()
        if self._integrator == "exact":
            eigenvalues, eigenvectors = np.linalg.eigh(A)
            check_positive_definite(eigenvalues)
            self._transition = exact_transition(eigenvalues, eigenvectors, config.kappa0,
                                                config.sample_interval_ns / config.tau_ns)
        else:
            eigenvalues = np.linalg.eigvalsh(A)
            check_positive_definite(eigenvalues)
            check_euler_step(eigenvalues, config.em_step_ns / config.tau_ns, config.em_step_ns)
        self._ready = True

    def _stepper(self) -> _ModalStepper | _EulerStepper:
        """The programmed integrator, set up from the current state and bias for one run."""
        if self._transition is not None:
            return _ModalStepper(self._transition, self._x, self._b, self._rng)
        config = self.config
        return _EulerStepper(self._programmed(), self._b, self._x, self._rng,
                             config.em_step_ns / config.tau_ns, config.kappa0,
                             self._steps_per_sample())


class _ModalStepper:
    """The exact integrator: the state as y = V^T x, every mode on its own (O(N) a step)."""

    def __init__(self, transition: ExactTransition, x: np.ndarray, b: np.ndarray,
                 rng: np.random.Generator) -> None:
        self.basis = transition.eigenvectors
        self._t, self._rng = transition, rng
        self._y = self.basis.T @ x
        self._drive = transition.drive_gain * (self.basis.T @ b)

    def advance(self, count: int, record: bool, second_moments: bool, sums: _Averager) -> int:
        t = self._t
        return int(kernels.exact_modal_run(t.decay, self._drive, t.noise_sd, self._y, count,
                                           self._rng, record, second_moments, sums.sum_x,
                                           sums.sum_xx))

    def state_x(self) -> np.ndarray:
        return self.basis @ self._y


class _EulerStepper:
    """Euler-Maruyama on x itself, with step h (tau units) and steps_per_sample per sample."""

    basis = None

    def __init__(self, A: np.ndarray, b: np.ndarray, x: np.ndarray, rng: np.random.Generator,
                 h: float, kappa0: float, steps_per_sample: int) -> None:
        self._A, self._b, self._x, self._rng = A, b, x, rng
        self._h, self._noise = h, float(np.sqrt(2.0 * kappa0 * h))
        self._steps = steps_per_sample

    def advance(self, count: int, record: bool, second_moments: bool, sums: _Averager) -> int:
        return int(kernels.euler_maruyama_run(self._A, self._b, self._x, self._h, self._noise,
                                              count, self._steps, self._rng, record,
                                              second_moments, sums.sum_x, sums.sum_xx))

    def state_x(self) -> np.ndarray:
        return self._x


def _check_symmetric_finite(A: np.ndarray) -> None:
    finite, largest, asymmetry = kernels.matrix_check(A)
    if not finite:
        i, j = np.argwhere(~np.isfinite(A))[0]
        raise ProtocolError(ErrorCode.NON_FINITE,
                            f"the coupling matrix contains NaN or inf (first at [{i}, {j}])",
                            index=[int(i), int(j)])
    if asymmetry > _SYMMETRY_TOLERANCE * largest:
        i, j = np.unravel_index(np.argmax(np.abs(A - A.T)), A.shape)
        raise ProtocolError(ErrorCode.NOT_SYMMETRIC,
                            f"the coupling matrix is not symmetric: A[{i},{j}] = {A[i, j]:.6g} "
                            f"but A[{j},{i}] = {A[j, i]:.6g}", index=[int(i), int(j)],
                            max_asymmetry=float(asymmetry))


def _wire(timing: dict[Phase, int]) -> dict[str, int]:
    return {phase.value: ns for phase, ns in timing.items()}
