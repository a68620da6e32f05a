"""Second-order (underdamped) cells as linear SDEs dz = (u - M z) dt + G dW, and the capacitor
programming maps of the RLC device.

Every builder returns a :class:`LinearCircuit`; :mod:`device.linear_sde` turns it into an exact
step and :mod:`device.kernels_linear` runs it. The observed coordinates (positions, voltages) come
first in z, so the ADC records ``z[:n_observed]``.

- :func:`underdamped_langevin`: z = (x, p), time in tau, the second-order version of the
  overdamped device (same stationary x, a momentum alongside).
- :func:`with_readout_filter`: any of them read through the anti-alias filter, z' = (f, z).
- :func:`rlc_network`: z = (v, i) in volts and amperes, time in seconds, the SPU's capacitively
  coupled RLC cells (Nature Comms 16, 3757, Eqs. 4-5).
- :func:`program_for_inverse`, :func:`program_for_covariance`: which capacitors realise a target
  matrix, with the sign and diagonal-dominance checks that positive capacitors impose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from spusim.device.linear_sde import checked_square

# Largest relative asymmetry max|A - A^T| / max|A| accepted as symmetric (as device.spu).
_SYMMETRY_RTOL = 1e-10
# Off-diagonals and row sums within this fraction of max|A| of zero are rounding: no capacitor.
_SIGN_RTOL = 1e-10
# How many offending entries an error message lists.
_LISTED = 6


@dataclass(frozen=True)
class LinearCircuit:
    """dz = (input_map @ bias - drift @ z) dt + diffusion @ dW, observed through z[:n_observed].

    drift M (d, d), diffusion G (d, k), input_map B (d, n): u = B bias for a constant bias (n,).
    """

    drift: np.ndarray
    diffusion: np.ndarray
    input_map: np.ndarray
    n_observed: int

    def input_vector(self, bias: np.ndarray) -> np.ndarray:
        """The constant input u = B bias (d,) of the SDE."""
        return self.input_map @ np.asarray(bias, dtype=float)


def underdamped_langevin(A: np.ndarray, kappa0: float, mass: float = 1.0,
                         friction: float = 1.0) -> LinearCircuit:
    """Underdamped Langevin dynamics of U(x) = x^T A x / 2 - b^T x, time in units of tau.

        dx = p/m dt,    dp = -(A x - b) dt - (gamma/m) p dt + sqrt(2 gamma kappa0) dW

    A (n, n) symmetric positive definite; kappa0 in (state unit)^2; m = ``mass`` and gamma =
    ``friction`` scalars > 0. z = (x, p), d = 2n; the bias b is the input (u = (0, b)).
    Stationary law: x ~ N(A^-1 b, kappa0 A^-1), p ~ N(0, kappa0 m I), independent.
    For gamma^2 >> m lambda_max(A), x follows the overdamped device with
    tau_eff = gamma tau (:func:`overdamped_time_constant`).
    """
    A = _symmetric(A, "A")
    _positive(mass, "mass")
    _positive(friction, "friction")
    _non_negative(kappa0, "kappa0")
    n = A.shape[0]
    identity, zero = np.eye(n), np.zeros((n, n))
    drift = np.block([[zero, -identity / mass], [A, friction / mass * identity]])
    diffusion = np.vstack([zero, np.sqrt(2.0 * friction * kappa0) * identity])
    return LinearCircuit(drift, diffusion, np.vstack([zero, identity]), n)


def with_readout_filter(circuit: LinearCircuit, rate: float) -> LinearCircuit:
    """``circuit`` read through a first-order low-pass on each observed coordinate:

        df = rate (z_observed - f) dt

    rate = 1 / tau_filter in the circuit's time unit. The filter output f (n_observed,) is put
    first, so z' = (f, z) and the ADC observes f.
    """
    _positive(rate, "the filter rate")
    n, d = circuit.n_observed, circuit.drift.shape[0]
    follow = np.zeros((n, d))
    follow[:, :n] = -rate * np.eye(n)
    drift = np.block([[rate * np.eye(n), follow], [np.zeros((d, n)), circuit.drift]])
    diffusion = np.vstack([np.zeros((n, circuit.diffusion.shape[1])), circuit.diffusion])
    input_map = np.vstack([np.zeros((n, circuit.input_map.shape[1])), circuit.input_map])
    return LinearCircuit(drift, diffusion, input_map, n)


def overdamped_time_constant(friction: float, tau: float = 1.0) -> float:
    """tau_eff = gamma tau: the overdamped device dx = -(A x - b) dt/tau_eff + sqrt(2 kappa0 /
    tau_eff) dW that :func:`underdamped_langevin` tends to as gamma grows (mass drops out)."""
    return float(friction) * float(tau)


def critical_friction(A: np.ndarray, mass: float = 1.0) -> float:
    """gamma = 2 sqrt(m lambda_min(A)): critical damping of the slowest mode, which then relaxes
    at rate sqrt(lambda_min / m) instead of the overdamped lambda_min / gamma."""
    return 2.0 * float(np.sqrt(mass * np.linalg.eigvalsh(_symmetric(A, "A"))[0]))


def rlc_network(capacitance: np.ndarray, inductance: float | np.ndarray,
                resistance: float | np.ndarray, kappa0: float) -> LinearCircuit:
    """The SPU's capacitively coupled RLC cells (Nature Comms Eqs. 4-5), time in seconds.

        di = L^-1 v dt,   dv = -C^-1 R^-1 v dt - C^-1 i dt + C^-1 I_bias dt + sqrt(2 kappa0) C^-1 dW

    capacitance: the Maxwell matrix C (n, n) in F, symmetric positive definite
    (:func:`maxwell_capacitance`); inductance L and resistance R per cell, in H and ohm, scalars
    or (n,); kappa0: injected current-noise intensity in A^2 s. z = (v, i): volts first, then
    amperes, d = 2n; the input is a DC current I_bias (n,) in A into each node.
    Stationary law for uniform R: v ~ N(0, kappa0 R C^-1), i ~ N(I_bias, kappa0 R L^-1),
    Cov(i, v) = 0 (Gibbs at k_B T_eff = kappa0 R). The inductors short DC, so the mean voltage
    is 0 whatever the bias: this topology samples and inverts, it cannot solve A x = b by its mean.
    """
    C = _symmetric(capacitance, "the capacitance matrix")
    n = C.shape[0]
    inv_L = 1.0 / _per_cell(inductance, n, "inductance")
    inv_R = 1.0 / _per_cell(resistance, n, "resistance")
    _non_negative(kappa0, "kappa0")
    try:
        C_inv = cho_solve(cho_factor(C), np.eye(n))
    except LinAlgError:
        raise ValueError("the capacitance matrix is not positive definite") from None
    C_inv = (C_inv + C_inv.T) / 2
    drift = np.block([[C_inv * inv_R[None, :], C_inv], [-np.diag(inv_L), np.zeros((n, n))]])
    diffusion = np.vstack([np.sqrt(2.0 * kappa0) * C_inv, np.zeros((n, n))])
    return LinearCircuit(drift, diffusion, np.vstack([C_inv, np.zeros((n, n))]), n)


def maxwell_capacitance(own: np.ndarray, coupling: np.ndarray) -> np.ndarray:
    """The Maxwell capacitance matrix (n, n) in F from each cell's own capacitor (n,) and the
    coupling capacitors (n, n), symmetric with a zero diagonal: C_ii = own_i + sum_j coupling_ij,
    C_ij = -coupling_ij."""
    own = np.asarray(own, dtype=float)
    coupling = _symmetric(coupling, "coupling")
    if own.shape != (coupling.shape[0],) or np.any(np.diag(coupling) != 0):
        raise ValueError("own must be (n,) and coupling (n, n) with a zero diagonal")
    return np.diag(own + coupling.sum(axis=1)) - coupling


@dataclass(frozen=True)
class CapacitorProgram:
    """Capacitors that realise ``maxwell`` = ``scale`` x target, all in F (scale in F per unit).

    own (n,) = row sums of maxwell; coupling (n, n), zero diagonal, = -maxwell off the diagonal.
    Negative entries only with ``sign_capable`` (differential couplings).
    """

    maxwell: np.ndarray
    own: np.ndarray
    coupling: np.ndarray
    scale: float


def program_for_inverse(A: np.ndarray, scale: float,
                        sign_capable: bool = False) -> CapacitorProgram:
    """Capacitors for C = scale A; Cov(v) = kappa0 R C^-1 then gives A^-1 (decode_covariance)."""
    return _program(A, "A", scale, sign_capable)


def program_for_covariance(Sigma: np.ndarray, scale: float,
                           sign_capable: bool = False) -> CapacitorProgram:
    """Capacitors for C = scale Sigma^-1; then v sqrt(scale / (kappa0 R)) ~ N(0, Sigma)."""
    Sigma = _symmetric(Sigma, "Sigma")
    precision = np.linalg.inv(Sigma)
    return _program((precision + precision.T) / 2, "Sigma^-1", scale, sign_capable)


def decode_covariance(voltage_covariance: np.ndarray, kappa0: float, resistance: float,
                      scale: float) -> np.ndarray:
    """Cov(v) scale / (kappa0 R): A^-1 for an inverse program, Sigma for a covariance program
    (uniform R in ohm, kappa0 in A^2 s, scale in F per unit, Cov(v) in V^2)."""
    return np.asarray(voltage_covariance, dtype=float) * (scale / (kappa0 * resistance))


def check_realisable(target: np.ndarray, name: str = "A", sign_capable: bool = False) -> None:
    """ValueError naming the entries of ``target`` (n, n) that no capacitor network realises.

    Positive capacitors need non-positive off-diagonals and non-negative row sums (diagonal
    dominance); with ``sign_capable`` only symmetry and positive definiteness are required.
    """
    target = _symmetric(target, name)
    n = target.shape[0]
    if not sign_capable:
        tolerance = _SIGN_RTOL * float(np.max(np.abs(target)))
        rows, cols = np.nonzero(np.triu(target > tolerance, k=1))
        problems = [f"{name}[{i},{j}] = {target[i, j]:+.3g} > 0 needs a negative capacitor"
                    for i, j in zip(rows, cols)]
        sums = target.sum(axis=1)
        problems += [f"row {i} of {name} sums to {sums[i]:+.3g} < 0: cell {i}'s own capacitor "
                     f"would be negative (needs diagonal dominance)"
                     for i in np.nonzero(sums < -tolerance)[0]]
        if problems:
            more = f" (and {len(problems) - _LISTED} more)" if len(problems) > _LISTED else ""
            raise ValueError(f"{name} cannot be programmed with positive capacitors: "
                             + "; ".join(problems[:_LISTED]) + more
                             + ". A device with differential couplings takes sign_capable=True.")
    smallest = float(np.linalg.eigvalsh(target)[0])
    if smallest <= n * np.finfo(float).eps * float(np.max(np.abs(target))):
        raise ValueError(f"{name} is not positive definite (smallest eigenvalue {smallest:.3g}): "
                         "it is no capacitance matrix")


def _program(target: np.ndarray, name: str, scale: float, sign_capable: bool) -> CapacitorProgram:
    _positive(scale, "scale")
    check_realisable(target, name, sign_capable)
    maxwell = float(scale) * _symmetric(target, name)
    coupling = -maxwell + np.diag(np.diag(maxwell))
    own = maxwell.sum(axis=1)
    if not sign_capable:  # rounding-level couplings and sign violations: no capacitor at all
        negligible = _SIGN_RTOL * float(np.max(np.abs(maxwell)))
        coupling = np.where(coupling > negligible, coupling, 0.0)
        own = np.maximum(own, 0.0)
        maxwell = maxwell_capacitance(own, coupling)
    return CapacitorProgram(maxwell, own, coupling, float(scale))


def _symmetric(matrix: np.ndarray, name: str) -> np.ndarray:
    matrix = checked_square(matrix, name)
    asymmetry = np.abs(matrix - matrix.T)
    if asymmetry.max() > _SYMMETRY_RTOL * np.abs(matrix).max():
        i, j = np.unravel_index(int(np.argmax(asymmetry)), asymmetry.shape)
        raise ValueError(f"{name} is not symmetric: {name}[{i},{j}] = {matrix[i, j]:.6g} but "
                         f"{name}[{j},{i}] = {matrix[j, i]:.6g}")
    return (matrix + matrix.T) / 2


def _per_cell(value: float | np.ndarray, n: int, name: str) -> np.ndarray:
    values = np.broadcast_to(np.asarray(value, dtype=float), (n,))
    if not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"every {name} must be positive and finite, got {value!r}")
    return values.copy()


def _positive(value: float, name: str) -> None:
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")


def _non_negative(value: float, name: str) -> None:
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be non-negative and finite, got {value!r}")
