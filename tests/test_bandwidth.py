"""Finite bandwidth against closed forms: the anti-alias filter before the ADC and the
first-order settling of programmed changes (device/settling.py).

Both are first-order stages, so a step through a cell mode of rate lam followed by a stage of
rate a gives the cascade response 1 - (a e^{-lam t} - lam e^{-a t}) / (a - lam); a filtered
stationary mode has variance kappa0/lam * a/(a + lam). Time in tau = 1 us throughout.
Deterministic runs (kappa0 = 0) are compared with these to the integrator's error bound: the
exact integrators to rounding, Euler-Maruyama to its first-order error, whose largest value for
a mode of rate c is about c h / (2e) of the step's size.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.stats import norm

from spusim.device.circuits import LinearCircuit, with_readout_filter
from spusim.device.cli import build_parser, device_fields
from spusim.device.config import DeviceConfig
from spusim.device.coupling import FactoredCoupling, circuit_transition
from spusim.device.linear_sde import stationary_covariance, transition
from spusim.device.mismatch import Array, deviations
from spusim.device.settling import Settling, settling_samples
from spusim.device.spu import EmulatedSPU
from spusim.device.transition import exact_transition
from spusim.protocol import ErrorCode, ProtocolError
from tests import stats, stats_second_order

TAU_NS = 1000
LAM = np.array([0.5, 1.0, 3.0, 8.0])
A = stats.spd_matrix(LAM, seed=5)
B = np.array([1.0, -1.0, 0.5, 2.0])
X_INF = np.linalg.solve(A, B)


def cascade_step(lam: np.ndarray, a: float, t: float) -> np.ndarray:
    """Unit step response of a stage of rate lam followed by one of rate a (a != lam)."""
    return 1.0 - (a * np.exp(-lam * t) - lam * np.exp(-a * t)) / (a - lam)


def through_modes(response: np.ndarray, target: np.ndarray) -> np.ndarray:
    """V diag(response) V^T target: a per-mode response of A applied to a vector."""
    _, V = np.linalg.eigh(A)
    return V @ (response * (V.T @ target))


def euler_tolerance(rate: float, h: float, size: float) -> float:
    """Twice Euler-Maruyama's leading-order global error, c h / (2e) of a step of ``size``."""
    return 2 * rate * h / (2 * math.e) * size


def reading_at(spu: EmulatedSPU, t_ns: int) -> np.ndarray:
    """Run unrecorded to t_ns minus one sample interval, then read the sample taken at t_ns."""
    interval = spu.config.sample_interval_ns
    if t_ns > interval:
        spu.run(t_ns - interval, record=False)
    spu.run(interval, clear=True)
    return spu.read()[1]["mean"]


# --- the anti-alias filter -------------------------------------------------------------------

@pytest.mark.parametrize("integrator,em_step_ns,offset", [
    ("exact", 100, 0.0), ("exact", 100, 0.01), ("euler_maruyama", 1, 0.0)])
def test_filter_step_response(integrator: str, em_step_ns: int, offset: float) -> None:
    """From x = f = 0 the bias steps to b: every mode of the reading follows the cascade of the
    cell (rate lam) and the filter (a = tau / readout_tau = 2). With a readout offset the ADC
    path maps every sample back from the eigenbasis and adds the chip's offsets."""
    a = 2.0
    config = DeviceConfig(kappa0=0.0, readout_tau_ns=TAU_NS / a, integrator=integrator,
                          em_step_ns=em_step_ns, readout_offset=offset, serial=3)
    offsets = offset * deviations(3, Array.READOUT_OFFSET, (4,))
    spu = EmulatedSPU(config)
    spu.program(A)
    spu.set_bias(B)
    readings, expected = [], []
    for _ in range(40):  # one sample interval (0.1 tau) at a time, to t = 4 tau
        spu.run(100, clear=True)
        readings.append(spu.read()[1]["mean"])
        expected.append(through_modes(cascade_step(LAM, a, len(readings) * 0.1), X_INF)
                        + offsets)
    error = np.max(np.abs(np.array(readings) - np.array(expected)))
    size = np.max(np.abs(X_INF))
    tolerance = (1e-12 * size if integrator == "exact"
                 else euler_tolerance(max(LAM.max(), a), em_step_ns / TAU_NS, size))
    assert error < tolerance
    unfiltered = [through_modes(1 - np.exp(-LAM * 0.1 * k), X_INF) + offsets
                  for k in range(1, 41)]
    assert np.max(np.abs(np.array(readings) - unfiltered)) > 20 * tolerance  # the filter shows


@pytest.mark.parametrize("a,d", [(2.0, 0.1), (1000.0, 0.1), (1.0, 0.1), (2.0, 1e-3),
                                 (2.0, 5.0)])
def test_filtered_modes_equal_van_loan(a: float, d: float) -> None:
    """The closed-form 2 x 2 step of a mode and its filter output (device.transition) equals
    the Van Loan step of dy = (1 - lam y) dt + sqrt(2 kappa0) dW, dg = a (y - g) dt: transition
    matrix, noise covariance and drive (to 1e-12 of their largest entry: at d = 1e-3 the
    filter's share is 1e-6 of the cell's and cancels), for a = lam, a >> lam, a << lam and long
    and short d."""
    lam, kappa0 = np.array([0.5, 1.0, 2.0, 8.0, 30.0]), 0.05
    step = exact_transition(lam, np.eye(5), kappa0, d, a)
    for k, rate in enumerate(lam):
        reference = transition(np.array([[rate, 0.0], [-a, a]]),
                               np.array([[np.sqrt(2 * kappa0)], [0.0]]), d)
        phi = np.array([[step.decay[k], 0.0], [step.filtered[0, k], step.filtered[1, k]]])
        factor = np.array([[step.noise_sd[k], 0.0], [step.filtered[3, k], step.filtered[4, k]]])
        drive = np.array([step.drive_gain[k], step.filtered[2, k]])  # c = 1
        np.testing.assert_allclose(phi, reference.phi, rtol=0, atol=1e-14)
        np.testing.assert_allclose(factor @ factor.T, reference.q, rtol=0,
                                   atol=1e-12 * np.abs(reference.q).max())
        expected = reference.drive(np.array([1.0, 0.0]))
        np.testing.assert_allclose(drive, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("dynamics", ["overdamped", "underdamped"])
def test_filtered_stationary_law(dynamics: str) -> None:
    """The ADC sees N(mu, S_ff): for RC cells S_ff = kappa0 A^-1 a (a I + A)^-1 in closed form;
    for both, the Lyapunov solution of the cells-plus-filter system; within the sampling
    error of that vector AR(1) sequence."""
    kappa0, a, n = 0.05, 2.0, 3
    A3 = np.array([[3.0, -1.0, 0.0], [-1.0, 4.0, -0.5], [0.0, -0.5, 2.0]])
    b = np.array([1.0, -2.0, 0.5])
    config = DeviceConfig(kappa0=kappa0, readout_tau_ns=TAU_NS / a, dynamics=dynamics)
    if dynamics == "overdamped":  # the RC cells and their filter as one circuit (Van Loan)
        cells = LinearCircuit(A3, np.sqrt(2 * kappa0) * np.eye(n), np.eye(n), n)
        circuit = with_readout_filter(cells, a)
        step = transition(circuit.drift, circuit.diffusion, 0.1)
    else:
        ct = circuit_transition(A3, "exact", config)
        circuit, step = ct.circuit, ct.step
    S = stationary_covariance(circuit.drift, circuit.diffusion)
    observed = stats_second_order.observed
    closed_form = kappa0 * np.linalg.inv(A3) @ (a * np.linalg.inv(a * np.eye(n) + A3))
    if dynamics == "overdamped":
        np.testing.assert_allclose(observed(S, n), closed_form, rtol=1e-9)
    spu = EmulatedSPU(config)
    spu.program(A3)
    spu.set_bias(b)
    spu.run(50_000, record=False, seed=4)
    samples = 400_000
    spu.run(samples * 100, second_moments=True, clear=True)
    arrays = spu.read(second_moments=True)[1]
    mean, second = arrays["mean"], arrays["second_moment"]
    mu = np.linalg.solve(A3, b)
    cov_of_mean = observed(stats_second_order.covariance_of_mean(step.phi, S, samples), n)
    assert stats.mahalanobis_squared(mean - mu, cov_of_mean) < stats.chi2_bound(n)
    covariance = second - np.outer(mu, mean) - np.outer(mean, mu) + np.outer(mu, mu)
    variance = observed(stats_second_order.second_moment_variance(step.phi, S, samples), n)
    bound = norm.isf(1e-4 / 12)  # 6 distinct entries, two-sided
    assert np.max(np.abs(covariance - observed(S, n)) / np.sqrt(variance)) < bound
    unfiltered = kappa0 * np.linalg.inv(A3)
    assert np.max(np.abs(covariance - unfiltered) / np.sqrt(variance)) > 10 * bound  # teeth


# --- settling of programmed changes ----------------------------------------------------------

def settling_spu(**overrides: object) -> EmulatedSPU:
    config = DeviceConfig(kappa0=0.0, program_tau_ns=300.0, em_step_ns=1,
                          sample_interval_ns=10, **overrides)
    return EmulatedSPU(config)


def test_bias_step_settles_through_the_programming_path() -> None:
    """A settled array, then the bias steps from 0 to b: each mode follows the cascade of the
    programming path (rate tau/tau_p) and the cell (lam)."""
    rate = TAU_NS / 300.0
    h, d = 1e-3, 1e-2  # Euler step and sample interval while settling, tau
    size = np.max(np.abs(X_INF))
    # Euler's error, plus freezing the bias at its interval mean: at most |b'| d^2 / 12.
    tolerance = euler_tolerance(LAM.max(), h, size) + rate * np.max(np.abs(B)) * d**2 / 12
    worst, effect = 0.0, 0.0
    for t_ns in (10, 150, 300, 600, 1200, 2500, 5000):
        spu = settling_spu()
        spu.program(A)
        spu.run(20_000, record=False)  # the coupling settles (x stays 0: no bias, no noise)
        spu.set_bias(B)
        reading = reading_at(spu, t_ns)
        worst = max(worst, np.max(np.abs(reading - through_modes(
            cascade_step(LAM, rate, t_ns / TAU_NS), X_INF))))
        effect = max(effect, np.max(np.abs(reading - through_modes(
            1 - np.exp(-LAM * t_ns / TAU_NS), X_INF))))
    assert worst < tolerance
    assert effect > 20 * tolerance  # an instantaneous bias would be caught


def test_coupling_change_settles_element_by_element() -> None:
    """From A_old = 2 I to A_new = 0.5 I with x0 and no bias:
    x(t) = x0 exp(-lam_new t - (lam_old - lam_new) tau_p (1 - e^{-t/tau_p}))."""
    tau_p, x0 = 0.3, np.array([1.0, -2.0, 3.0, 0.5])
    tolerance = euler_tolerance(2.0, 1e-3, 3.0)
    worst, effect = 0.0, 0.0
    for t_ns in (10, 100, 300, 700, 1500, 3000):
        spu = settling_spu()
        spu.program(2.0 * np.eye(4))
        spu.run(20_000, record=False)
        spu.set_state(x0)
        spu.program(0.5 * np.eye(4))
        t = t_ns / TAU_NS
        reading = reading_at(spu, t_ns)
        expected = x0 * np.exp(-0.5 * t - 1.5 * tau_p * (1 - np.exp(-t / tau_p)))
        worst = max(worst, np.max(np.abs(reading - expected)))
        effect = max(effect, np.max(np.abs(reading - x0 * np.exp(-0.5 * t))))
    assert worst < tolerance
    assert effect > 20 * tolerance


@pytest.mark.parametrize("t_ns", [600, pytest.param(1500, marks=pytest.mark.slow),
                                  pytest.param(3000, marks=pytest.mark.slow)])
def test_second_order_cells_settle_with_the_continuous_coefficient(t_ns: int) -> None:
    """Underdamped cells (m = gamma = 1) while the spring matrix settles from 4 I to I with
    tau_p = 0.3 tau, noiseless, against a tight ODE solution of dx = p dt,
    dp = -k(t) x dt - p dt with k(t) = 1 + 3 e^{-t/tau_p}. Freezing k at its interval mean is
    second order: error <= t d^2 max|k'| max|x| / 12. (Each settling interval recomputes the
    circuit's exact step: about 2 s a point.)"""
    k_old, k_new, tau_p, x0 = 4.0, 1.0, 0.3, np.array([1.0, -0.5])

    def reference(t: float) -> np.ndarray:
        def rates(s: float, z: np.ndarray) -> np.ndarray:
            k = k_new + (k_old - k_new) * np.exp(-s / tau_p)
            return np.concatenate([z[2:], -k * z[:2] - z[2:]])

        solved = solve_ivp(rates, (0.0, t), np.concatenate([x0, [0.0, 0.0]]), rtol=1e-12,
                           atol=1e-14)
        return solved.y[:2, -1]

    d, t = 0.01, t_ns / TAU_NS
    tolerance = t * d**2 * (k_old - k_new) / tau_p * 1.2 / 12  # |x| stays below 1.2
    spu = EmulatedSPU(DeviceConfig(kappa0=0.0, dynamics="underdamped", program_tau_ns=300.0,
                                   sample_interval_ns=10, em_step_ns=10))
    spu.program(k_old * np.eye(2))
    spu.run(4_000, record=False)  # past the 3 536 ns settling window
    spu.set_state(x0)
    spu.program(k_new * np.eye(2))
    reading = reading_at(spu, t_ns)
    assert np.max(np.abs(reading - reference(t))) < tolerance
    instant = EmulatedSPU(DeviceConfig(kappa0=0.0, dynamics="underdamped",
                                       sample_interval_ns=10, em_step_ns=10))
    instant.program(k_new * np.eye(2))
    instant.set_state(x0)
    assert np.max(np.abs(reading - reading_at(instant, t_ns))) > 100 * tolerance


def test_settling_ends_within_half_an_lsb_and_the_exact_integrator_resumes() -> None:
    """The settling path runs for ceil(tau_p ln 2^(bits+1) / d) intervals; after it the
    device solves exactly again."""
    spu = settling_spu()  # 16-bit DAC: 17 ln 2 tau_p = 3534 ns = 354 intervals of 10 ns
    settling = Settling(None, 0, 300.0)
    threshold = 2.0**-17
    count = settling_samples([settling], 0, 10, 10**6, threshold)
    assert count == math.ceil(300.0 * 17 * math.log(2) / 10) == 354
    assert settling.residual(count * 10) <= threshold < settling.residual((count - 1) * 10)
    assert settling_samples([settling], 10_000, 10, 100, threshold) == 0
    assert settling.residual(0, 10) == pytest.approx(300 / 10 * (1 - math.exp(-10 / 300)))
    settle_ns = math.ceil(300.0 * 17 * math.log(2))  # 3536
    assert spu.program(A)[0]["settle_ns"] == spu.set_bias(B)[0]["settle_ns"] == settle_ns
    spu.run(60_000, record=False)
    spu.run(10, clear=True)
    np.testing.assert_allclose(spu.read()[1]["mean"], X_INF, rtol=1e-12)
    assert EmulatedSPU(DeviceConfig()).program(A)[0]["settle_ns"] == 0


def test_factored_coupling_settles_element_by_element_and_then_solves() -> None:
    rng = np.random.default_rng(2)
    J, H = rng.standard_normal((2, 6)), np.diag([1.0, 0.5])
    config = DeviceConfig(program_tau_ns=300.0)
    new = FactoredCoupling.program(J, H, 1.0, config)
    old = FactoredCoupling.program(2 * J, 3 * H, 0.5, config)
    seen = new.seen(old, 0.25)
    np.testing.assert_allclose(seen.J, 1.25 * J)
    np.testing.assert_allclose(seen.H, 1.5 * H)
    np.testing.assert_allclose(seen.damping, np.full(6, 0.875))
    from_zero = new.seen(None, 0.25)
    np.testing.assert_allclose(from_zero.J, 0.75 * J)
    assert new.same_array(old) and not new.same_array(FactoredCoupling.program(
        J[:1], H[:1, :1], 1.0, config))
    spu = settling_spu()
    b = np.linspace(-1.0, 1.0, 6)
    spu.program_factored(J, H, 1.0)
    spu.set_bias(b)
    spu.run(30_000, record=False)
    spu.run(10, clear=True)
    np.testing.assert_allclose(spu.read()[1]["mean"],
                               np.linalg.solve(J.T @ H @ J + np.eye(6), b), rtol=1e-9)


def test_settling_is_refused_where_euler_maruyama_cannot_step() -> None:
    """The exact integrator runs a stiff matrix, but its settling is time-stepped."""
    stiff = stats.spd_matrix(np.array([1.0, 30.0]), seed=1)  # 0.1 tau x 30 >= 2
    plain = EmulatedSPU(DeviceConfig(kappa0=0.0))
    plain.program(stiff)
    plain.run(100)
    spu = EmulatedSPU(DeviceConfig(kappa0=0.0, program_tau_ns=100.0))
    spu.program(stiff)
    with pytest.raises(ProtocolError) as refused:
        spu.run(100)
    assert refused.value.code == ErrorCode.UNSTABLE_STEP and "em_step_ns" in refused.value.message


def test_bandwidth_options_are_validated() -> None:
    for bad in ({"program_tau_ns": -1.0}, {"readout_tau_ns": math.nan},
                {"program_tau_ns": math.inf}):
        with pytest.raises(ValueError):
            DeviceConfig(**bad)
    assert DeviceConfig(readout_tau_ns=50.0, dynamics="rlc").describe()["readout_tau_ns"] == 50.0
    args = build_parser().parse_args(["serve", "--program-tau-ns", "250", "--readout-tau-ns",
                                      "40"])
    assert device_fields(args) == {"program_tau_ns": 250.0, "readout_tau_ns": 40.0}
