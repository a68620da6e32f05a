"""The programmed coupling of the cells, as realised on the chip: a dense N x N matrix A, or the
factored form J^T H J + diag(lambda) the TNGD hardware proposal wires (arXiv 2405.13817,
App. C) without ever forming the N x N matrix.

Building one validates what the host sent (shape, finiteness, symmetry, capacity), then passes
every value through the coupling DAC (rounding, clipping) and the chip's fixed mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from spusim.device import kernels
from spusim.device.circuits import (
    LinearCircuit,
    check_realisable,
    rlc_network,
    underdamped_langevin,
    with_readout_filter,
)
from spusim.device.config import DeviceConfig
from spusim.device.linear_sde import LinearTransition, check_stable, transition
from spusim.device.mismatch import Array, deviations, symmetric_deviations
from spusim.device.settling import seen_value
from spusim.device.transition import (
    ExactTransition,
    FactoredTransition,
    check_euler_step,
    check_euler_step_general,
    check_positive_definite,
    exact_transition,
    factored_transition,
)
from spusim.protocol import ErrorCode, ProtocolError

# Largest relative asymmetry max|A - A^T| / max|A| accepted as symmetric.
SYMMETRY_TOLERANCE = 1e-10
# Up to this many cells the smallest eigenvalue of a factored coupling is taken densely.
_DENSE_SPECTRUM_N = 1024


def canonical(array: np.ndarray) -> np.ndarray:
    """A C-contiguous, aligned, writeable float64 copy-if-needed: the kernels' one signature."""
    flags = array.flags
    if array.dtype == np.float64 and flags.c_contiguous and flags.aligned and flags.writeable:
        return array
    return np.array(array, dtype=np.float64, order="C")


@dataclass(frozen=True)
class DenseCoupling:
    """A: (N, N) as realised: symmetric, or with ``general`` any real matrix (a non-reciprocal
    drift, protocol 1.3) whose eigenvalues the first run checks for positive real parts.
    elements: programmable elements used (N^2)."""

    A: np.ndarray
    dac_clipped: int
    general: bool = False

    @property
    def n(self) -> int:
        return self.A.shape[0]

    @property
    def elements(self) -> int:
        return self.n * self.n

    @classmethod
    def program(cls, A: np.ndarray, config: DeviceConfig, general: bool = False) -> DenseCoupling:
        """Validate A, then pass it through the coupling DAC and the chip's mismatch. A general
        drift runs on overdamped cells only; each of its N^2 directed couplings is an element
        of its own (its own mismatch), where a symmetric pair shares one."""
        check_dense(A, config)
        A = canonical(A)
        if general and config.dynamics != "overdamped":
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, "a general (non-symmetric) drift runs "
                                f"on overdamped cells only, not on {config.dynamics} cells",
                                dynamics=config.dynamics)
        _check_symmetric_finite(A, "the coupling matrix", "A", symmetric=not general)
        if config.dynamics == "rlc":
            try:
                check_realisable(A, "A", config.sign_capable)
            except ValueError as error:
                raise ProtocolError(ErrorCode.NOT_REALISABLE, str(error)) from None
        realised, clipped = _through_dac(A, config)
        if config.mismatch:
            n = A.shape[0]
            errors = (deviations(config.serial, Array.COUPLING, (n, n)) if general else
                      symmetric_deviations(config.serial, Array.COUPLING, n))
            realised *= 1 + config.mismatch * errors
        return cls(realised, clipped, general)

    def seen(self, previous: DenseCoupling | None, residual: float) -> DenseCoupling:
        """The coupling the cells see while settling from ``previous`` (None: zero) with
        ``residual`` r of the change missing: A + r (A_previous - A)."""
        old = None if previous is None else previous.A
        return DenseCoupling(seen_value(self.A, old, residual), self.dac_clipped, self.general)

    def same_array(self, other: Coupling | None) -> bool:
        """True when ``other`` occupies the same programmable elements (kind and shape)."""
        return isinstance(other, DenseCoupling) and other.A.shape == self.A.shape

    def check(self, integrator: str,
              config: DeviceConfig) -> ExactTransition | CircuitTransition | None:
        """Refuse a matrix the integrator cannot run; for "exact", its transition operators
        (per eigenmode, with the anti-alias filter's if there is one; those of the linear
        circuit for second-order cells and for a general drift)."""
        if config.dynamics != "overdamped" or (self.general and integrator == "exact"):
            return circuit_transition(self.A, integrator, config)
        if self.general:
            eigenvalues = _stable_eigenvalues(self.A)
            check_euler_step_general(eigenvalues, config.em_step_ns / config.tau_ns,
                                     config.em_step_ns)
            return None
        if integrator == "exact":
            eigenvalues, eigenvectors = np.linalg.eigh(self.A)
            check_positive_definite(eigenvalues)
            rate = config.tau_ns / config.readout_tau_ns if config.readout_tau_ns else 0.0
            return exact_transition(eigenvalues, eigenvectors, config.kappa0,
                                    config.sample_interval_ns / config.tau_ns, rate)
        eigenvalues = np.linalg.eigvalsh(self.A)
        check_positive_definite(eigenvalues)
        check_euler_step(eigenvalues, config.em_step_ns / config.tau_ns, config.em_step_ns)
        return None

    def euler(self, b, x, h, noise_scale, count, steps, rng, record, second, sums, lag,
              adc) -> int:
        return int(kernels.euler_maruyama_run(self.A, b, x, h, noise_scale, count, steps, rng,
                                              record, second, sums, lag, adc))


@dataclass(frozen=True)
class FactoredCoupling:
    """J: (m, N), H: (m, m) symmetric, damping: (N,) per-cell lambda, as realised.

    elements: programmable elements used, m (m + 2N): the arrays J, H and J^T.
    """

    J: np.ndarray
    H: np.ndarray
    damping: np.ndarray
    dac_clipped: int

    @property
    def n(self) -> int:
        return self.J.shape[1]

    @property
    def elements(self) -> int:
        m = self.J.shape[0]
        return m * (m + 2 * self.n)

    @classmethod
    def program(cls, J: np.ndarray, H: np.ndarray, damping: float,
                config: DeviceConfig) -> FactoredCoupling:
        check_factored(J, H, config)
        m, n = J.shape
        J, H = canonical(J), canonical(H)
        if not np.isfinite(J).all():
            raise ProtocolError(ErrorCode.NON_FINITE, "J contains NaN or inf")
        _check_symmetric_finite(H, "H", "H")
        dac, sigma, serial = config.coupling_dac, config.mismatch, config.serial
        J_chip, clipped_j = _through_dac(J, config)
        H_chip, clipped_h = _through_dac(H, config)
        lam, clipped_l = dac.apply(np.full(n, damping))
        if sigma:
            J_chip *= 1 + sigma * deviations(serial, Array.JACOBIAN, (m, n))
            H_chip *= 1 + sigma * symmetric_deviations(serial, Array.HESSIAN, m)
            lam *= 1 + sigma * deviations(serial, Array.DAMPING, (n,))
        return cls(J_chip, H_chip, lam, clipped_j + clipped_h + clipped_l)

    def seen(self, previous: FactoredCoupling | None, residual: float) -> FactoredCoupling:
        """The coupling the cells see while settling from ``previous`` (None: zero), element
        by element: J + r (J_previous - J), and likewise H and the damping."""
        old_j, old_h, old_l = (None, None, None) if previous is None else (
            previous.J, previous.H, previous.damping)
        return FactoredCoupling(seen_value(self.J, old_j, residual),
                                seen_value(self.H, old_h, residual),
                                seen_value(self.damping, old_l, residual), self.dac_clipped)

    def same_array(self, other: Coupling | None) -> bool:
        """True when ``other`` occupies the same programmable elements (kind and shapes)."""
        return (isinstance(other, FactoredCoupling) and other.J.shape == self.J.shape)

    def exact_unavailable(self, config: DeviceConfig) -> str | None:
        """Why the exact factored integrator cannot run this coupling on this device, or None."""
        if np.any(self.damping != self.damping[0]):
            return ("the exact integrator needs the same damping on every cell, and this chip's "
                    f"mismatch ({config.mismatch:g}) makes it differ: use euler_maruyama")
        if config.readout_tau_ns:
            return ("the exact factored integrator does not carry the anti-alias filter "
                    f"(readout_tau_ns = {config.readout_tau_ns:g}): use euler_maruyama")
        return None

    def check(self, integrator: str, config: DeviceConfig) -> FactoredTransition | None:
        """For "exact", the exact step (:func:`device.transition.factored_transition`, which
        checks positive definiteness from the exact spectrum). For Euler-Maruyama, bound the
        spectrum of J^T H J + diag(lambda) from m x m matrices, and refuse what would not
        settle or what it cannot step.

        The nonzero eigenvalues of J^T H J are those of K^(1/2) H K^(1/2), K = J J^T (m x m), so
        min(lambda) + min(0, mu_min) <= spectrum <= max(lambda) + max(0, mu_max), exactly when
        lambda is uniform. H need not be positive semi-definite: a rounded or mismatched
        Hessian that is slightly indefinite is fine as long as the damping dominates. When
        the bound is not above 0 and lambda differs between cells (mismatch), the bound cannot
        decide, and the smallest eigenvalue itself is computed (:meth:`smallest_eigenvalue`).
        """
        if integrator == "exact":
            return factored_transition(self.J, self.H, float(self.damping[0]), config.kappa0,
                                       config.sample_interval_ns / config.tau_ns)
        k_eigenvalues, k_vectors = np.linalg.eigh(self.J @ self.J.T)
        root = (k_vectors * np.sqrt(np.clip(k_eigenvalues, 0, None))) @ k_vectors.T
        mu = np.linalg.eigvalsh(root @ self.H @ root)
        lowest = float(self.damping.min()) + min(0.0, float(mu[0]))
        highest = float(self.damping.max()) + max(0.0, float(mu[-1]))
        if lowest <= 0 and np.any(self.damping != self.damping[0]):
            try:
                lowest = self.smallest_eigenvalue()
            except ArpackNoConvergence:  # undecided: keep the bound, and refuse
                pass
        if lowest <= highest * self.n * np.finfo(float).eps:
            raise ProtocolError(
                ErrorCode.NOT_POSITIVE_DEFINITE,
                f"J^T H J + lambda I is not positive definite: its smallest eigenvalue is "
                f"{lowest:.3g} (smallest lambda {float(self.damping.min()):.3g}, smallest "
                f"eigenvalue of J^T H J {min(0.0, float(mu[0])):.3g}): the dynamics would not "
                "settle. Nothing was run.", smallest_eigenvalue=lowest,
                smallest_damping=float(self.damping.min()))
        check_euler_step(np.array([lowest, highest]), config.em_step_ns / config.tau_ns,
                         config.em_step_ns, exact_available=self.exact_unavailable(config) is None)
        return None

    def smallest_eigenvalue(self) -> float:
        """The smallest eigenvalue of J^T H J + diag(lambda): dense below _DENSE_SPECTRUM_N
        cells, else Lanczos on the factored operator (O(mN) a product, no N x N matrix)."""
        J, H, damping = self.J, self.H, self.damping
        if self.n <= _DENSE_SPECTRUM_N:
            return float(np.linalg.eigvalsh(J.T @ H @ J + np.diag(damping))[0])
        operator = LinearOperator((self.n, self.n), dtype=float,
                                  matvec=lambda v: J.T @ (H @ (J @ v)) + damping * v)
        return float(eigsh(operator, k=1, which="SA", tol=1e-10,
                           return_eigenvectors=False)[0])

    def euler(self, b, x, h, noise_scale, count, steps, rng, record, second, sums, lag,
              adc) -> int:
        return int(kernels.euler_maruyama_factored_run(
            self.J, self.H, self.damping, b, x, h, noise_scale, count, steps, rng, record,
            second, sums, lag, adc))


Coupling = DenseCoupling | FactoredCoupling


@dataclass(frozen=True)
class CircuitTransition:
    """The cells as a linear circuit and its exact step over one sample interval.

    State z = (filter output f if ``filtered``, x, hidden), each (N,): the hidden coordinates
    are momenta or inductor currents (none for overdamped cells with a general drift); the ADC
    samples the first N.
    """

    circuit: LinearCircuit
    step: LinearTransition
    filtered: bool

    @property
    def hidden_size(self) -> int:
        """Hidden coordinates per state: N for second-order cells, 0 for overdamped ones."""
        n = self.circuit.n_observed
        return self.circuit.drift.shape[0] - n * (2 if self.filtered else 1)


def circuit_transition(A: np.ndarray, integrator: str, config: DeviceConfig) -> CircuitTransition:
    """The cells programmed with A as a linear circuit, and its exact step.

    Overdamped (a general drift, possibly non-normal): dx = -(A x - b) dt + sqrt(2 kappa0) dW,
    time in tau; the step is Van Loan's (device/linear_sde.py: matrix exponentials, no
    eigendecomposition, so it stays exact for non-normal A), after checking that every
    eigenvalue of A has a positive real part. Underdamped: time in tau. RLC: the Maxwell
    capacitance matrix is capacitance_farad * A and the injected current noise kappa0 *
    capacitance_farad / resistance_ohm (A^2 s), so that the voltages' stationary covariance is
    kappa0 A^-1, as on the overdamped device; time in seconds. With ``readout_tau_ns`` the
    filter output leads the state (:func:`device.circuits.with_readout_filter`).
    """
    if integrator != "exact":
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"{config.dynamics} cells run the exact "
                            "integrator only", integrator=integrator)
    per_ns = 1.0 / config.tau_ns  # the circuit's time unit per ns
    if config.dynamics == "overdamped":
        _stable_eigenvalues(A)
        n = A.shape[0]
        circuit = LinearCircuit(A, np.sqrt(2.0 * config.kappa0) * np.eye(n), np.eye(n), n)
    elif config.dynamics == "underdamped":
        check_positive_definite(np.linalg.eigvalsh(A))
        circuit = underdamped_langevin(A, config.kappa0, config.mass, config.friction)
    else:
        check_positive_definite(np.linalg.eigvalsh(A))
        scale, resistance = config.capacitance_farad, config.resistance_ohm
        circuit = rlc_network(scale * A, config.inductance_henry, resistance,
                              config.kappa0 * scale / resistance)
        per_ns = 1e-9
    if config.readout_tau_ns:
        circuit = with_readout_filter(circuit, 1.0 / (config.readout_tau_ns * per_ns))
    interval = config.sample_interval_ns * per_ns
    return CircuitTransition(circuit, transition(circuit.drift, circuit.diffusion, interval),
                             filtered=bool(config.readout_tau_ns))


def _through_dac(values: np.ndarray, config: DeviceConfig) -> tuple[np.ndarray, int]:
    """Coupling values as the DAC converts them, and how many clipped. An ideal DAC on a chip
    without mismatch changes nothing, so ``values`` itself is kept, not copied (a coupling's
    arrays are never written to; the daemon's are its received frames): in-process callers
    must not change an array they programmed."""
    if config.coupling_dac.full_scale is None and not config.mismatch:
        return values, 0
    return config.coupling_dac.apply(values)


def check_dense(A: np.ndarray, config: DeviceConfig) -> None:
    """BAD_SHAPE unless the coupling A is a non-empty square matrix; CAPACITY_EXCEEDED unless
    the device holds it (the daemon checks this before queueing, and again on programming)."""
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ProtocolError(ErrorCode.BAD_SHAPE, "the coupling matrix must be square and "
                            f"non-empty, got shape {list(A.shape)}", shape=list(A.shape))
    _check_capacity(A.shape[0], A.size, config)


def check_factored(J: np.ndarray, H: np.ndarray, config: DeviceConfig) -> None:
    """BAD_SHAPE unless J is a non-empty m x N matrix and H m x m; CAPACITY_EXCEEDED unless the
    device holds their m (m + 2N) elements on N cells (checked before queueing and again on
    programming, as :func:`check_dense`)."""
    if J.ndim != 2 or 0 in J.shape:
        raise ProtocolError(ErrorCode.BAD_SHAPE, f"J must be a non-empty m x N matrix, got "
                            f"shape {list(J.shape)}", shape=list(J.shape))
    m, n = J.shape
    if H.shape != (m, m):
        raise ProtocolError(ErrorCode.BAD_SHAPE, f"H must be {m} x {m} to match J's {m} "
                            f"rows, got shape {list(H.shape)}", shape=list(H.shape))
    _check_capacity(n, m * (m + 2 * n), config)


def _check_capacity(n: int, elements: int, config: DeviceConfig) -> None:
    """N cells at most ``cells``; programmable elements at most cells^2 (a full dense array)."""
    if n > config.cells or elements > config.cells**2:
        raise ProtocolError(ErrorCode.CAPACITY_EXCEEDED,
                            f"the coupling needs {n} cells and {elements} programmable elements; "
                            f"this device has {config.cells} cells and {config.cells**2} "
                            "elements", cells=config.cells, requested=n,
                            elements=config.cells**2, requested_elements=elements)


def _stable_eigenvalues(A: np.ndarray) -> np.ndarray:
    """The eigenvalues (complex) of a general drift A; NOT_POSITIVE_DEFINITE (the dynamics would
    not settle) naming one whose real part is not positive."""
    try:
        return check_stable(A)
    except ValueError as error:
        eigenvalues = np.linalg.eigvals(A)
        weakest = complex(eigenvalues[np.argmin(eigenvalues.real)])
        raise ProtocolError(ErrorCode.NOT_POSITIVE_DEFINITE,
                            f"the drift is unstable: {error}. Nothing was run.",
                            smallest_real_part=weakest.real, imaginary_part=weakest.imag
                            ) from None


def _check_symmetric_finite(A: np.ndarray, what: str, name: str, symmetric: bool = True) -> None:
    """NON_FINITE for NaN or inf in A, and NOT_SYMMETRIC (only when ``symmetric``)."""
    finite, largest, asymmetry = kernels.matrix_check(A)
    if not finite:
        i, j = np.argwhere(~np.isfinite(A))[0]
        raise ProtocolError(ErrorCode.NON_FINITE,
                            f"{what} contains NaN or inf (first at [{i}, {j}])",
                            index=[int(i), int(j)])
    if symmetric and asymmetry > SYMMETRY_TOLERANCE * largest:
        i, j = np.unravel_index(np.argmax(np.abs(A - A.T)), A.shape)
        raise ProtocolError(ErrorCode.NOT_SYMMETRIC,
                            f"{what} is not symmetric: {name}[{i},{j}] = {A[i, j]:.6g} but "
                            f"{name}[{j},{i}] = {A[j, i]:.6g}", index=[int(i), int(j)],
                            max_asymmetry=float(asymmetry))
