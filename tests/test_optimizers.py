"""The digital optimizers in torch form: the NGD variants against each other and against closed
forms, the update rules against their definitions, and the torch.optim contract (parameter
groups, frozen parameters, state_dict, float32 models)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spusim.training import curvature
from spusim.training.data import batches, load_digits
from spusim.training.linearization import Linearization, ParameterSet
from spusim.training.loop import evaluate
from spusim.training.losses import Loss
from spusim.training.models import mlp
from spusim.training.optimizers import NGD, NGDCG, NGDWoodbury, sgd
from spusim.training.schedules import exponential_decay, value, warmup
from spusim.training.updates import SGD, Adam
from tests.training_support import one_blas_thread  # noqa: F401  (autouse)


@pytest.fixture(scope="module")
def data():
    return load_digits()


@pytest.fixture(scope="module")
def batch(data):
    """12 digits: with the MLP 64-7-10 (N = 535), m = 120 rows of J_f."""
    return next(batches(data.train, 12, seed=1))


def small_model() -> nn.Module:
    return mlp(64, 10, (7,), seed=2)


def first_direction(optimizer, batch) -> torch.Tensor:
    optimizer.step(*batch)
    return optimizer.report.direction


def damped_system(model: nn.Module, batch, kind: str, damping: float):
    lin = Linearization(model, ParameterSet(model), *batch, Loss("cross_entropy"))
    C = curvature.factors(lin, kind).dense()
    return C + damping * torch.eye(len(C), dtype=C.dtype), lin.grad


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_exact_ngd_and_woodbury_solve_the_damped_system(batch, kind: str) -> None:
    A, g = damped_system(small_model(), batch, kind, 0.05)
    exact = first_direction(NGD(small_model(), damping=0.05, curvature=kind), batch)
    torch.testing.assert_close(A @ exact, g, rtol=0, atol=1e-12 * float(g.norm()))
    woodbury = first_direction(NGDWoodbury(small_model(), damping=0.05, curvature=kind), batch)
    torch.testing.assert_close(woodbury, exact, rtol=0, atol=1e-9 * float(exact.norm()))


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_ngd_cg_converges_to_exact_ngd(batch, kind: str) -> None:
    """NGD-CG's subproblem is the quadratic min_d d^T (C + lambda I) d / 2 - g^T d: its error
    falls with the iterations c and vanishes (to rounding) once c passes the rank of C + 1."""
    exact = first_direction(NGD(small_model(), damping=0.1, curvature=kind), batch)
    errors = []
    for c in (2, 8, 32, 200):
        optimizer = NGDCG(small_model(), damping=0.1, iterations=c, curvature=kind)
        direction = first_direction(optimizer, batch)
        errors.append(float((direction - exact).norm() / exact.norm()))
        assert optimizer.report.info["cg_iterations"] <= c
    assert errors[0] > errors[1] > errors[2] and errors[-1] < 1e-9, errors


def test_damping_and_iterations_follow_their_schedules(batch) -> None:
    """At step k the optimizer uses the schedule's value at k."""
    damping = lambda step: 0.5 / (step + 1)  # noqa: E731
    scheduled = NGD(small_model(), damping=damping, lr=0.0)
    for step in range(3):
        got = first_direction(scheduled, batch)
        expected = first_direction(NGD(small_model(), damping=value(damping, step)), batch)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    cg = NGDCG(small_model(), iterations=lambda step: 2 + step, lr=0.0)
    for _ in range(4):
        cg.step(*batch)
    assert cg.report.info["cg_iterations"] == 5


def test_mse_ngd_on_a_linear_model_is_one_newton_step_to_least_squares() -> None:
    """A linear model under the squared loss has GGN = Hessian = X^T X / b (plus the bias
    column): exact NGD with lr 1 and a tiny damping lands on the least-squares solution of the
    batch in one step."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(40, 2, generator=generator, dtype=torch.float64)
    model = nn.Linear(3, 2).double()
    NGD(model, loss="mse", lr=1.0, damping=1e-10).step(x, y)
    X = torch.cat([x, torch.ones(40, 1, dtype=x.dtype)], dim=1)
    solution = torch.linalg.lstsq(X, y).solution  # (4, 2): W^T then the bias
    torch.testing.assert_close(model.weight.detach(), solution[:3].T, rtol=0, atol=1e-8)
    torch.testing.assert_close(model.bias.detach(), solution[3], rtol=0, atol=1e-8)


def test_sgd_rule_with_momentum_is_heavy_ball() -> None:
    """v_k = mu v_{k-1} + d_k, theta_{k+1} = theta_k - eta_k v_k, with eta a schedule."""
    group = SGD(lr=lambda step: 0.1 * (step + 1), momentum=0.5).defaults()
    theta, state = torch.zeros(3, dtype=torch.float64), {}
    d = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0], [2.0, 2.0, -1.0]], dtype=torch.float64)
    v = expected = torch.zeros(3, dtype=torch.float64)
    for k, dk in enumerate(d):
        SGD.apply(theta, dk, state, group, k)
        v = 0.5 * v + dk
        expected = expected - 0.1 * (k + 1) * v
        torch.testing.assert_close(theta, expected, rtol=1e-15, atol=0)


def test_adam_rule_matches_its_definition() -> None:
    group = Adam(lr=0.01, betas=(0.9, 0.99), eps=1e-8).defaults()
    generator = torch.Generator().manual_seed(0)
    theta, state = torch.zeros(4, dtype=torch.float64), {}
    m = v = expected = torch.zeros(4, dtype=torch.float64)
    for t in range(1, 6):
        d = torch.randn(4, generator=generator, dtype=torch.float64)
        Adam.apply(theta, d, state, group, t - 1)
        m, v = 0.9 * m + 0.1 * d, 0.99 * v + 0.01 * d**2
        expected = expected - 0.01 * (m / (1 - 0.9**t)) / ((v / (1 - 0.99**t)).sqrt() + 1e-8)
        torch.testing.assert_close(theta, expected, rtol=1e-12, atol=0)


def test_adam_with_zero_betas_is_sign_descent() -> None:
    """betas (0, 0): every step is exactly -eta d / (|d| + eps), within eta eps / |d| of
    -eta sign(d) (arXiv 2405.13817 section 5, TNGD-Adam)."""
    group = Adam(lr=0.001, betas=(0.0, 0.0)).defaults()
    generator = torch.Generator().manual_seed(1)
    theta, state = torch.zeros(50, dtype=torch.float64), {}
    for k in range(3):
        d = torch.randn(50, generator=generator, dtype=torch.float64) * 10.0 ** (
            6 * torch.rand(50, generator=generator, dtype=torch.float64) - 3)
        before = theta.clone()
        Adam.apply(theta, d, state, group, k)
        assert torch.equal(theta, before - 0.001 * d / (d.abs() + 1e-8))
        slack = 4 * torch.finfo(torch.float64).eps * (before.abs() + 0.001)  # rounding
        assert torch.all(((theta - before) + 0.001 * d.sign()).abs()
                         <= 0.001 * 1e-8 / d.abs() + slack)


def test_parameter_groups_get_their_own_learning_rate(batch) -> None:
    """Two groups, lr 0.1 and 0.02: each parameter moves by its group's lr times its slice of
    the same NGD direction (one system over all of N)."""
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    first, rest = list(model.parameters())[:2], list(model.parameters())[2:]
    optimizer = NGD(model, [{"params": first, "lr": 0.1}, {"params": rest}], lr=0.02,
                    damping=0.1)
    optimizer.step(*batch)
    parts = ParameterSet(model).split(optimizer.report.direction)
    for i, (p, old, d) in enumerate(zip(model.parameters(), before, parts, strict=True)):
        torch.testing.assert_close(p.detach(), old - (0.1 if i < 2 else 0.02) * d, rtol=0,
                                   atol=1e-15)


def test_a_torch_lr_scheduler_sets_the_learning_rate(batch) -> None:
    """torch.optim.lr_scheduler works on the NGD family as on any torch optimizer: StepLR
    halves lr after each step, and each update moves theta by that step's lr times d."""
    model = small_model()
    optimizer = NGD(model, lr=0.2, damping=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for k in range(3):
        before = ParameterSet(model).flat()
        optimizer.step(*batch)
        scheduler.step()
        torch.testing.assert_close(ParameterSet(model).flat(),
                                   before - 0.2 * 0.5**k * optimizer.report.direction,
                                   rtol=0, atol=1e-15)


def test_frozen_parameters_stay_put_and_zero_grad_is_harmless(batch) -> None:
    model = small_model()
    model[1].requires_grad_(False)  # the first dense layer
    frozen = model[1].weight.detach().clone()
    optimizer = NGD(model, damping=0.1, lr=0.3)
    optimizer.zero_grad()
    optimizer.step(*batch)
    assert torch.equal(model[1].weight, frozen)
    assert optimizer.report.direction.numel() == 10 * 8  # the last layer only
    assert not torch.equal(model[3].weight.detach(), small_model()[3].weight.detach())


def test_state_dict_resumes_a_run_exactly(data) -> None:
    """Five steps in one go equal three, save, load into a fresh model and optimizer, two more:
    momentum buffers and the step count (for schedules) travel in the state dict."""
    stream = [next(batches(data.train, 16, seed=k)) for k in range(5)]
    lr = exponential_decay(0.3, 0.9)

    def optimizer_for(model: nn.Module) -> NGD:
        return NGD(model, lr=lr, momentum=0.5, damping=0.1)

    straight = small_model()
    optimizer = optimizer_for(straight)
    for batch in stream:
        optimizer.step(*batch)
    resumed = small_model()
    first = optimizer_for(resumed)
    for batch in stream[:3]:
        first.step(*batch)
    saved = copy.deepcopy((resumed.state_dict(), first.state_dict()))
    model, second = small_model(), None
    model.load_state_dict(saved[0])
    second = optimizer_for(model)
    second.load_state_dict(saved[1])
    assert second.steps == 3
    for batch in stream[3:]:
        second.step(*batch)
    for a, b in zip(straight.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_float32_model_trains_in_float32(batch) -> None:
    model = mlp(64, 10, (7,), seed=2, dtype=torch.float32)
    optimizer = NGDWoodbury(model, damping=0.1, lr=0.3)
    losses = [optimizer.step(*batch) for _ in range(5)]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0]


def test_ngd_trains_faster_than_sgd_at_the_same_learning_rate(data) -> None:
    """On digits, 15 steps of exact NGD reach a lower training loss than 15 of SGD (torch.optim)
    at the same learning rate and batches: the point of preconditioning (a wide margin)."""
    losses = {}
    for name in ("sgd", "ngd"):
        model = mlp(64, 10, (5,), seed=0)
        optimizer = sgd(model, 0.3) if name == "sgd" else NGD(model, lr=0.3, damping=0.1)
        stream = batches(data.train, 32, seed=0)
        for _ in range(15):
            optimizer.step(*next(stream))
        losses[name] = evaluate(model, data.train)[0]
    assert losses["ngd"] < 0.7 * losses["sgd"], losses


def test_first_order_wrapper_is_torch_optim_step(batch) -> None:
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = sgd(model, 0.1)
    loss = optimizer.step(*batch)
    reference = small_model()
    expected = nn.functional.cross_entropy(reference(batch[0].double()), batch[1])
    expected.backward()
    assert loss == pytest.approx(float(expected.detach()), rel=1e-14)
    for p, old, q in zip(model.parameters(), before, reference.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), old - 0.1 * q.grad, rtol=0, atol=1e-15)
    assert optimizer.report.device is None and optimizer.report.accuracy is not None


def test_bad_options_are_refused(batch) -> None:
    with pytest.raises(ValueError, match="loss"):
        NGD(small_model(), loss="hinge")
    with pytest.raises(ValueError, match="curvature"):
        NGD(small_model(), curvature="hessian")
    model = small_model().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        NGD(model).step(*batch)


def test_schedule_helpers() -> None:
    assert value(0.5, 7) == 0.5
    assert value(lambda step: step / 2, 3) == 1.5
    assert [warmup(1.0, 4)(k) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert exponential_decay(2.0, 0.5)(3) == 0.25
    with pytest.raises(ValueError):
        value(lambda step: float("nan"), 0)
