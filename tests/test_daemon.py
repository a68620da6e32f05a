"""The daemon as users start it: a subprocess that prints READY, serves, and exits cleanly.

Most tests take their daemon from the project's own pytest plugin (host/hil/plugin.py), as
users' hardware-in-the-loop suites do (docs/hil.md); those about a process's own life (signals,
exit codes, start-up errors) start one themselves.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spusim import Device, DeviceRestarted, DeviceTimeout, MatrixRejected
from spusim import linalg
from spusim.driver.daemon import DaemonProcess
from spusim.hil.plugin import SpuDaemon
from tests.test_server import raw_call

pytestmark = pytest.mark.daemon


@pytest.mark.spu_config(cells=16, kappa0=0.01)  # the configuration test_soak.py uses too
def test_ready_solve_and_bad_input(spu_daemon: SpuDaemon, spu_device: Device) -> None:
    assert spu_daemon.endpoint.startswith("tcp://127.0.0.1:")
    assert not spu_daemon.endpoint.endswith(":0")  # the real port, not the requested 0
    A = np.array([[3.0, 2.0], [2.0, 4.0]])
    result = linalg.solve(spu_device, A, np.array([1.0, 2.0]), seed=1)
    assert np.all(np.abs(result.x - [0.0, 0.5]) < 6.5 * result.standard_error)
    with pytest.raises(MatrixRejected):
        spu_device.program(np.array([[1.0, 2.0], [0.0, 1.0]]))
    garbage = raw_call(spu_daemon.endpoint, [b"not msgpack \xc1"])
    assert garbage is not None  # answered
    assert spu_device.status()["programmed"]  # and still serving, state intact


def test_sigterm_stops_the_daemon_at_once_with_status_0() -> None:
    process = DaemonProcess.start()
    with Device.connect(process.endpoint) as device:
        device.program(np.eye(2))
    started = time.monotonic()
    assert process.stop(timeout=5.0) == 0
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


def test_a_spawned_daemon_does_not_outlive_its_parent() -> None:
    """Device.spawn's daemon watches the pipe on its stdin: when the host process is killed
    (SIGKILL: no cleanup runs), the daemon shuts down instead of living on as an orphan."""
    script = ("import time\nfrom spusim.driver.daemon import DaemonProcess\n"
              "print(DaemonProcess.start().process.pid, flush=True)\ntime.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    daemon_pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running(daemon_pid):
        time.sleep(0.05)
    assert not _running(daemon_pid), "the daemon outlived its parent"


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan's zombie may wait for a
    reaper that a container's init does not run)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


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


@pytest.mark.parametrize(("flags", "needs"), [([], "--allow-remote"),
                                              (["--allow-remote"], "--curve-secret-key-file")])
def test_refuses_a_non_loopback_bind_without_the_flag_and_curve(flags: list[str],
                                                                needs: str) -> None:
    result = subprocess.run([sys.executable, "-m", "spusim.device", "serve", "--bind",
                             "tcp://0.0.0.0:0", *flags], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert needs in result.stderr and result.stdout == ""


@pytest.mark.spu_config(cells=8, curve=True)
def test_a_curve_daemon_serves_clients_with_keys_only(spu_daemon: SpuDaemon,
                                                      spu_device: Device) -> None:
    assert spu_device.info["security"] == "curve"
    spu_device.program(np.eye(2))
    with pytest.raises(DeviceTimeout):  # no keys: the handshake fails, nothing is answered
        Device.connect(spu_daemon.endpoint, timeout=0.5, retries=0)
    assert spu_device.status()["programmed"]


@pytest.mark.spu_config(cells=16, fault_crash_run="1:1", fault_seed=1)
def test_a_crash_in_the_middle_of_a_run_times_out_and_the_restart_is_reported(
        spu_daemon: SpuDaemon) -> None:
    assert spu_daemon.process is not None
    device = spu_daemon.connect(timeout=0.5, retries=1)
    device.program(np.eye(2))
    with pytest.raises(DeviceTimeout) as lost:  # the client waits, retries, and gives up
        device.run(device.duration_ns(1000.0))
    assert lost.value.details["attempts"] == 2
    assert spu_daemon.process.process.wait(timeout=5) == 70  # CRASH_EXIT_CODE
    assert "crashes 500000 ns into a 1000000 ns run" in spu_daemon.process.log_tail()
    spu_daemon.restart()  # as a supervisor would (same endpoint)
    with pytest.raises(DeviceRestarted):
        device.status()
    assert device.status()["programmed"] is False  # the state died with the process


def test_spawn_reports_a_daemon_that_cannot_start() -> None:
    from spusim import DaemonStartError

    with pytest.raises(DaemonStartError, match="kappa0"):
        Device.spawn(kappa0=-1.0)


def test_demo_solves_accurately() -> None:
    result = subprocess.run([str(Path(sys.executable).with_name("spu")), "demo", "--solve",
                             "--n", "8", "--t-sample", "400"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    match = re.search(r"relative error .*\s(\S+)\s+\(estimated from the samples: (\S+)\)",
                      result.stdout)
    assert match, result.stdout
    actual, estimated = float(match[1]), float(match[2])
    assert actual < 4 * estimated < 0.05  # accurate, and the error estimate is honest
    assert "simulated device time" in result.stdout
