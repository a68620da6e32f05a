"""The daemon as users start it: a subprocess that prints READY, serves, and exits cleanly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from host import Device, MatrixRejected, linalg
from host.daemon import DaemonProcess
from tests.test_server import raw_call

pytestmark = pytest.mark.daemon


def test_ready_solve_bad_input_and_sigterm() -> None:
    process = DaemonProcess.start(kappa0=0.01, seed=3)
    assert process.endpoint.startswith("tcp://127.0.0.1:")
    assert not process.endpoint.endswith(":0")  # the real port, not the requested 0
    try:
        with Device.connect(process.endpoint) as device:
            A = np.array([[3.0, 2.0], [2.0, 4.0]])
            result = linalg.solve(device, A, np.array([1.0, 2.0]), seed=1)
            assert np.all(np.abs(result.x - [0.0, 0.5]) < 6.5 * result.standard_error)
            with pytest.raises(MatrixRejected):
                device.program(np.array([[1.0, 2.0], [0.0, 1.0]]))
            garbage = raw_call(process.endpoint, [b"not msgpack \xc1"])
            assert garbage is not None  # answered
            assert device.status()["programmed"]  # and still serving, state intact
    finally:
        started = time.monotonic()
        code = process.stop(timeout=5.0)
    assert code == 0
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("how", ["SIGINT", "shutdown"])
def test_sigint_and_shutdown_request_exit_zero(how: str) -> None:
    process = DaemonProcess.start()
    if how == "SIGINT":
        process.process.send_signal(signal.SIGINT)
    else:
        with Device.connect(process.endpoint) as device:
            device.shutdown()
    assert process.process.wait(timeout=5) == 0
    process.stop()


def test_spu_serve_is_the_daemon() -> None:
    spu = Path(sys.executable).with_name("spu")
    process = subprocess.Popen([str(spu), "serve", "--bind", "tcp://127.0.0.1:0"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("READY tcp://127.0.0.1:")
        with Device.connect(line.split()[1]) as device:
            assert device.info["implementation"] == "spusim"
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0


def test_refuses_a_non_loopback_bind_without_the_flag() -> None:
    result = subprocess.run([sys.executable, "-m", "device", "serve", "--bind",
                             "tcp://0.0.0.0:0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr and result.stdout == ""


def test_spawn_reports_a_daemon_that_cannot_start() -> None:
    from host import DaemonStartError

    with pytest.raises(DaemonStartError, match="kappa0"):
        Device.spawn(kappa0=-1.0)


def test_demo_solves_accurately() -> None:
    result = subprocess.run([str(Path(sys.executable).with_name("spu")), "demo", "--n", "8",
                             "--t-sample", "400"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    match = re.search(r"relative error .*\s(\S+)\s+\(estimated from the samples: (\S+)\)",
                      result.stdout)
    assert match, result.stdout
    actual, estimated = float(match[1]), float(match[2])
    assert actual < 4 * estimated < 0.05  # accurate, and the error estimate is honest
    assert "simulated device time" in result.stdout
