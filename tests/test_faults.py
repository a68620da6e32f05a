"""Injected faults (device/faults.py) and the client's answer to each, over a loopback socket.

The daemon runs in a thread of the test process in test mode; faults are switched on through
the protocol (``inject_fault``). The crash of a daemon process is in test_daemon.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from spusim.device.cli import build_parser, fault_config
from spusim.device.faults import FaultConfig, FaultInjector, Trigger
from spusim import Device, DeviceBusy, DeviceInternalError, DeviceRestarted, InvalidRequest
from spusim.protocol import FAULT_TRIGGERS, OPS, ErrorCode
from tests.conftest import ServedDevice

A3 = np.array([[2.0, 0.5, 0.0], [0.5, 1.5, 0.3], [0.0, 0.3, 1.0]])
B3 = np.array([1.0, -0.5, 0.8])
RUN_NS = 20_000  # 200 ADC samples


@pytest.fixture
def faulty() -> Iterator[ServedDevice]:
    served = ServedDevice(server_options={"test_mode": True}, kappa0=0.01, cells=16)
    yield served
    served.stop()


def connect(served: ServedDevice, timeout: float = 0.3) -> Device:
    return Device.connect(served.endpoint, timeout=timeout, retries=2)


def sample(device: Device, second_moments: bool = False, **run: object) -> tuple[np.ndarray, ...]:
    """A deterministic experiment: program, bias, a seeded run from x = 0, read."""
    device.program(A3, reset_state=True)
    device.set_bias(B3)
    device.run(RUN_NS, seed=3, clear=True, second_moments=second_moments, **run)  # type: ignore[arg-type]
    readout = device.read(second_moments=second_moments)
    return (readout.mean,) if not second_moments else (readout.mean, readout.second_moment)


def reference(second_moments: bool = False) -> tuple[np.ndarray, ...]:
    """The experiment on a fault-free daemon of the same configuration."""
    served = ServedDevice(kappa0=0.01, cells=16)
    try:
        with connect(served, timeout=5.0) as device:
            return sample(device, second_moments)
    finally:
        served.stop()


def test_a_dropped_run_reply_is_retried_and_the_run_executes_once(faulty: ServedDevice) -> None:
    with connect(faulty) as device:
        assert device.deduplicates
        device.program(A3, reset_state=True)
        device.set_bias(B3)
        before = device.status()["sim_time_ns"]
        device.inject_fault(drop_reply=(1.0, 1))
        started = time.monotonic()
        assert device.run(RUN_NS, seed=3, clear=True)["samples"] == 200
        # The first heartbeat (after half the 0.3 s timeout) learns the request is done, so
        # the lost reply is asked for again at once rather than after the whole timeout.
        assert 0.15 <= time.monotonic() - started < 0.3
        status = device.status()
        assert status["sim_time_ns"] == before + RUN_NS  # executed once, not twice
        assert status["faults"]["injected"]["drop_reply"] == 1
        assert status["counters"]["cache_hits"] == 1
        np.testing.assert_array_equal(device.read().mean, reference()[0])  # noise advanced once


def test_a_delayed_reply_is_awaited_or_answered_again_from_the_cache(faulty: ServedDevice) -> None:
    with connect(faulty, timeout=0.5) as device:
        device.inject_fault(delay_reply=(1.0, 1), delay_ms=150)
        started = time.monotonic()
        device.ping()
        assert 0.15 <= time.monotonic() - started < 0.5  # shorter than the timeout: awaited
        device.program(A3, reset_state=True)
        device.set_bias(B3)
        before = device.sim_time_ns
        device.inject_fault(delay_reply=(1.0, 1), delay_ms=800)  # longer than the timeout
        device.run(RUN_NS, seed=3, clear=True)
        status = device.status()
        assert status["sim_time_ns"] == before + RUN_NS
        assert status["counters"]["cache_hits"] == 1
        np.testing.assert_array_equal(device.read().mean, reference()[0])
        time.sleep(0.5)  # the late original reply reaches the abandoned socket, not this one
        assert device.status()["programmed"]


def test_busy_is_retried_after_a_back_off_and_a_refused_op_never_executes(
        faulty: ServedDevice) -> None:
    with connect(faulty) as device:
        device.program(A3, reset_state=True)
        before = device.sim_time_ns
        device.inject_fault(busy=(1.0, 2))  # the client makes 1 + retries = 3 attempts
        assert device.run(RUN_NS)["samples"] == 200
        status = device.status()
        assert status["faults"]["injected"]["busy"] == 2
        assert status["sim_time_ns"] == before + RUN_NS
        device.inject_fault(busy=1.0)
        with pytest.raises(DeviceBusy) as busy:
            device.run(RUN_NS)
        assert busy.value.code == ErrorCode.BUSY
        assert device.status()["sim_time_ns"] == before + RUN_NS  # not executed
        assert device.status()["faults"]["injected"]["busy"] == 3  # 3 attempts, all refused


def test_a_device_reset_is_reported_as_a_typed_error_never_hidden(faulty: ServedDevice) -> None:
    with connect(faulty) as device:
        device.program(A3, reset_state=True)
        device.run(RUN_NS)
        old_boot, old_clock = device.boot_id, device.sim_time_ns
        device.inject_fault(reset=(1.0, 1))
        with pytest.raises(DeviceRestarted) as restarted:
            device.set_bias(B3)  # the device reset just before this op: NOT_PROGRAMMED now
        assert restarted.value.details["boot_id"] == device.boot_id != old_boot
        status = device.status()  # no second error: the client adopted the new boot id
        assert not status["programmed"] and status["sim_time_ns"] < old_clock
        assert status["faults"]["injected"]["reset"] == 1
        np.testing.assert_array_equal(sample(device)[0], reference()[0])  # programmable again


def test_readout_faults_change_what_read_returns(faulty: ServedDevice) -> None:
    mean, moment = reference(second_moments=True)
    with connect(faulty) as device:
        device.inject_fault(stuck_cells={1: 0.5, 7: 1.0})  # cell 7 is beyond N = 3: ignored
        stuck_mean, stuck_moment = sample(device, second_moments=True)
        expected = mean.copy()
        expected[1] = 0.5
        np.testing.assert_array_equal(stuck_mean, expected)
        np.testing.assert_array_equal(stuck_moment[1], 0.5 * expected)
        np.testing.assert_array_equal(stuck_moment[:, 1], 0.5 * expected)
        np.testing.assert_array_equal(stuck_moment[[0, 2]][:, [0, 2]], moment[[0, 2]][:, [0, 2]])

        rail = 0.5 * float(np.max(np.abs(mean)))
        device.inject_fault(rail=rail)
        railed_mean, railed_moment = sample(device, second_moments=True)
        np.testing.assert_array_equal(railed_mean, np.clip(mean, -rail, rail))
        np.testing.assert_array_equal(railed_moment, np.clip(moment, -rail**2, rail**2))
        assert np.any(railed_mean != mean)

        device.inject_fault(adc_glitch=(1.0, 1), glitch_size=7.0)
        glitched = sample(device)[0]
        assert np.count_nonzero(glitched != mean) == 1
        assert abs(np.sum(glitched - mean)) == pytest.approx(7.0)
        np.testing.assert_array_equal(sample(device)[0], mean)  # count 1: the next read is clean
        assert device.status()["faults"]["injected"]["adc_glitch"] == 1


def test_inject_fault_is_refused_unless_the_daemon_runs_in_test_mode(device: Device) -> None:
    assert device.info["test_mode"] is False
    with pytest.raises(InvalidRequest) as refused:
        device.inject_fault(drop_reply=1.0)
    assert refused.value.code == ErrorCode.FORBIDDEN
    assert device.status()["faults"]["active"] is False


def test_injected_faults_are_reproducible_from_their_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        injector = FaultInjector(FaultConfig(seed=seed, drop_reply=Trigger(0.5)))
        return [injector.fires("drop_reply") for _ in range(64)]

    assert pattern(1) == pattern(1) != pattern(2)
    assert 10 < sum(pattern(1)) < 54
    limited = FaultInjector(FaultConfig(busy=Trigger(1.0, count=3)))
    assert [limited.fires("busy") for _ in range(5)] == [True] * 3 + [False] * 2
    assert not limited.fires("drop_reply")  # switched off


def test_the_fault_configuration_round_trips_through_inject_fault_arguments() -> None:
    config = FaultConfig(seed=5, drop_reply=Trigger(0.25), crash_run=Trigger(1.0, 2),
                         delay_ms=12.5, glitch_size=-3.0, stuck_cells=((2, 0.5),), rail=1.5)
    args = OPS["inject_fault"].validate(config.describe(), {})
    assert FaultConfig.from_wire(args) == config
    assert FaultConfig.from_wire(OPS["inject_fault"].validate({}, {})) == FaultConfig()
    assert not FaultConfig().active and config.active
    assert set(FAULT_TRIGGERS) <= set(config.describe())
    with pytest.raises(ValueError):
        Trigger(1.5)
    with pytest.raises(ValueError):
        Trigger(0.5, count=0)


def test_a_daemon_bug_in_a_device_op_is_answered_and_the_worker_lives_on(
        served: ServedDevice, device: Device) -> None:
    dispatch = served.server._dispatch
    served.server._dispatch = lambda *args: ({"unencodable": object()}, {})  # type: ignore
    with pytest.raises(DeviceInternalError) as internal:
        device.program(A3)
    assert internal.value.code == ErrorCode.INTERNAL
    served.server._dispatch = dispatch  # type: ignore[method-assign]
    device.program(A3)  # the worker still executes device ops
    assert device.status()["programmed"]


def test_the_command_line_configures_faults() -> None:
    args = build_parser().parse_args([
        "serve", "--fault-seed", "4", "--fault-drop-reply", "0.25", "--fault-busy", "1:3",
        "--fault-delay-ms", "20", "--fault-stuck-cell", "2=0.5", "--fault-stuck-cell", "5",
        "--fault-rail", "1.5", "--fault-glitch-size", "3", "--test-mode"])
    assert args.test_mode
    assert fault_config(args) == FaultConfig(
        seed=4, drop_reply=Trigger(0.25), busy=Trigger(1.0, 3), delay_ms=20.0, glitch_size=3.0,
        stuck_cells=((2, 0.5), (5, 0.0)), rail=1.5)
    assert fault_config(build_parser().parse_args(["serve"])) == FaultConfig()
    for bad in (["--fault-drop-reply", "2"], ["--fault-busy", "0.5:0"],
                ["--fault-reset", "x"], ["--fault-stuck-cell", "a=1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["serve", *bad])
