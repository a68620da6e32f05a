"""TNGD (the torch optimizer and its device solve) on daemon subprocesses against closed forms.

The daemons come from the project's pytest plugin (spu_device, the spu_config marker) and run
with kappa0 = 0, so every run is deterministic and these tests compare with exact arithmetic,
not statistics. Factored programming integrates with Euler-Maruyama at step h = em_step/tau;
with no noise its state after k steps from x0 is exactly

    x_k = x* + (I - h A)^k (x0 - x*),      A = C + lambda I,  x* = A^-1 g        (EM)

the discrete form of the paper's <x(t)> = e^{-At} x0 + (I - e^{-At}) A^-1 g (Eq. 19), which it
approaches as h -> 0 at fixed t = k h. Hence the limits:

- t -> infinity: x_k -> x*, the exact NGD direction, with error at most rho^k ||x0 - x*||,
  rho = max |1 - h mu| over the eigenvalues mu of A (the tolerance used below);
- t -> 0 with the state set to g: x_0 = g, the SGD direction. The device cannot be read
  without running (a read needs at least one ADC sample, one interval Delta), so the test reads
  after one interval, checks x_1 = g - h (A - I) g to rounding, and checks that the gap to SGD
  shrinks tenfold when Delta (= one EM step) does: the t = 0 limit is an SGD step.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from spusim import Device
from spusim.training import curvature
from spusim.training.data import batches, load_digits
from spusim.training.linearization import Linearization, ParameterSet
from spusim.training.losses import Loss
from spusim.training.models import mlp
from spusim.training.optimizers import NGD
from spusim.training.tngd import TNGD, ThermodynamicNGD, _resolved
from spusim.training.updates import Adam
from spusim.timing.model import LinkModel
from tests.training_support import one_blas_thread  # noqa: F401  (autouse)

pytestmark = [pytest.mark.daemon, pytest.mark.spu_config(kappa0=0.0, seed=0)]
DAMPING = 0.5
EM = "euler_maruyama"  # the tests with Euler-Maruyama's closed form ask for it
BATCH = 12
FINE = {"kappa0": 0.0, "seed": 0, "em_step_ns": 10, "sample_interval_ns": 10}


@pytest.fixture
def fine_device(spu_daemon_pool) -> Iterator[Device]:
    """A noiseless device with a ten times finer EM step and ADC interval (0.01 tau)."""
    daemon = spu_daemon_pool.get(FINE)
    device = daemon.connect()
    device.reset()
    yield device
    daemon.close_clients()


@pytest.fixture(scope="module")
def stream() -> list[tuple[torch.Tensor, torch.Tensor]]:
    source = batches(load_digits().train, BATCH, seed=4)
    return [next(source) for _ in range(4)]


def small_model() -> nn.Module:
    """N = 460 parameters; with a batch of 12, J_f has m = 120 rows."""
    return mlp(64, 10, (6,), seed=7)


def linearize(model: nn.Module, batch) -> Linearization:
    return Linearization(model, ParameterSet(model), *batch, Loss("cross_entropy"))


def step_size(device: Device) -> float:
    return int(device.config["em_step_ns"]) / device.tau_ns


def damped(lin: Linearization, kind: str = "ggn") -> tuple[np.ndarray, np.ndarray]:
    """A = C + lambda I and g, as float64 numpy arrays."""
    C = curvature.factors(lin, kind).dense().numpy()
    return C + DAMPING * np.eye(len(C)), lin.grad.double().numpy()


def solve(device: Device, lin: Linearization, **options) -> np.ndarray:
    """One device solve from the state g (a fresh solver), the estimate."""
    solver = ThermodynamicNGD(device, damping=DAMPING, **{"integrator": EM, **options})
    return solver.solve(curvature.factors(lin), lin.grad, 0)[0]


def euler(A: np.ndarray, g: np.ndarray, x0: np.ndarray, steps: int, h: float) -> np.ndarray:
    """The noiseless EM state after ``steps`` steps from x0: x* + (I - hA)^k (x0 - x*)."""
    x_star = np.linalg.solve(A, g)
    return x_star + np.linalg.matrix_power(np.eye(len(A)) - h * A, steps) @ (x0 - x_star)


def continuous(A: np.ndarray, g: np.ndarray, t: float) -> np.ndarray:
    """e^{-At} g + (I - e^{-At}) A^-1 g."""
    mu, V = np.linalg.eigh(A)
    x_star = np.linalg.solve(A, g)
    return x_star + V @ (np.exp(-mu * t) * (V.T @ (g - x_star)))


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
@pytest.mark.parametrize("warm_start", [None, True])
def test_long_noiseless_run_is_the_exact_ngd_step(spu_device: Device, stream, kind,
                                                  warm_start) -> None:
    """kappa0 = 0 and t = 60 tau: three TNGD steps (reset to g by Algorithm 1's rule at
    t_d = 0, or warm-started) equal exact NGD's within the EM contraction bound
    rho^k ||x0 - x*|| (plus rounding), and so do the parameters."""
    t, h = 60.0, step_size(spu_device)
    steps = spu_device.duration_ns(t) // int(spu_device.config["em_step_ns"])
    model, reference = small_model(), small_model()
    device_opt = TNGD(model, device=spu_device, lr=0.3, damping=DAMPING, t=t, curvature=kind,
                      warm_start=warm_start, seed=0, integrator=EM)
    exact_opt = NGD(reference, lr=0.3, damping=DAMPING, curvature=kind)
    previous = None
    for batch in stream[:3]:
        A, g = damped(linearize(model, batch), kind)
        x0 = g if previous is None or warm_start is None else previous
        mu = np.linalg.eigvalsh(A)
        rho = max(abs(1 - h * mu[0]), abs(1 - h * mu[-1]))
        exact_opt.step(*batch)
        device_opt.step(*batch)
        expected, got = exact_opt.report.direction.numpy(), device_opt.report.direction.numpy()
        bound = rho**steps * np.linalg.norm(x0 - expected) + 1e-12 * np.linalg.norm(expected)
        assert np.linalg.norm(got - expected) <= bound
        previous = got
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-11)


@pytest.mark.parametrize("intervals", [1, 5, 20])
def test_reset_state_follows_the_sgd_to_ngd_interpolation(spu_device: Device, stream,
                                                          intervals: int) -> None:
    """From the state g, after k intervals the estimate is the EM form of
    e^{-At} g + (I - e^{-At}) A^-1 g, to rounding."""
    h = step_size(spu_device)
    t = intervals * int(spu_device.config["sample_interval_ns"]) / spu_device.tau_ns
    lin = linearize(small_model(), stream[0])
    A, g = damped(lin)
    expected = euler(A, g, g, intervals, h)
    np.testing.assert_allclose(solve(spu_device, lin, t=t), expected, rtol=0,
                               atol=1e-12 * np.linalg.norm(expected))


def test_zero_analog_time_limit_is_an_sgd_step(spu_device: Device, fine_device: Device,
                                               stream) -> None:
    """The shortest readout (one interval = one EM step h) gives g - h (A - I) g exactly: the
    TNGD step differs from the SGD step by lr h ||(A - I) g||, which falls tenfold with h."""
    A, g = damped(linearize(small_model(), stream[0]))
    gaps = []
    for device in (spu_device, fine_device):
        h = step_size(device)
        model = small_model()
        optimizer = TNGD(model, device=device, lr=0.3, damping=DAMPING, t=0.0, integrator=EM)
        optimizer.step(*stream[0])
        report = optimizer.report
        np.testing.assert_allclose(report.direction.numpy(), g - h * (A @ g - g), rtol=0,
                                   atol=1e-13 * np.linalg.norm(g))
        assert report.device.samples == 1 and report.device.analog_ns == int(
            device.config["sample_interval_ns"])
        sgd_theta = ParameterSet(small_model()).flat().numpy() - 0.3 * g
        gaps.append(np.linalg.norm(ParameterSet(model).flat().numpy() - sgd_theta))
        assert gaps[-1] == pytest.approx(0.3 * h * np.linalg.norm(A @ g - g), rel=1e-9)
    assert gaps[1] == pytest.approx(gaps[0] / 10, rel=1e-9)


def test_finer_steps_approach_the_continuous_interpolation(spu_device: Device,
                                                            fine_device: Device,
                                                            stream) -> None:
    """At t = 1 tau, EM's estimate approaches e^{-At} g + (I - e^{-At}) A^-1 g at first order
    in h: ten times finer steps, about ten times closer (at least five)."""
    lin = linearize(small_model(), stream[0])
    target = continuous(*damped(lin), 1.0)
    errors = [np.linalg.norm(solve(device, lin, t=1.0) - target)
              for device in (spu_device, fine_device)]
    assert errors[1] < errors[0] / 5, errors


@pytest.mark.parametrize("t", [0.1, 1.0, 3.0])
def test_exact_integrator_gives_the_continuous_interpolation(spu_device: Device, stream,
                                                             t: float) -> None:
    """With the exact factored integrator the estimate is e^{-At} g + (I - e^{-At}) A^-1 g
    itself, to rounding, whatever the step (the limit Euler-Maruyama approaches above)."""
    lin = linearize(small_model(), stream[0])
    expected = continuous(*damped(lin), t)
    np.testing.assert_allclose(solve(spu_device, lin, t=t, integrator="exact"), expected,
                               rtol=0, atol=1e-12 * np.linalg.norm(expected))


def test_tngd_adam_with_zero_betas_is_sign_descent_on_the_estimate(spu_device: Device,
                                                                    stream) -> None:
    """TNGD-Adam as the paper ran it (betas (0, 0)): every update is exactly
    -eta d / (|d| + eps) on the device's estimate d."""
    model = small_model()
    optimizer = TNGD(model, device=spu_device, update=Adam(1e-3, betas=(0.0, 0.0)),
                     damping=1.0, t=0.4)
    for batch in stream[:3]:
        before = ParameterSet(model).flat()
        optimizer.step(*batch)
        d = optimizer.report.direction
        assert torch.equal(ParameterSet(model).flat(), before - 1e-3 * d / (d.abs() + 1e-8))


def test_window_average_readout_averages_every_sample(spu_device: Device, stream) -> None:
    h = step_size(spu_device)
    lin = linearize(small_model(), stream[1])
    A, g = damped(lin)
    solver = ThermodynamicNGD(spu_device, damping=DAMPING, t=0.8, readout="average",
                              integrator=EM)
    estimate, report = solver.solve(curvature.factors(lin), lin.grad, 0)
    expected = np.mean([euler(A, g, g, k, h) for k in range(1, 9)], axis=0)
    assert report.samples == 8
    np.testing.assert_allclose(estimate, expected, rtol=0, atol=1e-12 * np.linalg.norm(expected))


@pytest.mark.parametrize("d, warm_start, kept", [
    (3, None, True), (3, False, False), (0, None, False), (0, True, True)])
def test_algorithm_1_resets_at_zero_delay_and_keeps_the_state_after_a_delay(
        spu_device: Device, stream, d: int, warm_start, kept: bool) -> None:
    """Step 1 after step 0's readout: with t_d = d h > 0 the state runs t_d more under step 0's
    (A, g); then t under step 1's, from where it was (Algorithm 1's rule for t_d > 0, or
    warm_start=True) or from g (its rule for t_d = 0, or warm_start=False)."""
    h, k = step_size(spu_device), 5
    model = small_model()
    optimizer = TNGD(model, device=spu_device, lr=0.3, damping=DAMPING, t=k * h, delay=d * h,
                     warm_start=warm_start, integrator=EM)
    A0, g0 = damped(linearize(model, stream[0]))
    optimizer.step(*stream[0])
    first = optimizer.report
    A1, g1 = damped(linearize(model, stream[1]))
    optimizer.step(*stream[1])
    second = optimizer.report
    x_read = euler(A0, g0, g0, k, h)
    np.testing.assert_allclose(first.direction.numpy(), x_read,
                               atol=1e-12 * np.linalg.norm(x_read))
    start = euler(A0, g0, x_read, d, h) if kept else g1
    expected = euler(A1, g1, start, k, h)
    np.testing.assert_allclose(second.direction.numpy(), expected, rtol=0,
                               atol=1e-12 * np.linalg.norm(expected))
    assert first.device.delay_ns == 0  # nothing to delay before the first upload
    assert second.device.delay_ns == (spu_device.duration_ns(d * h) if d else 0)


def test_pipelined_steps_solve_with_the_previous_factors(spu_device: Device, stream) -> None:
    """pipelined=True (Eqs. 15-18): step k's estimate solves step k-1's system (step 0 its
    own), so with a long noiseless run step 1 repeats step 0's direction."""
    model = small_model()
    optimizer = TNGD(model, device=spu_device, lr=0.3, damping=DAMPING, t=60.0, pipelined=True)
    exact, directions = [], []
    for batch in stream[:3]:
        A, g = damped(linearize(model, batch))
        exact.append(np.linalg.solve(A, g))
        optimizer.step(*batch)
        directions.append(optimizer.report.direction.numpy())
    for got, expected in zip(directions, [exact[0], exact[0], exact[1]], strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * np.linalg.norm(expected))


def test_device_report_prices_every_phase_by_the_timing_model(spu_device: Device,
                                                               stream) -> None:
    """Upload: the factors m (m + 2N), the bias N and (reset by Algorithm 1 at t_d = 0) the
    state N, 16-bit values at 50 Gb/s each; readout N values; analog t; and the device clock
    moved by their sum."""
    model, link = small_model(), LinkModel()
    n, m = ParameterSet(model).n, BATCH * 10
    optimizer = TNGD(model, device=spu_device, lr=0.3, damping=DAMPING, t=2.0)
    for batch in stream[:2]:
        optimizer.step(*batch)
        device = optimizer.report.device
        assert device.upload == {"transfer_in": link.transfer_ns(m * (m + 2 * n))
                                 + 2 * link.transfer_ns(n)}
        assert device.readout == {"transfer_out": link.transfer_ns(n)}
        assert device.analog_ns == 2000 and device.delay_ns == 0
        assert device.total_ns == (sum(device.upload.values()) + device.analog_ns
                                   + sum(device.readout.values()))
        assert device.elements == m * (m + 2 * n)
        assert device.dac_clipped == device.adc_clipped == 0 and device.samples == 1


def test_float32_model_frozen_layer_and_state_dict(spu_device: Device, stream) -> None:
    """A float32 model with its first layer frozen: N counts the rest only, the parameters
    stay float32, and a state dict saved after two steps resumes the run to the same
    parameters as running straight on (the device restarting from g, as Algorithm 1 does at
    t_d = 0 anyway)."""
    def model_and_optimizer():
        model = mlp(64, 10, (6,), seed=7, dtype=torch.float32)
        model[1].requires_grad_(False)
        return model, TNGD(model, device=spu_device, lr=0.3, damping=DAMPING, t=5.0,
                           momentum=0.5)

    straight, optimizer = model_and_optimizer()
    for batch in stream[:4]:
        optimizer.step(*batch)
    assert optimizer.report.direction.numel() == 6 * 10 + 10  # the last layer's
    assert all(p.dtype == torch.float32 for p in straight.parameters())
    first_model, first = model_and_optimizer()
    for batch in stream[:2]:
        first.step(*batch)
    saved = copy.deepcopy((first_model.state_dict(), first.state_dict()))
    resumed, second = model_and_optimizer()
    resumed.load_state_dict(saved[0])
    second.load_state_dict(saved[1])
    for batch in stream[2:4]:
        second.step(*batch)
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


class UserRegressor(nn.Module):
    """A module of a user's own: a buffer, tanh, two outputs (regression)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(0.5, dtype=torch.float64))
        self.hidden = nn.Linear(3, 5, dtype=torch.float64)
        self.out = nn.Linear(5, 2, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.scale * self.hidden(x)))


def test_a_users_regression_module_under_mse_equals_exact_ngd(spu_device: Device) -> None:
    """Any nn.Module with (b, d_z) outputs: a user's regressor under the squared loss, three
    noiseless TNGD steps at t = 60 tau equal exact NGD's (the EM contraction is far below
    rounding here: lambda = 0.5, h = 0.1, 600 steps)."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(3, 16, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(3, 16, 2, generator=generator, dtype=torch.float64)
    torch.manual_seed(0)
    model = UserRegressor()
    reference = copy.deepcopy(model)
    device_opt = TNGD(model, device=spu_device, loss="mse", lr=0.3, damping=DAMPING, t=60.0)
    exact_opt = NGD(reference, loss="mse", lr=0.3, damping=DAMPING)
    for xb, yb in zip(x, y, strict=True):
        assert device_opt.step(xb, yb) == pytest.approx(exact_opt.step(xb, yb), rel=1e-12)
        assert device_opt.report.accuracy is None
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_default_integrator_is_exact_where_the_device_runs_it(spu_device: Device) -> None:
    """"auto": exact on an ideal chip; Euler-Maruyama where mismatch makes the damping differ
    between cells or an anti-alias filter sits before the ADC."""
    assert ThermodynamicNGD(spu_device).integrator == "exact"
    for other in ({"mismatch": 0.01}, {"readout_tau_ns": 50.0}):
        assert _resolved("auto", {**spu_device.config, **other}) == EM
    assert ThermodynamicNGD(spu_device, integrator=EM).integrator == EM
    with pytest.raises(ValueError, match="integrator"):
        ThermodynamicNGD(spu_device, integrator="rk4")


def test_bad_switches_are_refused(spu_device: Device) -> None:
    with pytest.raises(ValueError, match="readout"):
        ThermodynamicNGD(spu_device, readout="mean")
    with pytest.raises(ValueError, match="curvature"):
        TNGD(small_model(), device=spu_device, curvature="hessian")
