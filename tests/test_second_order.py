"""Second-order physics (issue 3) against closed forms: the exact linear-SDE transition, the
underdamped Langevin and RLC circuits, their programming maps, and the numba kernel.

Statistical tolerances come from the exact sampling error of a vector AR(1) sequence
(tests/stats_second_order.py) with fixed seeds; every statistical test also asserts that a wrong
answer (2% off) would have been detected.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad_vec
from scipy.linalg import block_diag, expm
from scipy.stats import norm

from spusim.device import circuits, kernels_linear, linear_sde
from spusim.device.kernels import ideal_adc, no_lag
from spusim.device.kernels_linear import linear_sde_run
from tests import stats
from tests import stats_second_order as stats2

# A correct estimate fails a statistical test with probability < 3e-4 (Bonferroni over entries).
P_FALSE_ALARM = 3e-4
# An estimate this far off must sit at least twice the bound (in standard errors) from the truth.
WRONG_BY = 0.02

# A non-normal drift (eigenvalues 0.31 +- 0.93j, 2.94 +- 0.86j) with noise on two coordinates
# through one Wiener process: G G^T has rank 1.
NON_NORMAL_M = np.array([[1.0, 5.0, 0.0, 0.0], [0.0, 2.0, 3.0, 0.0],
                         [0.0, 0.0, 0.5, 4.0], [-0.1, 0.0, 0.0, 3.0]])
RANK_ONE_G = np.array([[0.0], [0.0], [1.0], [0.5]])

# A 4-cell target with non-positive off-diagonals and positive row sums: realisable.
RLC_TARGET = np.array([[2.0, -0.5, -0.3, 0.0], [-0.5, 2.5, -0.4, -0.6],
                       [-0.3, -0.4, 1.5, -0.2], [0.0, -0.6, -0.2, 1.2]])
RLC_SCALE = 1e-9  # F per unit: C = 1 nF x target
RLC_L, RLC_R, RLC_KAPPA0 = 1e-6, 100.0, 1e-13  # H, ohm, A^2 s: Q factor ~3, |v| ~ 0.1 V
RLC_INTERVAL = 400e-9  # s

LANGEVIN_A = stats.spd_matrix(np.linspace(0.5, 4.0, 4), seed=5)
LANGEVIN_KAPPA0 = 0.05


def z_bound(entries: int) -> float:
    """Per-entry |z| bound: all ``entries`` of a correct estimate pass with prob. > 1 - 3e-4."""
    return float(norm.isf(P_FALSE_ALARM / (2 * entries)))


def integral(f, h: float) -> np.ndarray:
    return quad_vec(f, 0.0, h, epsabs=1e-14, epsrel=1e-12)[0]


def run(step: linear_sde.LinearTransition, drive: np.ndarray, z: np.ndarray, samples: int,
        seed: int, n_observed: int, record: bool = True) -> tuple[int, np.ndarray, np.ndarray]:
    """Run the kernel from z (updated in place): (samples taken, sum_x, sum_xx)."""
    sum_x, sum_xx = np.zeros(n_observed), np.zeros((n_observed, n_observed))
    taken = linear_sde_run(step.phi, drive, step.noise_factor, z, samples,
                           np.random.default_rng(seed), record, True, n_observed,
                           (sum_x, sum_xx), no_lag(n_observed), ideal_adc(n_observed))
    return taken, sum_x, sum_xx


def stationary_run(M: np.ndarray, G: np.ndarray, u: np.ndarray, interval: float, samples: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray, linear_sde.LinearTransition]:
    """Burn in for 30 slowest relaxation times from z = 0, then record every coordinate:
    (sample mean (d,), sample second moment (1/n) sum z z^T (d, d), the step used)."""
    step = linear_sde.transition(M, G, interval)
    drive = step.drive(u)
    z = np.zeros(M.shape[0])
    rate = float(np.min(linear_sde.check_stable(M).real))
    run(step, drive, z, int(np.ceil(30.0 / (rate * interval))), seed, 0, record=False)
    taken, sum_x, sum_xx = run(step, drive, z, samples, seed + 1, M.shape[0])
    assert taken == samples
    return sum_x / samples, sum_xx / samples, step


def check_stationary_law(M: np.ndarray, G: np.ndarray, u: np.ndarray, interval: float,
                         samples: int, seed: int, mu: np.ndarray, S: np.ndarray) -> None:
    """The kernel's sample mean and covariance match mu and S within their sampling error,
    and would not match a mean or covariance WRONG_BY off."""
    mean, second, step = stationary_run(M, G, u, interval, samples, seed)
    cov_of_mean = stats2.covariance_of_mean(step.phi, S, samples)
    d2 = stats.mahalanobis_squared(mean - mu, cov_of_mean)
    assert d2 < stats.chi2_bound(mu.size), f"mean off by Mahalanobis^2 {d2:.1f}"
    covariance = second - np.outer(mu, mean) - np.outer(mean, mu) + np.outer(mu, mu)
    sd = np.sqrt(stats2.second_moment_variance(step.phi, S, samples))
    z = np.abs(covariance - S) / sd
    bound = z_bound(mu.size * (mu.size + 1) // 2)
    assert z.max() < bound, f"covariance entry off by {z.max():.1f} sigma"
    # Teeth: a mean or any variance WRONG_BY off would sit > 2 bounds away from the truth.
    assert stats.mahalanobis_squared(WRONG_BY * mu, cov_of_mean) > 4 * stats.chi2_bound(mu.size)
    assert np.min(WRONG_BY * np.diag(S) / np.diag(sd)) > 2 * bound


def rlc_circuit(resistance: float | np.ndarray = RLC_R) -> circuits.LinearCircuit:
    program = circuits.program_for_inverse(RLC_TARGET, RLC_SCALE)
    return circuits.rlc_network(program.maxwell, RLC_L, resistance, RLC_KAPPA0)


# ---------------------------------------------------------------- the exact transition


@pytest.mark.parametrize("h", [0.3, 5.0])
def test_transition_matches_expm_and_quadrature(h: float) -> None:
    """Phi = e^{-Mh}, Psi = int e^{-Ms} ds, Q = int e^{-Ms} G G^T e^{-M^T s} ds = S - Phi S Phi^T,
    for a non-normal M and a rank-one G."""
    M, G = NON_NORMAL_M, RANK_ONE_G
    step = linear_sde.transition(M, G, h)
    np.testing.assert_allclose(step.phi, expm(-M * h), atol=1e-14)
    np.testing.assert_allclose(step.psi, integral(lambda s: expm(-M * s), h), atol=1e-13)
    W = G @ G.T
    q = integral(lambda s: expm(-M * s) @ W @ expm(-M * s).T, h)
    np.testing.assert_allclose(step.q, q, atol=1e-13)
    S = linear_sde.stationary_covariance(M, G)
    np.testing.assert_allclose(step.q, S - step.phi @ S @ step.phi.T, atol=1e-13)
    factor = step.noise_factor
    np.testing.assert_allclose(factor @ factor.T, step.q, atol=1e-14)
    for array in (step.phi, step.psi, step.q, factor):
        assert array.flags.c_contiguous and array.dtype == np.float64


def test_transition_of_a_stiff_interval_and_of_mixed_units() -> None:
    """h ||M|| = 1e5 (sub-stepping) and the RLC network in SI units (balancing): Q still equals
    S - Phi S Phi^T and Psi equals M^-1 (I - Phi), each block to ~1e-10 of its own scale."""
    rlc = rlc_circuit()
    cases = [(NON_NORMAL_M, RANK_ONE_G, 1e4), (rlc.drift, rlc.diffusion, RLC_INTERVAL)]
    for M, G, h in cases:
        step = linear_sde.transition(M, G, h)
        S = linear_sde.stationary_covariance(M, G)
        sd = np.sqrt(np.diag(S))
        relative_q = (step.q - (S - step.phi @ S @ step.phi.T)) / np.outer(sd, sd)
        assert np.abs(relative_q).max() < 1e-10
        np.testing.assert_allclose(step.phi, expm(-M * h), atol=1e-12)
        psi = np.linalg.solve(M, np.eye(M.shape[0]) - step.phi)
        assert np.all(np.abs(step.psi - psi) <= 1e-10 * np.abs(psi).max(axis=1, keepdims=True))


def test_noise_factor_of_singular_and_rounded_covariances() -> None:
    # Noise only on an uncoupled coordinate: Q is exactly rank one, and so is its factor.
    step = linear_sde.transition(np.diag([1.0, 2.0, 3.0]), np.array([[1.0], [0.0], [0.0]]), 0.5)
    assert step.noise_factor.shape == (3, 1)
    np.testing.assert_allclose(step.noise_factor @ step.noise_factor.T, step.q, atol=1e-16)
    # A rank-one covariance with a rounding-level negative eigenvalue: clipped, not refused.
    q = np.ones((2, 2)) - np.array([[0.0, 1e-17], [1e-17, 0.0]])
    factor = linear_sde.noise_factor(q)
    assert factor.shape == (2, 1)
    np.testing.assert_allclose(factor @ factor.T, np.ones((2, 2)), atol=1e-15)
    # Mixed units do not decide the rank: 1e-30 A^2 next to 1 V^2 is kept.
    factor = linear_sde.noise_factor(np.diag([1.0, 1e-30]))
    assert factor.shape == (2, 2)
    assert linear_sde.noise_factor(np.zeros((2, 2))).shape == (2, 0)
    with pytest.raises(ValueError, match="not positive semi-definite"):
        linear_sde.noise_factor(np.array([[1.0, 2.0], [2.0, 1.0]]))


@pytest.mark.parametrize(("M", "named"), [
    (np.array([[0.0, -1.0], [1.0, 0.0]]), r"eigenvalue 0[+-]1j"),  # lossless LC: Re = 0
    (np.diag([1.0, -2.0]), r"eigenvalue -2,"),
    (np.zeros((2, 2)), r"eigenvalue 0,"),
])
def test_unstable_drift_is_refused_naming_the_eigenvalue(M: np.ndarray, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        linear_sde.transition(M, np.eye(2), 0.1)
    with pytest.raises(ValueError, match=named):
        linear_sde.stationary_covariance(M, np.eye(2))


# ---------------------------------------------------------------- circuits: closed forms


def test_underdamped_stationary_law_is_gibbs() -> None:
    """M S + S M^T = G G^T is solved by S = diag(kappa0 A^-1, kappa0 m I); mean (A^-1 b, 0)."""
    A, kappa0, mass = LANGEVIN_A, LANGEVIN_KAPPA0, 2.0
    circuit = circuits.underdamped_langevin(A, kappa0, mass=mass, friction=0.7)
    b = np.array([1.0, -1.0, 0.5, 2.0])
    S = linear_sde.stationary_covariance(circuit.drift, circuit.diffusion)
    expected = block_diag(kappa0 * np.linalg.inv(A), kappa0 * mass * np.eye(4))
    np.testing.assert_allclose(S, expected, atol=1e-14)
    mean = linear_sde.stationary_mean(circuit.drift, circuit.input_vector(b))
    np.testing.assert_allclose(mean, np.concatenate([np.linalg.solve(A, b), np.zeros(4)]),
                               atol=1e-14)


def test_rlc_stationary_law_is_gibbs_only_for_uniform_resistance() -> None:
    """Uniform R: v ~ N(0, kappa0 R C^-1), i ~ N(I_bias, kappa0 R L^-1), Cov(i, v) = 0.
    Per-cell R without matched noise breaks fluctuation-dissipation: the law changes."""
    circuit = rlc_circuit()
    C = RLC_SCALE * RLC_TARGET
    S = linear_sde.stationary_covariance(circuit.drift, circuit.diffusion)
    expected = block_diag(RLC_KAPPA0 * RLC_R * np.linalg.inv(C),
                          RLC_KAPPA0 * RLC_R / RLC_L * np.eye(4))
    sd = np.sqrt(np.diag(expected))
    assert np.abs((S - expected) / np.outer(sd, sd)).max() < 1e-10
    bias = np.array([1e-3, -2e-3, 5e-4, 3e-3])  # A
    mean = linear_sde.stationary_mean(circuit.drift, circuit.input_vector(bias))
    np.testing.assert_allclose(mean, np.concatenate([np.zeros(4), bias]), atol=1e-15)
    mismatched = rlc_circuit(np.array([50.0, 100.0, 200.0, 400.0]))
    S_mismatched = linear_sde.stationary_covariance(mismatched.drift, mismatched.diffusion)
    assert np.abs((S_mismatched - expected) / np.outer(sd, sd)).max() > 0.1


def test_large_friction_is_the_overdamped_device_with_tau_eff_gamma_tau() -> None:
    """Over t tau_eff (tau_eff = gamma tau), x maps by e^{-At}, b by (I - e^{-At}) A^-1 and the
    noise is kappa0 A^-1 (I - e^{-2At}), up to O(m lambda / gamma^2); not so at gamma = 2."""
    A, kappa0, t = LANGEVIN_A, LANGEVIN_KAPPA0, 0.5
    decay = expm(-A * t)
    noise = kappa0 * np.linalg.solve(A, np.eye(4) - decay @ decay)

    def mismatch(friction: float) -> float:
        circuit = circuits.underdamped_langevin(A, kappa0, friction=friction)
        step = linear_sde.transition(circuit.drift, circuit.diffusion,
                                     circuits.overdamped_time_constant(friction) * t)
        return max(np.abs(step.phi[:4, :4] - decay).max(),
                   np.abs(step.psi[:4, 4:] - np.linalg.solve(A, np.eye(4) - decay)).max(),
                   np.abs(step.q[:4, :4] - noise).max() / kappa0)

    assert mismatch(200.0) < 1e-4
    assert mismatch(2.0) > 1e-2


def test_critical_friction_relaxes_fastest() -> None:
    A = LANGEVIN_A
    gamma_c = circuits.critical_friction(A)

    def rate(friction: float) -> float:
        drift = circuits.underdamped_langevin(A, 1.0, friction=friction).drift
        return float(np.min(np.linalg.eigvals(drift).real))

    assert rate(gamma_c) == pytest.approx(np.sqrt(np.linalg.eigvalsh(A)[0]), rel=1e-6)
    assert rate(gamma_c) > max(rate(0.5 * gamma_c), rate(2.0 * gamma_c))


# ---------------------------------------------------------------- programming maps


def test_inverse_program_round_trip() -> None:
    program = circuits.program_for_inverse(RLC_TARGET, RLC_SCALE)
    np.testing.assert_allclose(program.maxwell, RLC_SCALE * RLC_TARGET, rtol=1e-15)
    assert np.all(program.own > 0) and np.all(program.coupling >= 0)
    np.testing.assert_allclose(program.own, RLC_SCALE * RLC_TARGET.sum(axis=1), rtol=1e-14)
    assert program.coupling[0, 1] == pytest.approx(0.5e-9) and program.coupling[0, 3] == 0.0
    np.testing.assert_allclose(circuits.maxwell_capacitance(program.own, program.coupling),
                               program.maxwell, rtol=1e-15)
    covariance_v = RLC_KAPPA0 * RLC_R * np.linalg.inv(program.maxwell)
    np.testing.assert_allclose(
        circuits.decode_covariance(covariance_v, RLC_KAPPA0, RLC_R, RLC_SCALE),
        np.linalg.inv(RLC_TARGET), rtol=1e-12)


def test_covariance_program_clips_rounding_and_decodes_sigma() -> None:
    Sigma = np.linalg.inv(RLC_TARGET)  # its inverse has exact zeros, recomputed with rounding
    program = circuits.program_for_covariance(Sigma, RLC_SCALE)
    assert np.all(program.coupling >= 0) and program.coupling[0, 3] == 0.0
    np.testing.assert_allclose(program.maxwell, RLC_SCALE * RLC_TARGET, atol=1e-23)
    covariance_v = RLC_KAPPA0 * RLC_R * np.linalg.inv(program.maxwell)
    np.testing.assert_allclose(
        circuits.decode_covariance(covariance_v, RLC_KAPPA0, RLC_R, RLC_SCALE), Sigma,
        rtol=1e-12)


def test_unrealisable_matrices_are_refused_naming_the_entries() -> None:
    A = RLC_TARGET.copy()
    A[0, 3] = A[3, 0] = 0.2
    with pytest.raises(ValueError, match=r"A\[0,3\] = \+0\.2 > 0 needs a negative capacitor"):
        circuits.program_for_inverse(A, RLC_SCALE)
    weak = RLC_TARGET.copy()
    weak[3, 3] = 0.7  # row 3 sums to -0.1: positive definite, not diagonally dominant
    with pytest.raises(ValueError, match=r"row 3 of A sums to -0\.1 < 0"):
        circuits.program_for_inverse(weak, RLC_SCALE)
    dense = np.full((5, 5), 0.1) + np.eye(5)  # 10 positive off-diagonal pairs
    with pytest.raises(ValueError, match=r"A\[0,1\] = \+0\.1 .*\(and 4 more\)"):
        circuits.program_for_inverse(dense, RLC_SCALE)
    with pytest.raises(ValueError, match=r"Sigma\^-1\[0,1\] = \+.* > 0 needs a negative"):
        circuits.program_for_covariance(np.array([[2.0, -1.0], [-1.0, 2.0]]), RLC_SCALE)
    with pytest.raises(ValueError, match=r"not symmetric: A\[0,1\]"):
        circuits.program_for_inverse(np.array([[2.0, -1.0], [-0.5, 2.0]]), RLC_SCALE)
    with pytest.raises(ValueError, match="not positive definite"):  # row sums 0: singular
        circuits.program_for_inverse(np.array([[1.0, -1.0], [-1.0, 1.0]]), RLC_SCALE)


def test_sign_capable_device_takes_any_spd_matrix() -> None:
    A = stats.spd_matrix(np.array([0.5, 1.0, 2.0, 3.0]), seed=4)
    A[0, 1] = A[1, 0] = abs(A[0, 1]) + 0.1  # a positive off-diagonal
    assert np.linalg.eigvalsh(A)[0] > 0
    with pytest.raises(ValueError, match="needs a negative capacitor"):
        circuits.program_for_inverse(A, RLC_SCALE)
    program = circuits.program_for_inverse(A, RLC_SCALE, sign_capable=True)
    np.testing.assert_allclose(program.maxwell, RLC_SCALE * A, rtol=1e-15)
    assert program.coupling[0, 1] < 0  # a differential coupling
    circuit = circuits.rlc_network(program.maxwell, RLC_L, RLC_R, RLC_KAPPA0)
    linear_sde.check_stable(circuit.drift)
    with pytest.raises(ValueError, match=r"not positive definite \(smallest eigenvalue -1"):
        circuits.program_for_inverse(np.diag([1.0, -1.0]), RLC_SCALE, sign_capable=True)


# ---------------------------------------------------------------- the kernel: stationary law


def test_kernel_underdamped_stationary_law() -> None:
    """x ~ N(A^-1 b, kappa0 A^-1), p ~ N(0, kappa0 m I): gamma = m = 1 (every mode oscillates),
    one sample per tau, 1e6 samples."""
    A, kappa0 = LANGEVIN_A, LANGEVIN_KAPPA0
    b = np.array([1.0, -1.0, 0.5, 2.0])
    circuit = circuits.underdamped_langevin(A, kappa0)
    mu = np.concatenate([np.linalg.solve(A, b), np.zeros(4)])
    S = block_diag(kappa0 * np.linalg.inv(A), kappa0 * np.eye(4))
    check_stationary_law(circuit.drift, circuit.diffusion, circuit.input_vector(b), 1.0,
                         1_000_000, seed=101, mu=mu, S=S)


def test_kernel_rlc_stationary_law_and_inverse() -> None:
    """4 RLC cells programmed with C = 1 nF x A: v ~ N(0, kappa0 R C^-1), i ~ N(I_bias,
    kappa0 R L^-1), Cov(i, v) = 0; and Cov(v) decodes to A^-1 within its standard error."""
    circuit = rlc_circuit()
    bias = np.array([1e-3, -2e-3, 5e-4, 3e-3])
    C_inv = np.linalg.inv(RLC_SCALE * RLC_TARGET)
    S = block_diag(RLC_KAPPA0 * RLC_R * C_inv, RLC_KAPPA0 * RLC_R / RLC_L * np.eye(4))
    mu = np.concatenate([np.zeros(4), bias])
    check_stationary_law(circuit.drift, circuit.diffusion, circuit.input_vector(bias),
                         RLC_INTERVAL, 1_000_000, seed=202, mu=mu, S=S)


def test_kernel_non_normal_drift_with_singular_noise() -> None:
    """The generic case thermox gets wrong: stationary S from M S + S M^T = G G^T, mean M^-1 u."""
    M, G = NON_NORMAL_M, RANK_ONE_G
    u = np.array([1.0, 0.0, -1.0, 0.5])
    S = linear_sde.stationary_covariance(M, G)
    mu = linear_sde.stationary_mean(M, u)
    check_stationary_law(M, G, u, 0.5, 2_000_000, seed=303, mu=mu, S=S)


# ---------------------------------------------------------------- the kernel: dynamics


@pytest.mark.parametrize("t", [0.5, 2.0, 5.0, 10.0])
def test_kernel_mean_relaxes_as_exp_minus_Mt(t: float) -> None:
    """From z0, z(t) ~ N(mu + e^{-Mt}(z0 - mu), Q(t)): underdamped (gamma = 0.5) with a bias."""
    A, b = LANGEVIN_A, np.array([1.0, -1.0, 0.5, 2.0])
    circuit = circuits.underdamped_langevin(A, 1e-6, friction=0.5)
    M, G = circuit.drift, circuit.diffusion
    mu = np.concatenate([np.linalg.solve(A, b), np.zeros(4)])
    z0 = mu + np.concatenate([np.linalg.eigh(A)[1].sum(axis=1), np.ones(4)])
    h = 0.5
    step = linear_sde.transition(M, G, h)
    z = z0.copy()
    steps = round(t / h)
    run(step, step.drive(circuit.input_vector(b)), z, steps, seed=7, n_observed=0, record=False)
    expected = mu + expm(-M * t) @ (z0 - mu)
    covariance = linear_sde.transition(M, G, t).q
    d2 = stats.mahalanobis_squared(z - expected, covariance)
    assert d2 < stats.chi2_bound(8), f"z(t) off by Mahalanobis^2 {d2:.1f}"
    # Still far from equilibrium, measured in noise: a state stuck at mu would fail.
    assert stats.mahalanobis_squared(expected - mu, covariance) > 100 * stats.chi2_bound(8)


@pytest.mark.parametrize("system", ["underdamped", "rlc"])
def test_noiseless_kernel_is_exp_minus_Mt_to_rounding(system: str) -> None:
    if system == "underdamped":
        circuit, h = circuits.underdamped_langevin(LANGEVIN_A, 0.0, friction=0.5), 0.5
        bias, z0 = np.array([1.0, -1.0, 0.5, 2.0]), np.ones(8)
    else:  # SI units: volts next to amperes
        program = circuits.program_for_inverse(RLC_TARGET, RLC_SCALE)
        circuit, h = circuits.rlc_network(program.maxwell, RLC_L, RLC_R, 0.0), RLC_INTERVAL
        bias, z0 = np.array([1e-3, -2e-3, 5e-4, 3e-3]), np.concatenate([np.ones(4), np.zeros(4)])
    M = circuit.drift
    step = linear_sde.transition(M, circuit.diffusion, h)
    assert step.noise_factor.shape == (8, 0)
    mu = linear_sde.stationary_mean(M, circuit.input_vector(bias))
    z = z0.copy()
    run(step, step.drive(circuit.input_vector(bias)), z, 25, seed=0, n_observed=0, record=False)
    expected = mu + expm(-M * 25 * h) @ (z0 - mu)
    scale = np.abs(z0 - mu).max(axis=None)
    np.testing.assert_allclose(z[:4], expected[:4], atol=1e-10 * scale)
    np.testing.assert_allclose(z[4:], expected[4:], atol=1e-10 * np.abs(expected[4:]).max())


def test_kernel_records_the_observed_coordinates_only() -> None:
    """Same seed, n_observed = 4 of 8: the sums are the observed block of the full ones."""
    circuit = rlc_circuit()
    step = linear_sde.transition(circuit.drift, circuit.diffusion, RLC_INTERVAL)
    drive = step.drive(circuit.input_vector(np.full(4, 1e-3)))
    full = run(step, drive, np.zeros(8), 1000, seed=3, n_observed=8)
    part = run(step, drive, np.zeros(8), 1000, seed=3, n_observed=4)
    np.testing.assert_array_equal(part[1], full[1][:4])
    np.testing.assert_allclose(part[2], full[2][:4, :4], rtol=1e-13)


def test_kernel_noise_does_not_depend_on_how_a_run_is_split() -> None:
    M, G = NON_NORMAL_M, RANK_ONE_G
    step = linear_sde.transition(M, G, 0.5)
    drive = step.drive(np.ones(4))
    whole = np.zeros(4)
    run(step, drive, whole, 200, seed=9, n_observed=4)
    split = np.zeros(4)
    sum_x, sum_xx = np.zeros(4), np.zeros((4, 4))
    rng = np.random.default_rng(9)
    for count in (37, 100, 63):
        linear_sde_run(step.phi, drive, step.noise_factor, split, count, rng, True, True, 4,
                       (sum_x, sum_xx), no_lag(4), ideal_adc(4))
    np.testing.assert_allclose(split, whole, rtol=1e-12)


def test_kernel_stops_at_a_non_finite_state() -> None:
    """phi = 1e100 I overflows at the 4th step: 3 samples taken and recorded."""
    phi = np.eye(2) * 1e100
    z = np.ones(2)
    sum_x, sum_xx = np.zeros(2), np.zeros((2, 2))
    taken = linear_sde_run(phi, np.zeros(2), np.zeros((2, 0)), z, 10,
                           np.random.default_rng(0), True, True, 2, (sum_x, sum_xx),
                           no_lag(2), ideal_adc(2))
    assert taken == 3
    np.testing.assert_allclose(sum_x, np.full(2, 1e100 + 1e200 + 1e300))
    assert np.all(np.isinf(z))


# ---------------------------------------------------------------- long runs


@pytest.mark.slow
def test_kernel_rlc_eight_cells_mismatched_resistors_at_scale() -> None:
    """The 8-cell SPU with random realisable couplings and per-cell L, 1e7 samples: the Gibbs law
    (v ~ N(0, kappa0 R C^-1), i ~ N(I_bias, kappa0 R L^-1)) for uniform R, and the Lyapunov law
    for mismatched R."""
    rng = np.random.default_rng(17)
    coupling = np.triu(rng.uniform(0.0, 0.3, (8, 8)), k=1) * (rng.random((8, 8)) < 0.6)
    C = circuits.maxwell_capacitance(rng.uniform(0.5, 1.5, 8), coupling + coupling.T) * 1e-9
    L = rng.uniform(0.5e-6, 2e-6, 8)
    gibbs = block_diag(RLC_KAPPA0 * RLC_R * np.linalg.inv(C), np.diag(RLC_KAPPA0 * RLC_R / L))
    bias = np.linspace(-3e-3, 3e-3, 8)  # A: the currents' mean; the voltages' stays 0
    mu = np.concatenate([np.zeros(8), bias])
    for resistance in (RLC_R, rng.uniform(60.0, 150.0, 8)):
        circuit = circuits.rlc_network(C, L, resistance, RLC_KAPPA0)
        if np.ndim(resistance) == 0:
            S = gibbs
        else:
            S = linear_sde.stationary_covariance(circuit.drift, circuit.diffusion)
        check_stationary_law(circuit.drift, circuit.diffusion, circuit.input_vector(bias),
                             RLC_INTERVAL, 10_000_000, seed=404, mu=mu, S=S)


@pytest.mark.slow
def test_kernel_underdamped_ill_conditioned_at_critical_damping() -> None:
    """N = 16, condition number 100, gamma critical for the slowest mode, 1e7 samples."""
    A = stats.spd_matrix(np.geomspace(0.1, 10.0, 16), seed=8)
    b = np.sin(np.arange(16.0))
    circuit = circuits.underdamped_langevin(A, LANGEVIN_KAPPA0,
                                            friction=circuits.critical_friction(A))
    mu = np.concatenate([np.linalg.solve(A, b), np.zeros(16)])
    S = block_diag(LANGEVIN_KAPPA0 * np.linalg.inv(A), LANGEVIN_KAPPA0 * np.eye(16))
    check_stationary_law(circuit.drift, circuit.diffusion, circuit.input_vector(b), 1.0,
                         10_000_000, seed=505, mu=mu, S=S)


# ---------------------------------------------------------------- must run last


def test_kernel_has_exactly_one_signature() -> None:
    kernels_linear.warm_up()
    assert len(linear_sde_run.signatures) == 1
