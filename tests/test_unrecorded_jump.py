"""An unrecorded run crosses its interval in one exact transition (the dense modal and the
factored exact integrators): the same noiseless trajectory as stepping sample by sample, to
1e-12, and the same law (the end state's mean and covariance, against the closed form
N(e^{-AT} x0 + A^-1 (I - e^{-AT}) b, kappa0 A^-1 (I - e^{-2AT})) within their standard errors,
fixed seeds). Where it cannot jump (Euler-Maruyama, a change settling) the reply says why.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm

from spusim.device.config import DeviceConfig
from spusim.device.spu import EmulatedSPU
from tests import stats

INTERVAL_NS, TAU_NS = 100, 1000
STEPS = 40  # sample intervals of the run: T = 4 tau
A = stats.spd_matrix(np.array([0.3, 1.0, 2.5, 6.0]), seed=3)
B = np.array([0.4, -0.2, 0.1, 0.3])
X0 = np.array([1.0, -0.5, 0.25, 0.0])
J = np.random.default_rng(4).standard_normal((2, 5))
H = np.array([[1.5, 0.3], [0.3, 0.7]])
DAMPING = 0.4
B5 = np.array([0.4, -0.2, 0.1, 0.3, -0.3])
X5 = np.array([1.0, -0.5, 0.25, 0.0, 0.6])


def device(**overrides: object) -> EmulatedSPU:
    settings: dict[str, object] = {"kappa0": 0.05, "sample_interval_ns": INTERVAL_NS}
    spu = EmulatedSPU(DeviceConfig(**{**settings, **overrides}))  # type: ignore[arg-type]
    assert spu.config.tau_ns == TAU_NS
    return spu


def programmed(kind: str, **overrides: object) -> tuple[EmulatedSPU, np.ndarray, np.ndarray]:
    """A device programmed as ``kind`` ("dense", "factored"), its bias set; (spu, A, b)."""
    spu = device(**overrides)
    if kind == "dense":
        spu.program(A, integrator="exact")
        spu.set_bias(B)
        return spu, A, B
    spu.program_factored(J, H, DAMPING, integrator="exact")
    spu.set_bias(B5)
    return spu, J.T @ H @ J + DAMPING * np.eye(5), B5


def end_state(spu: EmulatedSPU, x0: np.ndarray, record: bool, seed: int) -> np.ndarray:
    """x after STEPS sample intervals from x0: one unrecorded jump, or recorded samples."""
    spu.set_state(x0)
    result, _ = spu.run(STEPS * INTERVAL_NS, record=record, seed=seed)
    assert ("jumped_ns" in result) is not record
    return spu._x.copy()


@pytest.mark.parametrize("kind", ["dense", "factored"])
def test_noiseless_jump_is_the_stepped_trajectory(kind: str) -> None:
    spu, _, _ = programmed(kind, kappa0=0.0)
    x0 = X0 if kind == "dense" else X5
    stepped = end_state(spu, x0, record=True, seed=0)
    jumped = end_state(spu, x0, record=False, seed=0)
    np.testing.assert_allclose(jumped, stepped, rtol=1e-12, atol=1e-14)
    assert not np.allclose(stepped, x0)  # the run moved the state


def test_noiseless_jump_carries_the_readout_filter() -> None:
    """With an anti-alias filter the modal jump also moves the filter output exactly."""
    ends = []
    for record in (True, False):
        spu, _, _ = programmed("dense", kappa0=0.0, readout_tau_ns=300.0)
        ends.append((end_state(spu, X0, record, seed=0), spu._adc[3].copy()))
    for jumped, stepped in zip(ends[1], ends[0]):
        np.testing.assert_allclose(jumped, stepped, rtol=1e-12, atol=1e-14)
    assert np.abs(ends[0][1]).min() > 1e-3  # the filter output moved


@pytest.mark.parametrize("kind", ["dense", "factored"])
def test_jump_has_the_law_of_many_small_steps(kind: str) -> None:
    """R end states of each path against the closed form: the mean by a chi-square bound on
    its Mahalanobis distance, every covariance entry within 4.5 standard errors (Wishart)."""
    replicates = 1500
    spu, matrix, b = programmed(kind)
    x0 = X0 if kind == "dense" else X5
    T = STEPS * INTERVAL_NS / TAU_NS
    decay = expm(-matrix * T)
    mean = decay @ x0 + np.linalg.solve(matrix, (np.eye(b.size) - decay) @ b)
    cov = 0.05 * np.linalg.solve(matrix, np.eye(b.size) - decay @ decay)
    bound = stats.chi2_bound(b.size)
    for record in (False, True):
        ends = np.array([end_state(spu, x0, record, seed=1000 * record + k)
                         for k in range(replicates)])
        d2 = stats.mahalanobis_squared(ends.mean(axis=0) - mean, cov / replicates)
        assert d2 < bound, f"record={record}: mean off by Mahalanobis^2 {d2:.1f}"
        sample_cov = np.cov(ends.T)
        se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / replicates)
        z = np.max(np.abs(sample_cov - cov) / se)
        assert z < 4.5, f"record={record}: covariance off by {z:.1f} standard errors"


def test_unrecorded_run_replies_what_it_jumped() -> None:
    spu, _, _ = programmed("factored")
    result, _ = spu.run(STEPS * INTERVAL_NS, record=False)
    assert result["jumped_ns"] == STEPS * INTERVAL_NS and result["stepped_reason"] is None
    assert result["adc_clipped"] == 0 and result["samples"] == 0
    assert spu.clock.now_ns >= STEPS * INTERVAL_NS


@pytest.mark.parametrize("dynamics, integrator, why", [
    ("overdamped", "euler_maruyama", "euler_maruyama"), ("underdamped", "exact", "circuit")])
def test_what_cannot_jump_steps_and_says_why(dynamics: str, integrator: str, why: str) -> None:
    spu = device(dynamics=dynamics)
    spu.program(A, integrator=integrator)
    result, _ = spu.run(STEPS * INTERVAL_NS, record=False)
    assert result["jumped_ns"] == 0 and why in result["stepped_reason"]


def test_settling_is_stepped_then_the_rest_jumped() -> None:
    """With a finite programming bandwidth the intervals in which the change settles are
    stepped (and the reply says so), the rest jumped."""
    spu = device(program_tau_ns=200.0)
    spu.program(A, integrator="exact")
    result, _ = spu.run(400 * INTERVAL_NS, record=False)
    assert 0 < result["jumped_ns"] < 400 * INTERVAL_NS
    assert "settling" in result["stepped_reason"]
    result, _ = spu.run(10 * INTERVAL_NS, record=False)  # settled by now: all of it jumps
    assert result["jumped_ns"] == 10 * INTERVAL_NS and result["stepped_reason"] is None


def test_only_recorded_samples_are_read_so_only_they_can_clip() -> None:
    """An ADC range the state exceeds: recorded samples clip and are counted; an unrecorded
    run (jumped or stepped) takes no readings, so it reports none."""
    for integrator in ("exact", "euler_maruyama"):
        spu = device(adc_full_scale=0.05)
        spu.program(A, integrator=integrator)
        spu.set_bias(B)
        spu.set_state(X0)  # |x| well above 0.05
        unrecorded, _ = spu.run(STEPS * INTERVAL_NS, record=False)
        assert unrecorded["adc_clipped"] == 0
        recorded, _ = spu.run(STEPS * INTERVAL_NS)
        assert recorded["adc_clipped"] > 0
