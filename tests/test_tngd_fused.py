"""One TNGD step in one request (solve_factored, protocol 1.2) against the same step as one
op per request: with the same seeds the same estimates bit for bit, the same DeviceStep
(per-phase simulated time, clips, samples), the same clock and trace, in one round trip."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import numpy as np
import pytest

from spusim import Device
from spusim.device.config import DeviceConfig
from spusim.device.spu import EmulatedSPU
from spusim.protocol import ErrorCode, ProtocolError, decode_reply
from spusim.training import curvature
from spusim.training.data import batches, load_digits
from spusim.training.linearization import Linearization, ParameterSet
from spusim.training.losses import Loss
from spusim.training.models import mlp
from spusim.training.tngd import ThermodynamicNGD
from tests.conftest import ServedDevice


@pytest.fixture
def pair() -> Iterator[tuple[Device, Device]]:
    """Two identical noisy daemons; the second is driven one op per request."""
    served = [ServedDevice(kappa0=0.01, cells=512, seed=3) for _ in range(2)]
    devices = [Device.connect(s.endpoint) for s in served]
    devices[1].supports = lambda op: False  # type: ignore[method-assign]
    for device in devices:  # no liveness pings during a slow call: requests are counted
        device._transport.heartbeat_s = 60.0
    yield devices[0], devices[1]
    for device, s in zip(devices, served):
        device.close()
        s.stop()


@pytest.mark.parametrize("integrator, readout, warm_start, delay", [
    ("exact", "final", True, 0.3), ("euler_maruyama", "average", False, 0.0),
    ("exact", "average", True, 0.0), ("euler_maruyama", "final", True, 0.2)])
def test_fused_step_is_the_separate_ops(pair, integrator, readout, warm_start, delay) -> None:
    fused, separate = pair
    data = load_digits()
    stream = batches(data.train, 8, seed=1)
    model = mlp(64, 10, (4,), seed=2)
    params, loss = ParameterSet(model), Loss("cross_entropy")
    solvers = [ThermodynamicNGD(device, damping=0.5, t=1.5, delay=delay, readout=readout,
                                warm_start=warm_start, integrator=integrator, seed=11)
               for device in pair]
    for step in range(3):
        lin = Linearization(model, params, *next(stream), loss)
        factors = curvature.factors(lin, "ggn")
        sent = fused.requests_sent
        results = [solver.solve(factors, lin.grad, step) for solver in solvers]
        assert fused.requests_sent - sent == 1
        (x_fused, report_fused), (x_separate, report_separate) = results
        np.testing.assert_array_equal(x_fused, x_separate)
        assert report_fused == report_separate
        assert report_fused.analog_ns == fused.duration_ns(1.5)
        assert report_fused.delay_ns == (fused.duration_ns(delay) if step and delay else 0)
    assert fused.sim_time_ns == separate.sim_time_ns
    assert fused.phase_ns == separate.phase_ns
    assert fused.timeline == separate.timeline


def test_bad_bias_changes_nothing(pair) -> None:
    fused, _ = pair
    J, H = np.ones((2, 5)), np.eye(2)
    before = fused.status()
    with pytest.raises(Exception, match="BAD_SHAPE|shape"):
        fused.solve_factored(J, H, 0.5, np.ones(4), record_ns=100)
    after = fused.status()
    assert after["programmed"] is False and after["sim_time_ns"] == before["sim_time_ns"]


def test_a_failing_run_names_the_steps_done(pair) -> None:
    """H indefinite enough that J^T H J + lambda I is not positive definite: the first run
    refuses, after the programming and the bias took effect (as separate ops would)."""
    fused, _ = pair
    J = np.eye(2, 5)
    with pytest.raises(Exception) as caught:
        fused.solve_factored(J, -np.eye(2), 0.5, np.ones(5), record_ns=100, integrator="exact")
    assert caught.value.code == "NOT_POSITIVE_DEFINITE"
    assert caught.value.details["completed"] == ["program_factored", "set_bias"]
    assert fused.status()["programmed"]


def test_runs_longer_than_the_daemons_longest_are_refused_before_queueing() -> None:
    """delay + burn-in + recording together count against the daemon's max_run_ns."""
    served = ServedDevice(server_options={"max_run_ns": 10_000}, cells=16)
    try:
        with Device.connect(served.endpoint) as device:
            J, H, b = np.ones((1, 4)), np.eye(1), np.ones(4)
            with pytest.raises(Exception) as caught:
                device.solve_factored(J, H, 0.5, b, burn_ns=6_000, record_ns=6_000)
            assert caught.value.code == "BAD_ARGUMENT" and "longest run" in str(caught.value)
            assert device.status()["programmed"] is False
            assert device.solve_factored(J, H, 0.5, b, burn_ns=4_000,
                                         record_ns=6_000).readout.samples == 60
    finally:
        served.stop()


def test_a_cancelled_solve_reports_the_analog_time_of_all_its_runs() -> None:
    """A solve stopped between chunks of its recorded run (after a delay and a burn-in):
    completed_ns is the analog time of all three runs so far, which is the clock's advance
    less the two uploads' closed-form price (16 bits a value over 50 Gb/s, rounded up:
    program_factored's m (m + 2N) values and set_bias's N), and more than delay + burn-in."""
    m, n, delay_ns, burn_ns, record_ns = 4, 64, 2_000, 3_000, 4_000_000  # chunks of 8192
    spu = EmulatedSPU(DeviceConfig(kappa0=0.01, cells=n))
    rng = np.random.default_rng(0)
    J, H = rng.standard_normal((m, n)) / 8, np.eye(m)
    spu.program_factored(J, H, 1.0)  # the delay runs under it
    start = spu.clock.now_ns

    class AfterTheBurnIn:  # set at the first chunk boundary 10 us into the recorded run
        def is_set(self) -> bool:
            return spu.clock.now_ns > start + delay_ns + burn_ns + 10_000

    with pytest.raises(ProtocolError) as stopped:
        spu.solve_factored(J, H, np.ones(n), 1.0, record_ns, integrator="exact",
                           delay_ns=delay_ns, burn_ns=burn_ns, cancel=AfterTheBurnIn())
    assert stopped.value.code == ErrorCode.CANCELLED
    details = stopped.value.details
    assert details["completed"] == ["run", "program_factored", "set_bias", "run"]
    uploads_ns = math.ceil(m * (m + 2 * n) * 16 / 50) + math.ceil(n * 16 / 50)
    assert details["completed_ns"] == spu.clock.now_ns - start - uploads_ns
    assert delay_ns + burn_ns < details["completed_ns"] < delay_ns + burn_ns + record_ns


def test_a_cancelled_solve_names_the_steps_it_did() -> None:
    """A cancel while the recorded run executes: CANCELLED, how far it got (its burn-in and
    part of the recorded run: the daemon's clock, which started at 0, less the uploads), and
    the steps done before it (which took effect, as separate ops would have)."""
    from tests.test_attacks import LONG_RUN_NS, call, dealer, receive, send

    BURN_NS = 10_000  # noqa: N806

    served = ServedDevice(kappa0=0.01, cells=64)
    socket = dealer(served.context, served.endpoint)
    try:
        J, H = np.random.default_rng(0).standard_normal((4, 64)) / 8, np.eye(4)
        send(socket, 1, "solve_factored", "fused", {
            "damping": 1.0, "integrator": "euler_maruyama", "burn_ns": BURN_NS,
            "record_ns": LONG_RUN_NS},
            arrays={"J": J, "H": H, "b": np.ones(64)})
        deadline = time.monotonic() + 10
        while served.server.status()["busy_with"] != "solve_factored":
            assert time.monotonic() < deadline, "the solve never started"
            time.sleep(0.01)
        time.sleep(0.2)  # into the run
        assert call(socket, 2, "cancel", "fused", {"request": 1}).result == {"request": "running"}
        reply = decode_reply(receive(socket, 5))
        assert reply.error is not None and reply.error["code"] == ErrorCode.CANCELLED
        details = reply.error["details"]
        assert details["completed"] == ["program_factored", "set_bias", "run"]
        uploads_ns = math.ceil(4 * (4 + 2 * 64) * 16 / 50) + math.ceil(64 * 16 / 50)
        assert details["completed_ns"] == reply.device["sim_time_ns"] - uploads_ns > BURN_NS
        assert details["completed_ns"] < BURN_NS + LONG_RUN_NS
    finally:
        socket.close(linger=0)
        served.stop()
