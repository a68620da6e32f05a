"""The emulated SPU against closed forms: stationary law, Euler-Maruyama bias, relaxation.

Run in-process on the device object (no daemon); every tolerance comes from the closed-form
sampling error of the estimate (tests/stats.py) with fixed seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm

from spusim.device.config import DeviceConfig
from spusim.device.spu import EmulatedSPU
from tests import stats

KAPPA0 = 0.05
INTERVAL_NS = 100  # ADC sample interval: 0.1 tau at tau = 1 us
INTERVAL_TAU = 0.1

MATRICES = {
    "2x2 thermox": np.array([[3.0, 2.0], [2.0, 4.0]]),
    "8x8 cond 10": stats.spd_matrix(np.linspace(0.5, 5.0, 8), seed=1),
    "8x8 cond 1000": stats.spd_matrix(np.geomspace(0.05, 50.0, 8), seed=2),
}


def make_spu(**overrides: object) -> EmulatedSPU:
    settings: dict[str, object] = {"kappa0": KAPPA0, "sample_interval_ns": INTERVAL_NS}
    return EmulatedSPU(DeviceConfig(**{**settings, **overrides}))  # type: ignore[arg-type]


def stationary_samples(spu: EmulatedSPU, A: np.ndarray, b: np.ndarray, samples: int,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Burn in for 20 slowest relaxation times, then average ``samples`` samples."""
    spu.program(A)
    spu.set_bias(b)
    burn_tau = 20.0 / np.linalg.eigvalsh(A)[0]
    spu.run(int(np.ceil(burn_tau / INTERVAL_TAU)) * INTERVAL_NS, record=False, seed=seed)
    spu.run(samples * INTERVAL_NS, second_moments=True, clear=True)
    _, arrays = spu.read(second_moments=True)
    return arrays["mean"], arrays["second_moment"]


def centred_second_moment(mean: np.ndarray, second: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """(1/M) sum (x - mu)(x - mu)^T from the averages, about the known mean mu."""
    return second - np.outer(mu, mean) - np.outer(mean, mu) + np.outer(mu, mu)


def assert_mean_matches(mean: np.ndarray, mu: np.ndarray, cov_of_mean: np.ndarray) -> None:
    d2 = stats.mahalanobis_squared(mean - mu, cov_of_mean)
    assert d2 < stats.chi2_bound(mu.size), f"mean off by Mahalanobis^2 {d2:.1f}"


def max_z(estimate: np.ndarray, expected: np.ndarray, variance: np.ndarray) -> float:
    return float(np.max(np.abs(estimate - expected) / np.sqrt(variance)))


# 4.5 sigma per entry: a correct estimate of <= 36 entries exceeds it with probability < 3e-4.
Z_BOUND = 4.5


@pytest.mark.parametrize("name", MATRICES)
def test_exact_integrator_stationary_mean_and_covariance(name: str) -> None:
    A = MATRICES[name]
    n = A.shape[0]
    b = np.linspace(1.0, -1.0, n)
    mu = np.linalg.solve(A, b)
    samples = 200_000
    mean, second = stationary_samples(make_spu(), A, b, samples, seed=11)
    modes = stats.exact_modes(A, KAPPA0, INTERVAL_TAU)
    cov_of_mean = stats.covariance_of_mean(modes, samples)
    assert_mean_matches(mean, mu, cov_of_mean)
    # The test has teeth: a 2% error in the solution would be detected.
    assert stats.mahalanobis_squared(0.02 * mu, cov_of_mean) > 4 * stats.chi2_bound(n)
    covariance = centred_second_moment(mean, second, mu)
    variance = stats.second_moment_variance(modes, samples)
    assert max_z(covariance, KAPPA0 * np.linalg.inv(A), variance) < Z_BOUND


def test_euler_maruyama_stationary_bias_matches_closed_form() -> None:
    """EM's stationary covariance is kappa0 A^-1 (I - h A / 2)^-1, not kappa0 A^-1."""
    A = stats.spd_matrix(np.linspace(1.0, 10.0, 6), seed=3)  # h * lam_max = 1
    b = np.ones(6)
    h = 0.1
    spu = make_spu(integrator="euler_maruyama", em_step_ns=100)
    samples = 200_000
    mean, second = stationary_samples(spu, A, b, samples, seed=12)
    mu = np.linalg.solve(A, b)
    modes = stats.euler_modes(A, KAPPA0, h, steps_per_sample=1)
    assert_mean_matches(mean, mu, stats.covariance_of_mean(modes, samples))
    covariance = centred_second_moment(mean, second, mu)
    variance = stats.second_moment_variance(modes, samples)
    biased = KAPPA0 * np.linalg.inv(A) @ np.linalg.inv(np.eye(6) - h * A / 2)
    assert max_z(covariance, biased, variance) < Z_BOUND
    assert max_z(covariance, KAPPA0 * np.linalg.inv(A), variance) > 10 * Z_BOUND


@pytest.mark.parametrize("t_tau", [0.5, 1.0, 2.0, 5.0])
def test_mean_relaxes_as_exp_minus_At(t_tau: float) -> None:
    """From x0, x(t) ~ N(mu + e^{-At}(x0 - mu), kappa0 A^-1 (I - e^{-2At}))."""
    A = MATRICES["8x8 cond 10"]
    b = np.ones(8)
    mu = np.linalg.solve(A, b)
    x0 = mu + np.linalg.eigh(A)[1].sum(axis=1)  # every mode displaced by 1
    spu = make_spu(kappa0=1e-6)
    spu.program(A)
    spu.set_bias(b)
    spu.set_state(x0)
    steps = round(t_tau / INTERVAL_TAU)
    if steps > 1:
        spu.run((steps - 1) * INTERVAL_NS, record=False, seed=5)
    spu.run(INTERVAL_NS, clear=True, seed=6 if steps == 1 else None)  # record x(t) only
    x_t = spu.read()[1]["mean"]
    decay = expm(-A * t_tau)
    expected = mu + decay @ (x0 - mu)
    covariance = 1e-6 * np.linalg.inv(A) @ (np.eye(8) - decay @ decay)
    assert_mean_matches(x_t, expected, covariance)
    # Still far from equilibrium, measured in noise: a state stuck at mu would fail.
    assert stats.mahalanobis_squared(expected - mu, covariance) > 100 * stats.chi2_bound(8)


def test_noiseless_exact_integrator_is_exp_minus_At_to_rounding() -> None:
    A = MATRICES["8x8 cond 1000"]
    b, x0 = np.linspace(-1, 1, 8), np.ones(8)
    spu = make_spu(kappa0=0.0)
    spu.program(A)
    spu.set_bias(b)
    spu.set_state(x0)
    spu.run(30 * INTERVAL_NS, clear=True)
    spu.run(INTERVAL_NS, clear=True)
    x_t = spu.read()[1]["mean"]
    mu = np.linalg.solve(A, b)
    np.testing.assert_allclose(x_t, mu + expm(-3.1 * A) @ (x0 - mu), rtol=1e-9, atol=1e-12)


def test_noiseless_euler_maruyama_is_its_recursion() -> None:
    """With kappa0 = 0, EM is x <- x - h (A x - b), i.e. (I - hA)^k (x0 - mu) + mu."""
    A = MATRICES["8x8 cond 10"]
    b, x0 = np.ones(8), np.zeros(8)
    h, k = 0.02, 50
    spu = make_spu(kappa0=0.0, integrator="euler_maruyama", em_step_ns=20)
    spu.program(A)
    spu.set_bias(b)
    spu.set_state(x0)
    spu.run(k * 20, clear=True)  # 10 samples; the last is x after k steps
    spu.run(INTERVAL_NS, clear=True)
    mu = np.linalg.solve(A, b)
    expected = mu + np.linalg.matrix_power(np.eye(8) - h * A, k + 5) @ (x0 - mu)
    np.testing.assert_allclose(spu.read()[1]["mean"], expected, rtol=1e-10)


def test_integrators_agree_within_their_standard_errors() -> None:
    A = MATRICES["8x8 cond 10"]
    b = np.linspace(1.0, 2.0, 8)
    mu = np.linalg.solve(A, b)
    samples = 100_000
    h = 0.01
    exact_mean, exact_second = stationary_samples(make_spu(), A, b, samples, seed=21)
    em_spu = make_spu(integrator="euler_maruyama", em_step_ns=10)
    em_mean, em_second = stationary_samples(em_spu, A, b, samples, seed=22)
    exact_modes = stats.exact_modes(A, KAPPA0, INTERVAL_TAU)
    em_modes = stats.euler_modes(A, KAPPA0, h, steps_per_sample=10)
    joint = stats.covariance_of_mean(exact_modes, samples) + stats.covariance_of_mean(
        em_modes, samples)
    assert_mean_matches(em_mean - exact_mean, np.zeros(8), joint)
    # Covariances agree once EM's known (I - hA/2)^-1 bias is taken out.
    correction = np.eye(8) - h * A / 2
    em_cov = centred_second_moment(em_mean, em_second, mu)
    exact_cov = centred_second_moment(exact_mean, exact_second, mu)
    variance = (stats.second_moment_variance(exact_modes, samples)
                + stats.second_moment_variance(em_modes, samples))
    assert max_z(correction @ em_cov, exact_cov, variance * 1.1) < Z_BOUND


def test_same_seed_same_run_other_seed_other_run() -> None:
    A, b = MATRICES["2x2 thermox"], np.ones(2)

    def mean(seed: int) -> np.ndarray:
        spu = make_spu()
        spu.program(A)
        spu.set_bias(b)
        spu.run(1000 * INTERVAL_NS, seed=seed)
        return spu.read()[1]["mean"]

    np.testing.assert_array_equal(mean(7), mean(7))
    assert not np.array_equal(mean(7), mean(8))


@pytest.mark.slow
@pytest.mark.parametrize("integrator", ["exact", "euler_maruyama"])
def test_stationary_law_at_scale(integrator: str) -> None:
    """The long version of the stationary tests: N = 32, condition number 100, 2e6 samples."""
    A = stats.spd_matrix(np.geomspace(0.1, 10.0, 32), seed=9)
    b = np.sin(np.arange(32.0))
    mu = np.linalg.solve(A, b)
    samples = 2_000_000
    if integrator == "exact":
        spu, modes = make_spu(), stats.exact_modes(A, KAPPA0, INTERVAL_TAU)
    else:
        spu = make_spu(integrator="euler_maruyama", em_step_ns=50)
        modes = stats.euler_modes(A, KAPPA0, 0.05, steps_per_sample=2)
    mean, second = stationary_samples(spu, A, b, samples, seed=31)
    assert_mean_matches(mean, mu, stats.covariance_of_mean(modes, samples))
    covariance = centred_second_moment(mean, second, mu)
    # 528 entries: 5 sigma keeps the family-wise false alarm rate below 3e-4.
    assert max_z(covariance, modes.covariance, stats.second_moment_variance(modes, samples)) < 5
