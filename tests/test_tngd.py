"""TNGD on a daemon subprocess against closed forms.

The daemons run with kappa0 = 0, so every run is deterministic and these tests compare with
exact arithmetic, not statistics. Factored programming integrates with Euler-Maruyama at step
h = em_step/tau; with no noise its state after k steps from x0 is exactly

    x_k = x* + (I - h A)^k (x0 - x*),      A = C + lambda I,  x* = A^-1 g        (EM)

the discrete form of the paper's <x(t)> = e^{-At} x0 + (I - e^{-At}) A^-1 g (Eq. 19), which it
approaches as h -> 0 at fixed t = k h. Hence the limits the issue asks for:

- t -> infinity: x_k -> x*, the exact NGD direction, with error at most rho^k ||x0 - x*||,
  rho = max |1 - h mu| over the eigenvalues mu of A (the tolerance used below);
- t -> 0 with the state set to g: x_0 = g, the SGD direction. The device cannot be read
  without running (a read needs at least one ADC sample, one interval Delta), so the test reads
  after one interval, checks x_1 = g - h (A - I) g to rounding, and checks that the gap to SGD
  shrinks tenfold when Delta (= one EM step) does: the t = 0 limit is an SGD step.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from spusim import Device
from spusim.training import curvature
from spusim.training.data import Batch, batches, load_digits
from spusim.training.models import Network, mlp
from spusim.training.optimizers import ExactNGD, ngd
from spusim.training.tngd import ThermodynamicNGD, _resolved, tngd
from spusim.training.updates import Adam
from tests.training_support import one_blas_thread  # noqa: F401  (autouse)
from spusim.timing.model import LinkModel

pytestmark = pytest.mark.daemon
DAMPING = 0.5
EM = "euler_maruyama"  # the tests with Euler-Maruyama's closed form ask for it
BATCH = 12


@pytest.fixture(scope="module")
def exact_device() -> Iterator[Device]:
    """A noiseless ideal device: EM step = ADC interval = 0.1 tau."""
    with Device.spawn(kappa0=0.0, seed=0) as device:
        yield device


@pytest.fixture(scope="module")
def fine_device() -> Iterator[Device]:
    """A noiseless device with a ten times finer EM step and ADC interval (0.01 tau)."""
    with Device.spawn(kappa0=0.0, seed=0, em_step_ns=10, sample_interval_ns=10) as device:
        yield device


@pytest.fixture(scope="module")
def stream() -> list[Batch]:
    data = load_digits()
    source = batches(data.train, BATCH, seed=4)
    return [next(source) for _ in range(4)]


def small_model() -> Network:
    """N = 460 parameters; with a batch of 12, J_f has m = 120 rows."""
    return mlp(64, 10, (6,), seed=7)


def step_size(device: Device) -> float:
    return int(device.config["em_step_ns"]) / device.tau_ns


def damped(lin, kind: str = "ggn", damping: float = DAMPING) -> np.ndarray:
    C = curvature.factors(lin, kind).dense()
    return C + damping * np.eye(len(C))


def euler(A: np.ndarray, g: np.ndarray, x0: np.ndarray, steps: int, h: float) -> np.ndarray:
    """The noiseless EM state after ``steps`` steps from x0: x* + (I - hA)^k (x0 - x*)."""
    x_star = np.linalg.solve(A, g)
    return x_star + np.linalg.matrix_power(np.eye(len(A)) - h * A, steps) @ (x0 - x_star)


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_long_noiseless_run_is_the_exact_ngd_step(exact_device: Device, stream, kind) -> None:
    """kappa0 = 0 and t = 60 tau: three warm-started TNGD steps equal exact NGD's within the
    EM contraction bound rho^k ||x0 - x*|| (plus rounding), and so do the parameters."""
    t, h = 60.0, step_size(exact_device)
    steps = exact_device.duration_ns(t) // int(exact_device.config["em_step_ns"])
    model, reference = small_model(), small_model()
    device_opt = tngd(exact_device, lr=0.3, damping=DAMPING, t=t, curvature=kind, seed=0,
                      integrator=EM)
    exact_opt = ngd(0.3, DAMPING, curvature=kind)
    x0 = None
    for batch in stream[:3]:
        lin = model.linearize(batch)
        A = damped(lin, kind)
        x0 = lin.grad if x0 is None else x0  # the first step starts from g, then warm
        mu = np.linalg.eigvalsh(A)
        rho = max(abs(1 - h * mu[0]), abs(1 - h * mu[-1]))
        expected = exact_opt.step(reference, batch).direction
        got = device_opt.step(model, batch).direction
        bound = rho**steps * np.linalg.norm(x0 - expected) + 1e-12 * np.linalg.norm(expected)
        assert np.linalg.norm(got - expected) <= bound
        x0 = got
    np.testing.assert_allclose(model.params, reference.params, rtol=0, atol=1e-11)


@pytest.mark.parametrize("intervals", [1, 5, 20])
def test_reset_state_follows_the_sgd_to_ngd_interpolation(exact_device: Device, stream,
                                                          intervals: int) -> None:
    """warm_start=False sets the state to g: after k intervals the estimate is the EM form of
    e^{-At} g + (I - e^{-At}) A^-1 g, to rounding."""
    h = step_size(exact_device)
    t = intervals * int(exact_device.config["sample_interval_ns"]) / exact_device.tau_ns
    model = small_model()
    lin = model.linearize(stream[0])
    preconditioner = ThermodynamicNGD(exact_device, damping=DAMPING, t=t, warm_start=False,
                                      integrator=EM)
    got = preconditioner(lin, 0).vector
    expected = euler(damped(lin), lin.grad, lin.grad, intervals, h)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.linalg.norm(expected))


def test_zero_analog_time_limit_is_an_sgd_step(exact_device: Device, fine_device: Device,
                                               stream) -> None:
    """The shortest readout (one interval = one EM step h) gives g - h (A - I) g exactly: the
    TNGD step differs from the SGD step by lr h ||(A - I) g||, which falls tenfold with h."""
    lin = small_model().linearize(stream[0])
    A, g = damped(lin), lin.grad
    gaps = []
    for device in (exact_device, fine_device):
        h = step_size(device)
        model = small_model()
        optimizer = tngd(device, lr=0.3, damping=DAMPING, t=0.0, warm_start=False,
                         integrator=EM)
        report = optimizer.step(model, stream[0])
        np.testing.assert_allclose(report.direction, g - h * (A @ g - g), rtol=0,
                                   atol=1e-13 * np.linalg.norm(g))
        assert report.device.samples == 1 and report.device.analog_ns == int(
            device.config["sample_interval_ns"])
        sgd_params = small_model().params - 0.3 * g
        gaps.append(np.linalg.norm(model.params - sgd_params))
        assert gaps[-1] == pytest.approx(0.3 * h * np.linalg.norm(A @ g - g), rel=1e-9)
    assert gaps[1] == pytest.approx(gaps[0] / 10, rel=1e-9)


def test_finer_steps_approach_the_continuous_interpolation(exact_device: Device,
                                                            fine_device: Device,
                                                            stream) -> None:
    """At t = 1 tau, EM's estimate approaches e^{-At} g + (I - e^{-At}) A^-1 g at first order
    in h: ten times finer steps, about ten times closer (at least five)."""
    lin = small_model().linearize(stream[0])
    A, g = damped(lin), lin.grad
    mu, V = np.linalg.eigh(A)
    x_star = np.linalg.solve(A, g)
    continuous = x_star + V @ (np.exp(-mu) * (V.T @ (g - x_star)))
    errors = [np.linalg.norm(ThermodynamicNGD(device, damping=DAMPING, t=1.0, warm_start=False,
                                              integrator=EM)(lin, 0).vector - continuous)
              for device in (exact_device, fine_device)]
    assert errors[1] < errors[0] / 5, errors


@pytest.mark.parametrize("t", [0.1, 1.0, 3.0])
def test_exact_integrator_gives_the_continuous_interpolation(exact_device: Device, stream,
                                                             t: float) -> None:
    """With the exact factored integrator the estimate is e^{-At} g + (I - e^{-At}) A^-1 g
    itself, to rounding, whatever the step (the limit Euler-Maruyama approaches above)."""
    lin = small_model().linearize(stream[0])
    A, g = damped(lin), lin.grad
    mu, V = np.linalg.eigh(A)
    x_star = np.linalg.solve(A, g)
    continuous = x_star + V @ (np.exp(-mu * t) * (V.T @ (g - x_star)))
    got = ThermodynamicNGD(exact_device, damping=DAMPING, t=t, warm_start=False,
                           integrator="exact")(lin, 0).vector
    np.testing.assert_allclose(got, continuous, rtol=0, atol=1e-12 * np.linalg.norm(continuous))


def test_tngd_adam_with_zero_betas_is_sign_descent_on_the_estimate(exact_device: Device,
                                                                    stream) -> None:
    """TNGD-Adam as the paper ran it (beta1 = beta2 = 0): every update is exactly
    -eta d / (|d| + eps) on the device's estimate d, within eta eps / |d| of -eta sign(d)."""
    model = small_model()
    optimizer = tngd(exact_device, Adam(lr=1e-3, beta1=0.0, beta2=0.0, eps=1e-8), damping=1.0,
                     t=0.4)
    assert optimizer.name == "tngd-adam"
    for batch in stream[:3]:
        before = model.params.copy()
        d = optimizer.step(model, batch).direction
        np.testing.assert_array_equal(model.params, before - 1e-3 * d / (np.abs(d) + 1e-8))
        slack = 4 * np.spacing(np.abs(before) + 1e-3)
        with np.errstate(divide="ignore"):  # d = 0 (pixels blank in the whole batch): no step
            bound = 1e-3 * 1e-8 / np.abs(d) + slack
        assert np.all(np.abs(model.params - before + 1e-3 * np.sign(d)) <= bound)


def test_window_average_readout_averages_every_sample(exact_device: Device, stream) -> None:
    h = step_size(exact_device)
    lin = small_model().linearize(stream[1])
    A, g = damped(lin), lin.grad
    preconditioner = ThermodynamicNGD(exact_device, damping=DAMPING, t=0.8, warm_start=False,
                                      readout="average", integrator=EM)
    direction = preconditioner(lin, 0)
    expected = np.mean([euler(A, g, g, k, h) for k in range(1, 9)], axis=0)
    assert direction.device.samples == 8
    np.testing.assert_allclose(direction.vector, expected, rtol=0,
                               atol=1e-12 * np.linalg.norm(expected))


def test_delay_runs_the_old_drift_before_the_upload_and_the_state_is_warm(
        exact_device: Device, stream) -> None:
    """Step 1 with t_d: the state read at step 0 runs t_d more under step 0's (A, g), then t
    under step 1's, from where it was (warm start)."""
    h, k, d = step_size(exact_device), 5, 3
    model = small_model()
    optimizer = tngd(exact_device, lr=0.3, damping=DAMPING, t=k * h, delay=d * h,
                     integrator=EM)
    lin0 = model.linearize(stream[0])
    first = optimizer.step(model, stream[0])
    lin1 = model.linearize(stream[1])
    second = optimizer.step(model, stream[1])
    A0, A1 = damped(lin0), damped(lin1)
    x_read = euler(A0, lin0.grad, lin0.grad, k, h)
    np.testing.assert_allclose(first.direction, x_read, atol=1e-12 * np.linalg.norm(x_read))
    x_delayed = euler(A0, lin0.grad, x_read, d, h)
    expected = euler(A1, lin1.grad, x_delayed, k, h)
    np.testing.assert_allclose(second.direction, expected, rtol=0,
                               atol=1e-12 * np.linalg.norm(expected))
    assert first.device.delay_ns == 0  # nothing to delay before the first upload
    assert second.device.delay_ns == exact_device.duration_ns(d * h)


def test_pipelined_steps_solve_with_the_previous_factors(exact_device: Device, stream) -> None:
    """pipelined=True (Eqs. 15-18): step k's estimate solves step k-1's system (step 0 its
    own), so with a long noiseless run step 1 repeats step 0's direction."""
    model = small_model()
    optimizer = tngd(exact_device, lr=0.3, damping=DAMPING, t=60.0, pipelined=True)
    lins, directions = [], []
    for batch in stream[:3]:
        lins.append(model.linearize(batch))
        directions.append(optimizer.step(model, batch).direction)
    exact = [ExactNGD(DAMPING)(lin, 0).vector for lin in lins]
    for got, expected in zip(directions, [exact[0], exact[0], exact[1]], strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * np.linalg.norm(expected))


def test_device_report_prices_every_phase_by_the_timing_model(exact_device: Device,
                                                               stream) -> None:
    """Upload: the factors m (m + 2N), the bias N and (first step) the state N, 16-bit values
    at 50 Gb/s each; readout N values; analog t; and the device clock moved by their sum."""
    model, link = small_model(), LinkModel()
    n, m = model.n_params, BATCH * 10
    optimizer = tngd(exact_device, lr=0.3, damping=DAMPING, t=2.0, delay=0.5)
    for k, batch in enumerate(stream[:2]):
        device = optimizer.step(model, batch).device
        state = link.transfer_ns(n) if k == 0 else 0
        assert device.upload == {"transfer_in": link.transfer_ns(m * (m + 2 * n))
                                 + link.transfer_ns(n) + state}
        assert device.readout == {"transfer_out": link.transfer_ns(n)}
        assert device.analog_ns == 2000 and device.delay_ns == (500 if k else 0)
        assert device.total_ns == (device.delay_ns + sum(device.upload.values())
                                         + device.analog_ns + sum(device.readout.values()))
        assert device.elements == m * (m + 2 * n)
        assert device.dac_clipped == device.adc_clipped == 0 and device.samples == 1


def test_default_integrator_is_exact_where_the_device_runs_it(exact_device: Device) -> None:
    """"auto": exact on an ideal chip; Euler-Maruyama where mismatch makes the damping differ
    between cells or an anti-alias filter sits before the ADC."""
    assert ThermodynamicNGD(exact_device).integrator == "exact"
    for other in ({"mismatch": 0.01}, {"readout_tau_ns": 50.0}):
        assert _resolved("auto", {**exact_device.config, **other}) == EM
    assert ThermodynamicNGD(exact_device, integrator=EM).integrator == EM


def test_bad_switches_are_refused(exact_device: Device) -> None:
    with pytest.raises(ValueError, match="readout"):
        ThermodynamicNGD(exact_device, readout="mean")
    with pytest.raises(ValueError, match="curvature"):
        ThermodynamicNGD(exact_device, curvature="hessian")
    with pytest.raises(ValueError, match="integrator"):
        ThermodynamicNGD(exact_device, integrator="rk4")
