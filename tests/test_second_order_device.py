"""Underdamped and RLC cells on the emulated device: stationary laws within their sampling
error, the RLC programming constraints, and what these cells refuse."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from spusim.device.config import DeviceConfig, profile_config
from spusim.device.coupling import DenseCoupling, circuit_transition
from spusim.device.linear_sde import stationary_covariance
from spusim.device.mismatch import Array, deviations
from spusim.device.spu import EmulatedSPU
from spusim.protocol import ErrorCode, ProtocolError
from tests import stats, stats_second_order

KAPPA0 = 0.05
A_COUPLED = np.array([[3.0, -1.0, 0.0], [-1.0, 4.0, -0.5], [0.0, -0.5, 2.0]])  # realisable
B = np.array([1.0, -2.0, 0.5])


def stationary(config: DeviceConfig, A: np.ndarray, b: np.ndarray, burn_ns: int,
               samples: int) -> tuple[np.ndarray, np.ndarray]:
    spu = EmulatedSPU(config)
    spu.program(A)
    spu.set_bias(b)
    spu.run(burn_ns, record=False, seed=3)
    spu.run(samples * config.sample_interval_ns, second_moments=True, clear=True)
    _, arrays = spu.read(second_moments=True)
    return arrays["mean"], arrays["second_moment"]


@pytest.mark.parametrize("dynamics", ["underdamped", "rlc"])
def test_stationary_law_on_the_device(dynamics: str) -> None:
    """x (or v) ~ N(mean, kappa0 A^-1): the mean A^-1 b underdamped, 0 for RLC (no bias)."""
    config = DeviceConfig(dynamics=dynamics, kappa0=KAPPA0)
    b = B if dynamics == "underdamped" else np.zeros(3)
    mu = np.linalg.solve(A_COUPLED, b)
    samples = 2_000_000
    mean, second = stationary(config, A_COUPLED, b, 200_000, samples)
    ct = circuit_transition(A_COUPLED, "exact", config)
    S = stationary_covariance(ct.circuit.drift, ct.circuit.diffusion)
    observed = stats_second_order.observed
    cov_of_mean = observed(stats_second_order.covariance_of_mean(ct.step.phi, S, samples), 3)
    assert stats.mahalanobis_squared(mean - mu, cov_of_mean) < stats.chi2_bound(3)
    covariance = second - np.outer(mu, mean) - np.outer(mean, mu) + np.outer(mu, mu)
    variance = observed(stats_second_order.second_moment_variance(ct.step.phi, S, samples), 3)
    expected = KAPPA0 * np.linalg.inv(A_COUPLED)
    np.testing.assert_allclose(observed(S, 3), expected, rtol=1e-9)  # the closed form
    z = np.abs(covariance - expected) / np.sqrt(variance)
    assert z.max() < norm.isf(3e-4 / 12)  # 6 distinct entries, two-sided
    # Teeth: a covariance 5 % off would be caught.
    assert np.max(np.abs(0.05 * expected) / np.sqrt(variance)) > 2 * norm.isf(3e-4 / 12)


def test_rlc_programming_is_checked_and_names_the_entries() -> None:
    spu = EmulatedSPU(DeviceConfig(dynamics="rlc"))
    positive = np.array([[2.0, 0.3], [0.3, 2.0]])  # a positive off-diagonal: no capacitor does it
    with pytest.raises(ProtocolError) as info:
        spu.program(positive)
    assert info.value.code == ErrorCode.NOT_REALISABLE and "A[0,1]" in info.value.message
    EmulatedSPU(DeviceConfig(dynamics="rlc", sign_capable=True)).program(positive)
    spu.program(A_COUPLED)
    with pytest.raises(ProtocolError, match="short DC"):
        spu.set_bias(np.ones(3))
    spu.set_bias(np.zeros(3))
    for call in (lambda: spu.program_factored(np.ones((1, 3)), np.eye(1), 1.0),
                 lambda: (spu.program(A_COUPLED, integrator="euler_maruyama"), spu.run(100))):
        with pytest.raises(ProtocolError) as refused:
            call()
        assert refused.value.code == ErrorCode.BAD_ARGUMENT


def test_the_8_cell_board_profile_is_rlc_and_inverts_its_realised_matrix() -> None:
    """The board's readings have E[r r^T] = kappa0 A_chip^-1 + o o^T + (noise^2 + step^2/12) I:
    A as its 12-bit DAC and mismatch realise it, the readout offsets o, the readout noise and
    the ADC's rounding, within the sampling error. Mismatch is raised from the profile's 1 % to
    5 % so that the test can tell A_chip from A."""
    config = profile_config("spu-8cell", kappa0=0.05, mismatch=0.05)
    assert config.dynamics == "rlc" and config.cells == 8
    spu = EmulatedSPU(config)
    A = 1.5 * np.eye(8) - 0.15 * (np.ones((8, 8)) - np.eye(8))  # dominant diagonal, couplings < 0
    result, _ = spu.program(A)
    assert result["dac_clipped"] == 0
    spu.run(200_000, record=False, seed=1)
    result, _ = spu.run(30_000_000, second_moments=True, clear=True)
    assert result["adc_clipped"] == 0
    second = spu.read(second_moments=True)[1]["second_moment"]
    chip = DenseCoupling.program(A, config).A
    ct = circuit_transition(chip, "exact", config)
    S = stationary_covariance(ct.circuit.drift, ct.circuit.diffusion)
    offsets = config.readout_offset * deviations(config.serial, Array.READOUT_OFFSET, (8,))
    expected = (stats_second_order.observed(S, 8) + np.outer(offsets, offsets)
                + (config.readout_noise**2 + config.adc.step**2 / 12) * np.eye(8))
    sd = np.sqrt(stats_second_order.observed(
        stats_second_order.second_moment_variance(ct.step.phi, S, result["samples"]), 8))
    bound = norm.isf(1e-4 / 72)  # 36 distinct entries, two-sided
    assert np.max(np.abs(second - expected) / sd) < bound
    ideal = 0.05 * np.linalg.inv(A)
    assert np.max(np.abs(ideal - expected) / sd) > 2 * bound  # A_chip is not A: teeth
