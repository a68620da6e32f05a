"""logdet, lyapunov and expnegm against closed forms (numpy slogdet, scipy's
solve_continuous_lyapunov, scipy's expm of -tA), within the estimate's own standard error.

Fixed seeds; the tolerances are the results' own: the batch-means standard error (t-quantiles
of 10 or 20 blocks) plus the reported quadrature error for logdet. Long runs are marked slow.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm, solve_continuous_lyapunov

from spusim import Device, linalg
from spusim.linalg.logdet import clenshaw_curtis
from tests import stats
from tests.conftest import ServedDevice

# A non-normal drift with eigenvalues 1, 2, 0.5, 3 but eigenvectors far from orthogonal.
NON_NORMAL = np.array([[1.0, 5.0, 0.0, 0.0], [0.0, 2.0, 3.0, 0.0],
                       [0.0, 0.0, 0.5, 4.0], [-0.1, 0.0, 0.0, 3.0]])
# Non-normal with a positive definite symmetric part: expnegm needs no shift.
MILD = np.array([[1.0, 1.5, 0.0], [0.0, 1.2, 1.5], [0.0, 0.0, 1.5]])
SPD = stats.spd_matrix(np.linspace(0.5, 5.0, 6), seed=4)
Z_BOUND = 5.0  # |t| with 9 to 19 degrees of freedom, over <= 36 entries: false alarm < 1 %


def _z(estimate: np.ndarray, truth: np.ndarray, standard_error: np.ndarray) -> float:
    return float(np.max(np.abs(estimate - truth) / standard_error))


def test_clenshaw_curtis_is_exact_for_polynomials_of_degree_k() -> None:
    nodes, weights = clenshaw_curtis(8)
    for degree in range(9):
        assert weights @ nodes**degree == pytest.approx(1 / (degree + 1), abs=1e-13)
    assert weights.sum() == pytest.approx(1.0)


def test_logdet_spd(device: Device) -> None:
    result = linalg.logdet(device, SPD, t_sample=4000, seed=1)
    truth = np.linalg.slogdet(SPD)[1]
    assert abs(result.logdet - truth) <= 3 * result.sampling_error + result.quadrature_error
    assert 3 * result.sampling_error + result.quadrature_error < 0.02 * abs(truth)  # teeth
    assert result.quadrature_error < 0.1  # the rule on every other node agrees
    assert result.device_time_ns > 8 * (50 + 4000) * device.tau_ns
    assert result.samples == 8 * 4000 * device.tau_ns // device.config["sample_interval_ns"]


def test_logdet_ill_conditioned(device: Device) -> None:
    """Condition number 100: slower relaxation (longer runs) and poles of f near lambda = 1
    (more nodes)."""
    A = stats.spd_matrix(np.geomspace(0.1, 10.0, 5), seed=5)
    result = linalg.logdet(device, A, intervals=16, t_burn=100, t_sample=2000, seed=2)
    truth = np.linalg.slogdet(A)[1]
    assert abs(result.logdet - truth) <= 4 * result.sampling_error + result.quadrature_error
    assert result.quadrature_error < 0.05


def test_lyapunov_non_normal_drift(device: Device) -> None:
    result = linalg.lyapunov(device, NON_NORMAL, t_sample=4000, blocks=20, seed=3)
    truth = solve_continuous_lyapunov(NON_NORMAL, np.eye(4))
    assert _z(result.X, truth, result.standard_error) < Z_BOUND
    assert np.linalg.norm(result.X - truth) <= 3 * result.error_estimate
    symmetric = solve_continuous_lyapunov((NON_NORMAL + NON_NORMAL.T) / 2, np.eye(4))
    assert _z(result.X, symmetric, result.standard_error) > 5 * Z_BOUND  # teeth


def test_lyapunov_general_diffusion(device: Device) -> None:
    """Q symmetric positive definite, realised by the similarity transform L^-1 A L."""
    Q = stats.spd_matrix(np.array([0.5, 1.0, 2.0, 4.0]), seed=6)
    result = linalg.lyapunov(device, NON_NORMAL, Q, t_sample=4000, blocks=20, seed=4)
    truth = solve_continuous_lyapunov(NON_NORMAL, Q)
    assert _z(result.X, truth, result.standard_error) < Z_BOUND
    assert result.systematics.dac_clipped == 0


def test_lyapunov_and_expnegm_ill_conditioned(device: Device) -> None:
    """Condition number 100: the slowest mode relaxes in 20 tau, so longer runs."""
    A = stats.spd_matrix(np.geomspace(0.05, 5.0, 4), seed=8)
    result = linalg.lyapunov(device, A, t_burn=200, t_sample=20_000, blocks=20, seed=9)
    assert _z(result.X, np.linalg.inv(A) / 2, result.standard_error) < Z_BOUND
    result = linalg.expnegm(device, A, t=2.0, readings=1001, t_burn=200, seed=10)
    assert _z(result.expnegm, expm(-2.0 * A), result.standard_error) < Z_BOUND


def test_lyapunov_spd_is_half_the_inverse(device: Device) -> None:
    result = linalg.lyapunov(device, SPD, seed=5)
    assert _z(result.X, np.linalg.inv(SPD) / 2, result.standard_error) < Z_BOUND


def test_expnegm_spd(device: Device) -> None:
    result = linalg.expnegm(device, SPD, t=0.5, readings=1001, seed=6)
    truth = expm(-0.5 * SPD)
    assert result.shift == 0.0
    assert _z(result.expnegm, truth, result.standard_error) < Z_BOUND
    assert np.linalg.norm(result.expnegm - truth) <= 3 * result.error_estimate
    assert result.samples == 10 * (100 - 1)  # 10 runs of 100 lags of one sample interval each


def test_expnegm_lag_of_several_samples() -> None:
    """A DAC of range +-8 caps the drift's scale, so a lag of t = 1 spans L = 3 sample
    intervals of the device's lag correlator (an ideal DAC makes it one)."""
    coarse = ServedDevice(kappa0=0.01, cells=8, dac_full_scale=8.0)
    try:
        with Device.connect(coarse.endpoint) as device:
            result = linalg.expnegm(device, MILD, t=1.0, readings=1001, seed=3)
    finally:
        coarse.stop()
    assert result.samples == 10 * 3 * (100 - 1)  # L = 3: 3 * 100 samples, 3 * 99 pairs a run
    truth = expm(-MILD)
    assert _z(result.expnegm, truth, result.standard_error) < Z_BOUND
    assert np.linalg.norm(result.expnegm - truth) <= 3 * result.error_estimate


def test_expnegm_non_normal(device: Device) -> None:
    result = linalg.expnegm(device, MILD, t=1.0, readings=1001, seed=7)
    truth = expm(-MILD)
    assert _z(result.expnegm, truth, result.standard_error) < Z_BOUND
    assert _z(result.expnegm, expm(-(MILD + MILD.T) / 2), result.standard_error) > Z_BOUND


def test_expnegm_shifts_an_indefinite_symmetric_part(device: Device) -> None:
    """NON_NORMAL's symmetric part is indefinite: A + alpha I is sampled and e^{alpha t}
    multiplies the estimate and its error."""
    result = linalg.expnegm(device, NON_NORMAL, t=0.3, readings=1001, seed=8)
    assert result.shift > 0
    assert _z(result.expnegm, expm(-0.3 * NON_NORMAL), result.standard_error) < Z_BOUND


@pytest.mark.parametrize("call, message", [
    (lambda d: linalg.logdet(d, SPD, intervals=3), "even"),
    (lambda d: linalg.expnegm(d, SPD, t=0.0), "t must be positive"),
    (lambda d: linalg.expnegm(d, SPD, readings=5), "readings"),
    (lambda d: linalg.lyapunov(d, SPD, -np.eye(6)), "positive definite"),
    (lambda d: linalg.lyapunov(d, SPD, np.triu(np.ones((6, 6)))), "symmetric"),
    (lambda d: linalg.lyapunov(d, SPD, np.eye(5)), "shape"),
])
def test_bad_arguments_are_refused_before_the_device_runs(device: Device, call,
                                                          message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(device)
    assert device.sim_time_ns == 0


def test_the_routines_that_read_the_noise_refuse_a_noiseless_device() -> None:
    """inv, logdet, lyapunov and expnegm read their answer from the thermal noise: at
    kappa0 = 0 each refuses, naming itself, before it sends the device anything."""
    served = ServedDevice(kappa0=0.0, cells=8)
    try:
        with Device.connect(served.endpoint) as device:
            for name in ("inv", "logdet", "lyapunov", "expnegm"):
                with pytest.raises(ValueError, match=f"^{name} needs thermal noise"):
                    getattr(linalg, name)(device, SPD)
            assert device.sim_time_ns == 0 and device.status()["programmed"] is False
    finally:
        served.stop()


@pytest.mark.slow
@pytest.mark.parametrize("eigenvalues", [np.linspace(0.5, 5.0, 16), np.geomspace(0.05, 5.0, 16)])
def test_logdet_long(device: Device, eigenvalues: np.ndarray) -> None:
    A = stats.spd_matrix(eigenvalues, seed=7)
    result = linalg.logdet(device, A, intervals=24, t_burn=200, t_sample=20_000, blocks=20,
                           seed=9)
    truth = np.linalg.slogdet(A)[1]
    assert abs(result.logdet - truth) <= 4 * result.sampling_error + result.quadrature_error
    assert result.sampling_error < 0.01 * abs(truth)


@pytest.mark.slow
def test_lyapunov_and_expnegm_long(device: Device) -> None:
    """16 cells, a non-normal drift (upper triangular couplings on an ill-conditioned
    diagonal) and a general Q."""
    rng = np.random.default_rng(10)
    A = np.diag(np.geomspace(0.2, 5.0, 8)) + np.triu(rng.standard_normal((8, 8)), 1)
    Q = stats.spd_matrix(np.geomspace(0.1, 1.0, 8), seed=11)
    result = linalg.lyapunov(device, A, Q, t_burn=200, t_sample=40_000, blocks=20, seed=12)
    assert _z(result.X, solve_continuous_lyapunov(A, Q), result.standard_error) < Z_BOUND
    result = linalg.expnegm(device, A, t=0.5, readings=20_001, blocks=20, seed=13)
    assert _z(result.expnegm, expm(-0.5 * A), result.standard_error) < Z_BOUND
