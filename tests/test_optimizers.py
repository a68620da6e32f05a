"""The digital optimizers: conjugate gradients against its convergence bound, the NGD variants
against each other, and the update rules against their closed forms."""

from __future__ import annotations

import numpy as np
import pytest

from spusim.training import curvature
from spusim.training.data import batches, load_digits
from spusim.training.models import mlp
from spusim.training.optimizers import (
    NGDCG,
    ExactNGD,
    Gradient,
    NGDWoodbury,
    Optimizer,
    conjugate_gradient,
    ngd,
)
from spusim.training.schedules import exponential_decay, value, warmup
from spusim.training.updates import SGD, Adam
from tests.training_support import one_blas_thread  # noqa: F401  (autouse)


@pytest.fixture(scope="module")
def lin():
    """A small MLP (N = 535) on a batch of 12 digits: m = 120 rows of J_f."""
    data = load_digits()
    return mlp(64, 10, (7,), seed=2).linearize(next(batches(data.train, 12, seed=1)))


def spd_matrix(n: int, condition: float, seed: int = 0) -> np.ndarray:
    """A random symmetric positive definite matrix with eigenvalues from 1 to ``condition``."""
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return Q @ np.diag(np.geomspace(1.0, condition, n)) @ Q.T


def test_cg_on_a_quadratic_obeys_its_convergence_bound_and_then_solves_it() -> None:
    """The A-norm error after c iterations is at most 2 ((sqrt k - 1)/(sqrt k + 1))^c times
    the initial one (k the condition number); after n iterations CG is exact up to rounding."""
    n, kappa = 60, 100.0
    A = spd_matrix(n, kappa)
    b = np.random.default_rng(1).normal(size=n)
    exact = np.linalg.solve(A, b)
    a_norm = lambda e: float(np.sqrt(e @ A @ e))
    rate = (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)
    products = 0

    def matvec(v: np.ndarray) -> np.ndarray:
        nonlocal products
        products += 1
        return A @ v

    for c in (1, 5, 10, 20, 30):
        products = 0
        x, residuals = conjugate_gradient(matvec, b, c)
        assert products == c == len(residuals)
        assert a_norm(x - exact) <= 2 * rate**c * a_norm(exact) * (1 + 1e-12)
        np.testing.assert_allclose(residuals[-1], np.linalg.norm(b - A @ x), rtol=1e-6)
    x, _ = conjugate_gradient(matvec, b, 3 * n)
    np.testing.assert_allclose(x, exact, rtol=0, atol=1e-10 * np.linalg.norm(exact))
    x, residuals = conjugate_gradient(matvec, b, 3 * n, tol=1e-6)  # early stop
    assert residuals[-1] <= 1e-6 * np.linalg.norm(b) and len(residuals) < 3 * n


def test_cg_from_a_starting_point_and_at_the_solution() -> None:
    A = spd_matrix(10, 10.0)
    b = np.ones(10)
    exact = np.linalg.solve(A, b)
    x, residuals = conjugate_gradient(lambda v: A @ v, b, 5, x0=exact)
    assert residuals == [] or residuals[-1] < 1e-12
    np.testing.assert_allclose(x, exact, rtol=1e-12)


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_ngd_cg_converges_to_exact_ngd(lin, kind: str) -> None:
    """NGD-CG's subproblem is the quadratic min_d d^T (C + lambda I) d / 2 - g^T d: its error
    falls with the iterations c and vanishes (to rounding) once c passes the rank of C + 1."""
    exact = ExactNGD(0.1, kind)(lin, 0).vector
    errors = []
    for c in (2, 8, 32, 200):
        direction = NGDCG(0.1, c, kind)(lin, 0)
        errors.append(np.linalg.norm(direction.vector - exact) / np.linalg.norm(exact))
        assert direction.info["cg_iterations"] <= c
    assert errors[0] > errors[1] > errors[2] and errors[-1] < 1e-9, errors


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_exact_ngd_and_woodbury_solve_the_damped_system(lin, kind: str) -> None:
    C = curvature.factors(lin, kind).dense()
    A = C + 0.05 * np.eye(len(C))
    exact = ExactNGD(0.05, kind)(lin, 0).vector
    np.testing.assert_allclose(A @ exact, lin.grad, rtol=0, atol=1e-12 * np.linalg.norm(lin.grad))
    woodbury = NGDWoodbury(0.05, kind)(lin, 0).vector
    np.testing.assert_allclose(woodbury, exact, rtol=0, atol=1e-9 * np.linalg.norm(exact))


def test_damping_and_iterations_follow_their_schedules(lin) -> None:
    """At step k the preconditioner uses the schedule's value at k."""
    damping = lambda step: 0.5 / (step + 1)
    for step in (0, 3):
        np.testing.assert_allclose(ExactNGD(damping)(lin, step).vector,
                                   ExactNGD(value(damping, step))(lin, 0).vector, rtol=1e-12)
    assert NGDCG(0.1, lambda step: 2 + step)(lin, 3).info["cg_iterations"] == 5


def test_sgd_with_momentum_is_heavy_ball() -> None:
    """v_k = mu v_{k-1} + d_k, theta_{k+1} = theta_k - eta_k v_k, with eta a schedule."""
    rule = SGD(lr=lambda step: 0.1 * (step + 1), momentum=0.5)
    theta = np.zeros(3)
    d = [np.array([1.0, -2.0, 0.5]), np.array([0.0, 1.0, 1.0]), np.array([2.0, 2.0, -1.0])]
    v = np.zeros(3)
    expected = np.zeros(3)
    for k, dk in enumerate(d):
        theta = rule(theta, dk)
        v = 0.5 * v + dk
        expected = expected - 0.1 * (k + 1) * v
        np.testing.assert_allclose(theta, expected, rtol=1e-15)
    assert rule.steps == 3


def test_adam_matches_its_definition() -> None:
    rule = Adam(lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8)
    rng = np.random.default_rng(0)
    theta, m, v = np.zeros(4), np.zeros(4), np.zeros(4)
    expected = np.zeros(4)
    for t in range(1, 6):
        d = rng.normal(size=4)
        theta = rule(theta, d)
        m, v = 0.9 * m + 0.1 * d, 0.99 * v + 0.01 * d**2
        expected = expected - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.99**t)) + 1e-8)
        np.testing.assert_allclose(theta, expected, rtol=1e-12)


def test_adam_with_zero_betas_is_sign_descent() -> None:
    """b1 = b2 = 0: every step is exactly -eta d / (|d| + eps), within eta eps / |d| of
    -eta sign(d) (TNGD-Adam as arXiv 2405.13817 ran it, Fig. 5b)."""
    rule = Adam(lr=0.001, beta1=0.0, beta2=0.0, eps=1e-8)
    rng = np.random.default_rng(1)
    theta = np.zeros(50)
    for _ in range(3):
        d = rng.normal(size=50) * 10.0 ** rng.uniform(-3, 3, size=50)
        new = rule(theta, d)
        np.testing.assert_array_equal(new, theta - 0.001 * d / (np.abs(d) + 1e-8))
        slack = 4 * np.spacing(np.abs(theta) + 0.001)  # rounding of the update and of new - theta
        assert np.all(np.abs((new - theta) + 0.001 * np.sign(d))
                      <= 0.001 * 1e-8 / np.abs(d) + slack)
        theta = new


def test_optimizer_step_reports_the_step(lin) -> None:
    class Frozen:  # a model that always returns the same linearization
        n_params, n_outputs, params = lin.grad.size, 10, np.zeros(lin.grad.size)

        def linearize(self, batch):
            return lin

    model = Frozen()
    optimizer = Optimizer("sgd", Gradient(), SGD(0.1))
    report = optimizer.step(model, None)
    np.testing.assert_array_equal(model.params, -0.1 * lin.grad)
    assert report.loss == lin.loss and report.step == 0 and optimizer.steps == 1
    assert report.grad_norm == pytest.approx(np.linalg.norm(lin.grad))
    assert 0 < report.digital_seconds == report.host_seconds and report.device is None


def test_ngd_trains_faster_than_sgd_at_the_same_learning_rate() -> None:
    """On digits, 15 steps of exact NGD reach a lower training loss than 15 of SGD at the same
    learning rate and batches: the point of preconditioning (by a wide margin, not noise)."""
    data = load_digits()
    losses = {}
    for name, optimizer in (("sgd", Optimizer("sgd", Gradient(), SGD(0.3))),
                            ("ngd", ngd(0.3, 0.1))):
        model = mlp(64, 10, (5,), seed=0)
        stream = batches(data.train, 32, seed=0)
        for _ in range(15):
            optimizer.step(model, next(stream))
        losses[name] = model.evaluate(data.train)[0]
    assert losses["ngd"] < 0.7 * losses["sgd"], losses


def test_schedule_helpers() -> None:
    assert value(0.5, 7) == 0.5
    assert value(lambda step: step / 2, 3) == 1.5
    assert [warmup(1.0, 4)(k) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert exponential_decay(2.0, 0.5)(3) == 0.25
    with pytest.raises(ValueError):
        value(lambda step: float("nan"), 0)
