"""The closed form of TNGD's readout noise (host/training/noise.py) against a brute-force sum and
against the device: repeated solves at fixed factors, their mean squared deviation from the
known mean within its standard error of kappa0 tr(A^-1 (I - e^{-2At})) (reset, final sample),
split into the range and the null space of C, and for the average of the run's samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spusim import Device
from spusim.training.curvature import Factors
from spusim.training.noise import readout_noise, sample_variance, spectrum
from spusim.training.tngd import ThermodynamicNGD

KAPPA0, DAMPING, T = 0.01, 0.2, 2.0  # t in tau
N, M = 8, 3  # C has rank 3: 5 null-space directions at rate lambda
SOLVES = 300


def test_average_of_samples_equals_the_double_sum_of_the_ou_covariance() -> None:
    """(1/n^2) sum_ij Cov(xi(t_i), xi(t_j)), Cov = e^{-a|t_i - t_j|} v(min), summed by brute
    force, for slow, medium and fast modes, both starts."""
    n, t = 30, 3.0
    times = t * np.arange(1, n + 1) / n
    for a in (0.01, 0.5, 5.0):
        for state in ("reset", "kept"):
            v = KAPPA0 / a * (1 - np.exp(-2 * a * np.minimum.outer(times, times))
                              if state == "reset" else np.ones((n, n)))
            brute = (np.exp(-a * np.abs(np.subtract.outer(times, times))) * v).sum() / n**2
            assert sample_variance(np.array([a]), KAPPA0, t, state, n)[0] == pytest.approx(
                brute, rel=1e-12)
            assert sample_variance(np.array([a]), KAPPA0, t, state)[0] == pytest.approx(
                v[-1, -1], rel=1e-12)


def test_the_spectrum_finds_the_rank_of_a_singular_curvature() -> None:
    """A GGN's H: blocks diag(p) - p p^T of softmax outputs (4 classes: rank 3 each), singular
    like H_L; C = J^T H J for 8 samples has rank 8 x 3 = 24, however the roundoff of H's zero
    eigenvalues falls."""
    rng = np.random.default_rng(4)
    blocks = []
    for _ in range(8):
        p = np.exp(rng.normal(size=4))
        p /= p.sum()
        blocks.append(np.diag(p) - np.outer(p, p))
    H = np.zeros((32, 32))
    for i, block in enumerate(blocks):
        H[4 * i:4 * i + 4, 4 * i:4 * i + 4] = block
    assert spectrum(rng.normal(size=(32, 60)), H, DAMPING).rank == 24


def _problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    J = rng.normal(size=(M, N))
    R = rng.normal(size=(M, M))
    g = J.T @ rng.normal(size=M)  # a gradient lies in the range of J^T
    return J, R @ R.T / M, g


def _reset_mean(J: np.ndarray, H: np.ndarray, g: np.ndarray, samples: int) -> np.ndarray:
    """The readout's mean: <x(t)> = e^{-At} g + (I - e^{-At}) A^-1 g from the dense A (Eq. 19),
    averaged over the sample times t/samples, ..., t."""
    w, V = np.linalg.eigh(J.T @ H @ J + DAMPING * np.eye(N))
    star = V @ ((V.T @ g) / w)
    decay = np.exp(-np.outer(w, T * np.arange(1, samples + 1) / samples)).mean(axis=1)
    return V @ (decay * (V.T @ (g - star))) + star


@pytest.mark.daemon
@pytest.mark.spu_config(kappa0=KAPPA0, seed=0)
@pytest.mark.parametrize("readout", ["final", "average"])
def test_reset_readout_noise_on_the_device_matches_the_closed_form(spu_device: Device,
                                                                   readout: str) -> None:
    J, H, g = _problem()
    solver = ThermodynamicNGD(spu_device, damping=DAMPING, t=T, readout=readout, seed=1,
                              integrator="exact")
    curvature = Factors(torch.from_numpy(J), torch.from_numpy(H))
    spec = spectrum(J, H, DAMPING)
    solves = [solver.solve(curvature, torch.from_numpy(g), step) for step in range(SOLVES)]
    samples = solves[0][1].samples
    noise = np.array([x for x, _ in solves]) - _reset_mean(J, H, g, samples)
    in_range = noise @ spec.basis
    parts = {"range": (in_range**2).sum(axis=1),
             "null": (noise**2).sum(axis=1) - (in_range**2).sum(axis=1)}
    predicted = readout_noise(spec, g, KAPPA0, T, "reset", samples)
    assert spec.rank == M and predicted.n == N
    assert samples == (round(T / 0.1) if readout == "average" else 1)
    for name, expected in (("range", predicted.range_noise), ("null", predicted.null_noise)):
        measured = parts[name]
        error = measured.std(ddof=1) / np.sqrt(SOLVES)
        assert abs(measured.mean() - expected) < 3 * error, (name, measured.mean(), expected,
                                                              error)
