"""The device's general (non-symmetric) drift, protocol 1.2: program(A, drift="general").

The exact step must stay exact for non-normal A (matrix exponentials, not an eigenbasis), the
stationary covariance must solve A S + S A^T = 2 kappa0 I, and the stability checks must read
eigenvalues' real parts (and, for Euler-Maruyama, |1 - h lambda|).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm, solve_continuous_lyapunov

from spusim.device.config import DeviceConfig, profile_config
from spusim.device.spu import EmulatedSPU
from spusim.driver.errors import InvalidRequest, MatrixRejected
from spusim.protocol import ErrorCode, ProtocolError

# Strongly non-normal: its eigenvectors are nearly parallel (eigenvector condition number ~ 1e4).
NON_NORMAL = np.array([[1.0, 40.0, 0.0], [0.0, 1.05, 5.0], [0.0, 0.0, 2.0]])


def test_one_exact_step_is_the_matrix_exponential_for_a_non_normal_drift() -> None:
    """Without noise, one sample interval d maps x to e^{-Ad} x + A^-1 (I - e^{-Ad}) b."""
    spu = EmulatedSPU(DeviceConfig(kappa0=0.0, sample_interval_ns=100))
    spu.program(NON_NORMAL, drift="general")
    x0, b = np.array([0.3, -0.2, 0.5]), np.array([1.0, 0.5, -1.0])
    spu.set_bias(b)
    spu.set_state(x0)
    spu.run(100)
    d = 0.1  # tau
    phi = expm(-NON_NORMAL * d)
    expected = phi @ x0 + np.linalg.solve(NON_NORMAL, (np.eye(3) - phi) @ b)
    np.testing.assert_allclose(spu.read()[1]["mean"], expected, rtol=1e-10, atol=1e-12)


def test_stationary_covariance_solves_the_lyapunov_equation() -> None:
    """Block averages of the second moment against A S + S A^T = 2 kappa0 I, z-scores from the
    blocks' own spread (20 blocks: t-quantiles)."""
    kappa0, blocks = 0.05, 20
    spu = EmulatedSPU(DeviceConfig(kappa0=kappa0, seed=3))
    spu.program(NON_NORMAL, drift="general")
    spu.run(100 * 1000, record=False, seed=1)
    moments = []
    for _ in range(blocks):
        spu.run(100 * 20_000, second_moments=True, clear=True)
        moments.append(spu.read(second_moments=True)[1]["second_moment"])
    moments = np.array(moments)
    expected = solve_continuous_lyapunov(NON_NORMAL, 2 * kappa0 * np.eye(3))
    z = (moments.mean(axis=0) - expected) / (moments.std(axis=0, ddof=1) / np.sqrt(blocks))
    assert np.abs(z).max() < 5.0
    symmetric_guess = kappa0 * np.linalg.inv((NON_NORMAL + NON_NORMAL.T) / 2)
    assert np.abs(moments.mean(axis=0) - symmetric_guess).max() > 1.0  # the test has teeth


def test_a_drift_with_an_eigenvalue_in_the_left_half_plane_is_refused() -> None:
    spu = EmulatedSPU(DeviceConfig())
    spu.program(np.array([[1.0, 3.0], [0.0, -0.5]]), drift="general")
    with pytest.raises(ProtocolError) as caught:
        spu.run(100)
    assert caught.value.code == ErrorCode.NOT_POSITIVE_DEFINITE
    assert caught.value.details["smallest_real_part"] == pytest.approx(-0.5)


def test_euler_maruyama_checks_complex_eigenvalues() -> None:
    """Eigenvalues 1 +- 30j: h Re(lambda) = 0.1 < 2 passes a real check, but |1 - h lambda| =
    3.1 would blow up; the general check refuses."""
    rotation = np.array([[1.0, 30.0], [-30.0, 1.0]])
    spu = EmulatedSPU(DeviceConfig(integrator="euler_maruyama"))
    spu.program(rotation, drift="general")
    with pytest.raises(ProtocolError) as caught:
        spu.run(100)
    assert caught.value.code == ErrorCode.UNSTABLE_STEP
    spu.program(np.array([[1.0, 3.0], [-3.0, 1.0]]), drift="general")
    spu.run(100 * 10)  # |1 - 0.1 (1 +- 3j)| < 1: runs


def test_a_symmetric_program_still_refuses_an_asymmetric_matrix() -> None:
    spu = EmulatedSPU(DeviceConfig())
    with pytest.raises(ProtocolError) as caught:
        spu.program(NON_NORMAL)
    assert caught.value.code == ErrorCode.NOT_SYMMETRIC


def test_second_order_cells_refuse_a_general_drift() -> None:
    spu = EmulatedSPU(profile_config("spu-8cell"))
    with pytest.raises(ProtocolError) as caught:
        spu.program(np.eye(2), drift="general")
    assert caught.value.code == ErrorCode.BAD_ARGUMENT


def test_mismatch_makes_each_directed_coupling_its_own_element() -> None:
    spu = EmulatedSPU(DeviceConfig(mismatch=0.01, serial=2))
    spu.program(np.ones((3, 3)) + np.eye(3), drift="general")
    realised = spu._coupling.A  # noqa: SLF001  (the chip's realised values)
    assert not np.allclose(realised, realised.T)


def test_over_the_wire(device) -> None:
    assert device.info["protocol"] >= [1, 3]  # the general drift came with 1.3
    device.program(NON_NORMAL, drift="general")
    device.run(100)
    with pytest.raises(InvalidRequest):
        device.program(NON_NORMAL, drift="skew")
    device.program(np.array([[1.0, 3.0], [0.0, -0.5]]), drift="general")
    with pytest.raises(MatrixRejected):
        device.run(100)
