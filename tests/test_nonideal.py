"""The device's non-idealities, each a knob, against closed forms: DAC and ADC grids and
clipping, mismatch by serial number, offsets, readout noise, and factored programming."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm
from scipy.stats import norm

from spusim.device.config import DeviceConfig, profile_config
from spusim.device.converters import Quantizer
from spusim.device.coupling import DenseCoupling, FactoredCoupling
from spusim.device.mismatch import Array, deviations
from spusim.device.spu import EmulatedSPU
from spusim.device.transition import factored_eigen
from spusim.protocol import ErrorCode, ProtocolError
from tests import stats
from spusim.timing import ConverterModel, TimingModel

A4 = stats.spd_matrix(np.array([0.5, 1.0, 2.0, 4.0]), seed=4)


def converters(bits: int) -> TimingModel:
    return TimingModel(dac=ConverterModel(bits=bits), adc=ConverterModel(bits=bits))


def test_quantizer_grid_half_lsb_error_and_clipping() -> None:
    q = Quantizer(bits=6, full_scale=2.0)
    assert q.step == 2.0 / 32
    values = np.random.default_rng(0).uniform(-3.0, 3.0, 10_000)
    out, clipped = q.apply(values)
    inside = np.abs(values) < 2.0 - q.step
    np.testing.assert_allclose(out / q.step, np.round(out / q.step), atol=1e-12)  # on the grid
    assert np.max(np.abs(out[inside] - values[inside])) <= q.step / 2 + 1e-15
    assert clipped == np.count_nonzero((values >= 2.0 - q.step / 2) | (values < -2.0 - q.step / 2))
    assert out.max() == 2.0 - q.step and out.min() == -2.0  # the codes' ends
    same, none = Quantizer(bits=6).apply(values)
    np.testing.assert_array_equal(same, values)
    assert none == 0


def test_programmed_matrix_lands_on_the_dac_grid_and_clips_are_counted() -> None:
    config = DeviceConfig(timing=converters(8), dac_full_scale=2.0)
    A = A4.copy()
    A[0, 0] = 5.0  # beyond the range
    coupling = DenseCoupling.program(A, config)
    step = config.coupling_dac.step
    np.testing.assert_allclose(coupling.A / step, np.round(coupling.A / step), atol=1e-9)
    assert coupling.dac_clipped == 1 and coupling.A[0, 0] == pytest.approx(2.0 - step)
    mask = np.ones_like(A, dtype=bool)
    mask[0, 0] = False
    assert np.max(np.abs(coupling.A - A)[mask]) <= step / 2 + 1e-15


def test_mismatch_is_fixed_by_the_serial_number() -> None:
    A = np.eye(64) * 2 + 0.01
    chip = DenseCoupling.program(A, DeviceConfig(mismatch=0.05, serial=7)).A
    again = DenseCoupling.program(A, DeviceConfig(mismatch=0.05, serial=7)).A
    other = DenseCoupling.program(A, DeviceConfig(mismatch=0.05, serial=8)).A
    np.testing.assert_array_equal(chip, again)
    assert not np.allclose(chip, other)
    np.testing.assert_array_equal(chip, chip.T)  # one physical element per pair of cells
    relative = (chip / A - 1)[np.triu_indices(64)]
    # The sample std of k = 2080 deviations has a standard error of sigma / sqrt(2k).
    assert np.std(relative) == pytest.approx(0.05, abs=4 * 0.05 / np.sqrt(2 * relative.size))
    small = DenseCoupling.program(A[:8, :8], DeviceConfig(mismatch=0.05, serial=7)).A
    np.testing.assert_array_equal(small, chip[:8, :8])  # an element keeps its error


def settled_reading(config: DeviceConfig, b: np.ndarray, samples: int = 1) -> np.ndarray:
    """Noiseless device relaxed for 60 tau from 0 (e^-30 of the start left), then averaged."""
    spu = EmulatedSPU(config)
    spu.program(A4)
    spu.set_bias(b)
    spu.run(60_000, record=False)
    spu.run(samples * 100, clear=True)
    return spu.read()[1]["mean"]


def test_bias_and_readout_offsets_shift_the_answer_as_predicted() -> None:
    config = DeviceConfig(kappa0=0.0, bias_offset=0.01, readout_offset=0.02, serial=3)
    b = np.ones(4)
    bias_offsets = 0.01 * deviations(3, Array.BIAS_OFFSET, (4,))
    readout_offsets = 0.02 * deviations(3, Array.READOUT_OFFSET, (4,))
    expected = np.linalg.solve(A4, b + bias_offsets) + readout_offsets
    np.testing.assert_allclose(settled_reading(config, b), expected, rtol=1e-9, atol=1e-12)
    assert np.max(np.abs(expected - np.linalg.solve(A4, b))) > 0.01  # the offsets matter


def test_adc_readings_lie_on_its_grid_and_clips_are_counted() -> None:
    config = DeviceConfig(kappa0=0.0, timing=converters(6), adc_full_scale=1.0)
    spu = EmulatedSPU(config)
    spu.program(A4)
    spu.set_bias(A4 @ np.array([0.3, -0.2, 2.0, 0.0123]))  # x settles there; 2.0 clips
    spu.run(60_000, record=False)
    result, _ = spu.run(1000, clear=True)
    assert result["adc_clipped"] == 10  # one cell over the range, 10 samples
    reading = spu.read()[1]["mean"]
    step = config.adc.step
    np.testing.assert_allclose(reading, [np.round(0.3 / step) * step,
                                         np.round(-0.2 / step) * step, 1.0 - step, 0.0],
                               atol=1e-9)


def test_readout_noise_has_the_configured_variance() -> None:
    noise = 0.05
    config = DeviceConfig(kappa0=0.0, readout_noise=noise)
    spu = EmulatedSPU(config)
    spu.program(A4)
    spu.run(100, seed=1)
    samples = 20_000
    spu.run(samples * 100, second_moments=True, clear=True)
    _, arrays = spu.read(second_moments=True)
    variance = np.diag(arrays["second_moment"]) - arrays["mean"] ** 2  # x is 0: pure noise
    # The sample variance of M independent normals has standard error sigma^2 sqrt(2/M).
    np.testing.assert_allclose(variance, noise**2, atol=4.5 * noise**2 * np.sqrt(2 / samples))


def factors(n: int = 12, m: int = 3, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((m, n)) / np.sqrt(n)
    root = rng.standard_normal((m, m))
    return J, root @ root.T / m


def test_factored_drift_equals_the_dense_drift() -> None:
    """Same seed, same start: the factored and the dense Euler-Maruyama paths coincide."""
    J, H = factors()
    dense_matrix = J.T @ H @ J + 0.7 * np.eye(12)
    paths = []
    for program in ("dense", "factored"):
        spu = EmulatedSPU(DeviceConfig(integrator="euler_maruyama", kappa0=0.01))
        if program == "dense":
            spu.program(dense_matrix)
        else:
            spu.program_factored(J, H, damping=0.7)
        spu.set_bias(np.linspace(-1, 1, 12))
        spu.run(500 * 100, clear=True, seed=9)
        paths.append(spu.read()[1]["mean"])
    np.testing.assert_allclose(paths[0], paths[1], rtol=1e-10, atol=1e-12)


def test_factored_stationary_mean_matches_the_damped_solve() -> None:
    J, H = factors(n=16, m=4, seed=6)
    damping, kappa0, samples = 0.5, 0.01, 100_000
    A = J.T @ H @ J + damping * np.eye(16)
    b = np.cos(np.arange(16.0))
    spu = EmulatedSPU(DeviceConfig(kappa0=kappa0))
    result, _ = spu.program_factored(J, H, damping=damping)
    assert result["integrator"] == "euler_maruyama" and result["elements"] == 4 * (4 + 32)
    spu.set_bias(b)
    spu.run(100_000, record=False, seed=2)
    spu.run(samples * 100, clear=True)
    mean = spu.read()[1]["mean"]
    modes = stats.euler_modes(A, kappa0, 0.1, steps_per_sample=1)
    d2 = stats.mahalanobis_squared(mean - np.linalg.solve(A, b),
                                   stats.covariance_of_mean(modes, samples))
    assert d2 < stats.chi2_bound(16)


def test_factored_programming_is_validated() -> None:
    J, H = factors()
    spu = EmulatedSPU(DeviceConfig(cells=12))

    def code_of(call, *args, **kwargs) -> ErrorCode:  # type: ignore[no-untyped-def]
        with pytest.raises(ProtocolError) as info:
            call(*args, **kwargs)
        return info.value.code

    assert code_of(spu.program_factored, J, H[:2], 1.0) == ErrorCode.BAD_SHAPE
    for refusing in (DeviceConfig(mismatch=0.01), DeviceConfig(readout_tau_ns=10.0)):
        assert code_of(EmulatedSPU(refusing).program_factored, J, H, 1.0,
                       integrator="exact") == ErrorCode.BAD_ARGUMENT
    big = np.ones((4, 12))  # 4 (4 + 24) = 112 elements fit in 144; 5 (5 + 24) = 145 do not
    spu.program_factored(big, np.eye(4), 1.0)
    assert code_of(spu.program_factored, np.ones((5, 12)), np.eye(5), 1.0) == \
        ErrorCode.CAPACITY_EXCEEDED
    spu.program_factored(J, -100 * H, 1.0)  # H negative enough to beat the damping
    assert code_of(spu.run, 100) == ErrorCode.NOT_POSITIVE_DEFINITE
    spu.program_factored(J, H - 0.01 * np.eye(3), 1.0)  # slightly indefinite H: still settles
    spu.run(100)
    spu.program_factored(J, H, 0.0)
    assert code_of(spu.run, 100) == ErrorCode.NOT_POSITIVE_DEFINITE
    spu.program_factored(J, 1000 * H, 1.0)
    assert code_of(spu.run, 100) == ErrorCode.UNSTABLE_STEP
    spu.program_factored(J, 1000 * H, 1.0, integrator="exact")  # the exact step has no limit
    spu.run(100)
    spu.program_factored(J, H, 0.0, integrator="exact")  # lambda = 0 on J's null space
    assert code_of(spu.run, 100) == ErrorCode.NOT_POSITIVE_DEFINITE


@pytest.mark.parametrize("n", [12, 1500])  # dense, and Lanczos on the factored operator
def test_mismatched_damping_is_decided_by_the_smallest_eigenvalue(n: int) -> None:
    """J lives on the first 3 cells, where lambda = 1 and H (eigenvalue -0.5 on J's range)
    pulls the spectrum down to 0.5; elsewhere lambda = 0.05. The bound min(lambda) + mu_min
    = -0.45 cannot decide; the smallest eigenvalue (0.05) can, so the coupling runs. Lowering
    lambda on J's cells to 0.3 makes it indefinite (-0.2): refused with that value."""
    J = np.zeros((1, n))
    J[0, :3] = 1 / np.sqrt(3)
    H = np.array([[-0.5]])
    config = DeviceConfig()
    damping = np.full(n, 0.05)
    damping[:3] = 1.0
    FactoredCoupling(J, H, damping, 0).check("euler_maruyama", config)
    assert FactoredCoupling(J, H, damping, 0).smallest_eigenvalue() == pytest.approx(0.05)
    damping[:3] = 0.3
    with pytest.raises(ProtocolError) as refused:
        FactoredCoupling(J, H, damping, 0).check("euler_maruyama", config)
    assert refused.value.code == ErrorCode.NOT_POSITIVE_DEFINITE
    assert refused.value.details["smallest_eigenvalue"] == pytest.approx(-0.2, abs=1e-8)


@pytest.mark.parametrize("m,n", [(3, 12), (12, 5), (4, 8)], ids=["m<N", "m>N", "rank 2 of 4"])
def test_exact_factored_integrator_follows_the_closed_form(m: int, n: int) -> None:
    """Noiseless: x(t) = mu + e^{-At}(x0 - mu) for A = J^T H J + lambda I, to rounding."""
    J, H = factors(n=n, m=m, seed=8)
    if m == 4:
        J[2:] = J[:2]  # repeated rows: J has rank 2
    damping = 0.3
    A = J.T @ H @ J + damping * np.eye(n)
    x0, b = np.linspace(1.0, -1.0, n), np.sin(np.arange(n) + 1.0)
    mu = np.linalg.solve(A, b)
    spu = EmulatedSPU(DeviceConfig(kappa0=0.0))
    assert spu.program_factored(J, H, damping, integrator="exact")[0]["integrator"] == "exact"
    spu.set_state(x0)
    spu.set_bias(b)
    for t_ns in (100, 1000, 5000):
        spu.run(t_ns - 100, record=False)
        spu.run(100, clear=True)
        expected = mu + expm(-A * t_ns / 1000) @ (x0 - mu)
        np.testing.assert_allclose(spu.read()[1]["mean"], expected, rtol=0, atol=1e-12)
        spu.set_state(x0)


@pytest.mark.parametrize("case,route", [
    ("well conditioned", "cholesky qr2"), ("condition 1e7", "cholesky qr2"),
    ("repeated rows", "householder"), ("condition 4e8", "householder"),
    ("condition 1e10", "householder"), ("m>N", "householder")])
def test_factored_eigen_is_orthonormal_and_exact_on_every_path(
        case: str, route: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """U diag(mu) U^T = J^T H J and U^T U = I to rounding, by CholeskyQR2 where its guarantee
    holds (m < N, condition number up to ~1e8) and by Householder QR where it does not (rank
    deficient, beyond ~1e8: its first Cholesky pass fails or is far from orthonormal, m >= N);
    mu equals the Householder route's."""
    m, n = (12, 5) if case == "m>N" else (24, 60)
    J, H = factors(n=n, m=m, seed=11)
    if case == "repeated rows":
        J[3] = J[2]
    if case.startswith("condition"):
        left, _, right = np.linalg.svd(J, full_matrices=False)
        J = (left * np.geomspace(1.0, 1.0 / float(case.split()[1]), m)) @ right
    householder = []
    qr = np.linalg.qr
    monkeypatch.setattr(np.linalg, "qr", lambda a: householder.append(1) or qr(a))
    mu, U = factored_eigen(J, H)
    assert ("householder" if householder else "cholesky qr2") == route
    monkeypatch.undo()
    C = J.T @ H @ J
    scale = np.abs(C).max()
    np.testing.assert_allclose(U @ np.diag(mu) @ U.T, C, rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(U.T @ U, np.eye(U.shape[1]), rtol=0, atol=1e-13)
    Q, R = np.linalg.qr(J.T)
    np.testing.assert_allclose(mu, np.linalg.eigvalsh(R @ H @ R.T), rtol=0, atol=1e-13 * scale)
    assert U.flags.c_contiguous


def test_exact_factored_stationary_law() -> None:
    """Mean A^-1 b and covariance kappa0 A^-1, within the sampling error of the exact
    transition's AR(1) modes (the dense exact integrator's law)."""
    J, H = factors(n=16, m=4, seed=6)
    damping, kappa0, samples = 3.0, 0.01, 100_000
    A = J.T @ H @ J + damping * np.eye(16)
    b = np.cos(np.arange(16.0))
    spu = EmulatedSPU(DeviceConfig(kappa0=kappa0))
    spu.program_factored(J, H, damping=damping, integrator="exact")
    spu.set_bias(b)
    spu.run(100_000, record=False, seed=2)
    spu.run(samples * 100, second_moments=True, clear=True)
    arrays = spu.read(second_moments=True)[1]
    mean, second = arrays["mean"], arrays["second_moment"]
    mu = np.linalg.solve(A, b)
    modes = stats.exact_modes(A, kappa0, 0.1)
    cov_of_mean = stats.covariance_of_mean(modes, samples)
    assert stats.mahalanobis_squared(mean - mu, cov_of_mean) < stats.chi2_bound(16)
    covariance = second - np.outer(mu, mean) - np.outer(mean, mu) + np.outer(mu, mu)
    z = np.abs(covariance - kappa0 * np.linalg.inv(A)) / np.sqrt(
        stats.second_moment_variance(modes, samples))
    bound = norm.isf(1e-4 / (16 * 17))  # 136 distinct entries, two-sided
    assert z.max() < bound
    # Teeth: Euler-Maruyama's stationary covariance (step 0.1 tau) would be rejected.
    biased = kappa0 * np.linalg.inv(A) @ np.linalg.inv(np.eye(16) - 0.05 * A)
    assert (np.abs(covariance - biased) / np.sqrt(
        stats.second_moment_variance(modes, samples))).max() > bound


def test_profiles() -> None:
    assert profile_config("ideal") == DeviceConfig()  # the foundation's device
    paper = profile_config("tngd-paper")
    assert paper.coupling_dac.bits == 16 and paper.adc.bits == 16 and paper.tau_ns == 1000
    board = profile_config("spu-8cell", seed=4)
    assert board.cells == 8 and board.mismatch > 0 and board.seed == 4
    with pytest.raises(ValueError, match="unknown profile"):
        profile_config("tpu")
    exact = settled_reading(profile_config("ideal", kappa0=0.0), np.ones(4))
    rounded = settled_reading(profile_config("tngd-paper", kappa0=0.0), np.ones(4))
    # Entries of A and b off by at most half a step e: ||dx|| <= ||A^-1|| (||dA|| ||x|| +
    # ||db||) with ||dA|| <= N e / 2 and ||db|| <= sqrt(N) e / 2; the reading adds e / 2.
    e, inverse_norm = paper.coupling_dac.step, 1 / np.linalg.eigvalsh(A4)[0]
    bound = inverse_norm * (4 * e / 2 * np.linalg.norm(exact) + 2 * e / 2) + e / 2
    assert 0 < np.max(np.abs(exact - rounded)) <= bound
