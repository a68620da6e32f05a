"""The numpy models' derivatives against central finite differences, the curvature factors
against their definitions, and the digits data.

Finite-difference tolerance: a central difference with step e has truncation error
e^2 |f'''| / 6 and rounding error ~ eps_mach |f| / e; with e = 1e-5 and O(1) logits both are
~1e-11, so an error above 1e-7 (relative to the largest entry) is a wrong derivative, not noise.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from spusim.training import curvature
from spusim.training.data import Batch, batches, load_digits
from spusim.training.models import (
    Network,
    cnn,
    cross_entropy,
    cross_entropy_hessian,
    mlp,
    softmax,
    softmax_regression,
)
from tests.training_support import one_blas_thread  # noqa: F401  (autouse)

STEP = 1e-5
TOLERANCE = 1e-7


@pytest.fixture(scope="module")
def data():
    return load_digits()


@pytest.fixture(scope="module")
def batch(data) -> Batch:
    return next(batches(data.train, 6, seed=3))


ARCHITECTURES = {
    "softmax regression": lambda: softmax_regression(64, 10, seed=1),
    "mlp one hidden tanh": lambda: mlp(64, 10, (7,), seed=2),
    "mlp two hidden tanh": lambda: mlp(64, 10, (6, 5), seed=3),
    "mlp relu": lambda: mlp(64, 10, (7,), activation="relu", seed=4),
    "cnn": lambda: cnn((1, 8, 8), 10, channels=2, hidden=5, seed=5),
}


def finite_difference(model: Network, function, index: int) -> np.ndarray:
    """d function(model) / d params[index] by a central difference."""
    base = model.params.copy()
    try:
        model.params = base.copy()
        model.params[index] += STEP
        plus = function(model)
        model.params = base.copy()
        model.params[index] -= STEP
        minus = function(model)
    finally:
        model.params = base
    return (plus - minus) / (2 * STEP)


def probe_indices(model: Network, count: int = 40) -> np.ndarray:
    """Parameters to probe: some of every layer's (first and last of each, and random)."""
    bounds = np.cumsum([0] + [layer.n_params for layer in model.layers])
    edges = [i for a, b in itertools.pairwise(bounds) if b > a for i in (a, b - 1)]
    rng = np.random.default_rng(0)
    return np.unique(np.concatenate([edges, rng.choice(model.n_params, count, replace=False)]))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_per_sample_jacobian_matches_finite_differences(name: str, batch: Batch) -> None:
    model = ARCHITECTURES[name]()
    J = model.linearize(batch).jacobian()  # (b d_z, N), sample-major rows
    assert J.shape == (len(batch) * model.n_outputs, model.n_params)
    scale = np.abs(J).max()
    for i in probe_indices(model):
        fd = finite_difference(model, lambda m: m.logits(batch.x).ravel(), i)
        assert np.abs(fd - J[:, i]).max() <= TOLERANCE * scale, f"parameter {i}"


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_gradient_matches_finite_differences_and_the_jacobian(name: str, batch: Batch) -> None:
    model = ARCHITECTURES[name]()
    lin = model.linearize(batch)
    assert lin.loss == pytest.approx(cross_entropy(model.logits(batch.x), batch.y), rel=1e-14)
    scale = np.abs(lin.grad).max()
    for i in probe_indices(model):
        fd = finite_difference(model, lambda m: cross_entropy(m.logits(batch.x), batch.y), i)
        assert abs(fd - lin.grad[i]) <= TOLERANCE * max(scale, 1.0), f"parameter {i}"
    # the chain rule: grad = (1/b) J^T dL/dz
    chain = lin.jacobian().T @ lin.output_grad().ravel() / len(batch)
    np.testing.assert_allclose(lin.grad, chain, rtol=0, atol=1e-13 * scale)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_jvp_and_vjp_are_products_with_the_jacobian(name: str, batch: Batch) -> None:
    model = ARCHITECTURES[name]()
    lin = model.linearize(batch)
    J = lin.jacobian()
    rng = np.random.default_rng(1)
    v = rng.normal(size=model.n_params)
    u = rng.normal(size=(len(batch), model.n_outputs))
    np.testing.assert_allclose(lin.jvp(v).ravel(), J @ v, rtol=0, atol=1e-12 * np.abs(J).sum())
    np.testing.assert_allclose(lin.vjp(u), J.T @ u.ravel(), rtol=0,
                               atol=1e-12 * np.abs(J).sum())


def test_loss_hessian_matches_finite_differences_of_the_output_gradient(batch: Batch) -> None:
    """H_i = d^2 L / dz_i^2 = diag(p) - p p^T, checked by differencing dL/dz_i = p_i - e_y."""
    z = np.random.default_rng(2).normal(size=(len(batch), 10))
    H = cross_entropy_hessian(softmax(z))
    for j in range(10):
        dz = np.zeros_like(z)
        dz[:, j] = STEP
        fd = (softmax(z + dz) - softmax(z - dz)) / (2 * STEP)  # d(p - e_y)/dz_j
        np.testing.assert_allclose(H[:, :, j], fd, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(H @ np.ones(10), 0, rtol=0, atol=1e-15)  # shift invariance
    lin = mlp(64, 10, (7,), seed=2).linearize(batch)
    np.testing.assert_array_equal(lin.loss_hessian(), cross_entropy_hessian(lin.probabilities))


def test_ggn_of_softmax_regression_is_the_exact_hessian(batch: Batch) -> None:
    """For a model linear in its parameters the GGN equals the loss Hessian: a check of the
    factors J_f and H_L / b together, against finite differences of the gradient."""
    model = softmax_regression(64, 10, seed=1)
    G = curvature.factors(model.linearize(batch), "ggn").dense()
    for i in probe_indices(model, count=15):
        fd = finite_difference(model, lambda m: m.linearize(batch).grad, i)
        np.testing.assert_allclose(G[:, i], fd, rtol=0, atol=TOLERANCE * np.abs(G).max())


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_curvature_factors_and_matrix_free_products_agree(kind: str, batch: Batch) -> None:
    model = mlp(64, 10, (7,), seed=2)
    lin = model.linearize(batch)
    f = curvature.factors(lin, kind)
    m = len(batch) * (10 if kind == "ggn" else 1)
    assert f.J.shape == (m, model.n_params) and f.H.shape == (m, m)
    assert np.linalg.eigvalsh(f.H)[0] >= -1e-15 and np.allclose(f.H, f.H.T)
    v = np.random.default_rng(3).normal(size=model.n_params)
    C = f.dense()
    np.testing.assert_allclose(f.matvec(v), C @ v, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(curvature.matvec(lin, kind)(v), C @ v, rtol=1e-12, atol=1e-14)
    if kind == "fisher":  # (1/b) sum g_i g_i^T, and the per-sample gradients average to g
        U = curvature.per_sample_gradients(lin)
        np.testing.assert_allclose(U.mean(axis=0), lin.grad, rtol=0, atol=1e-15)
        np.testing.assert_allclose(C, U.T @ U / len(batch), rtol=0, atol=1e-15)


def test_models_refuse_layers_that_do_not_chain() -> None:
    from spusim.training.layers import Activation, Dense

    with pytest.raises(ValueError, match="do not chain"):
        Network([Dense(4, 3), Activation(5)])


def test_digits_are_real_scaled_and_split_the_same_way_every_time(data) -> None:
    assert data.train.x.shape == (1347, 64) and data.test.x.shape == (450, 64)
    assert data.train.x.min() == 0.0 and data.train.x.max() == 1.0
    again = load_digits()
    np.testing.assert_array_equal(again.test.x, data.test.x)
    np.testing.assert_array_equal(again.train.y, data.train.y)
    # stratified: each class's share of the test set within one image of its overall share
    counts = np.bincount(data.test.y, minlength=10)
    overall = np.bincount(np.concatenate([data.train.y, data.test.y]), minlength=10)
    assert np.all(np.abs(counts - overall * 450 / 1797) <= 1)


def test_batches_cover_each_sample_once_per_epoch() -> None:
    n, size = 1047, 100  # 10 full batches an epoch; the last 47 samples are dropped
    indexed = Batch(np.arange(n, dtype=float)[:, None], np.zeros(n, dtype=np.int64))
    stream = batches(indexed, size, seed=0)
    epochs = [np.concatenate([next(stream).x[:, 0] for _ in range(n // size)]) for _ in range(2)]
    for epoch in epochs:
        assert len(np.unique(epoch)) == n // size * size
    assert not np.array_equal(epochs[0], epochs[1])  # a fresh permutation each epoch
    with pytest.raises(ValueError):
        next(batches(indexed, 0))
