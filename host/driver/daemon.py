"""Start and stop a private device daemon as a subprocess (``python -m spusim.device serve``).

The host never imports the device package: it launches it as a separate process, exactly as it
would a real device's driver service, and talks to it over the wire.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spusim.driver.errors import DaemonStartError

READY_PREFIX = "READY "


def daemon_command(bind: str = "tcp://127.0.0.1:0", **config: Any) -> list[str]:
    """The command line of ``python -m spusim.device serve`` with ``config`` as flags.

    ``kappa0=0.1`` becomes ``--kappa0 0.1``; ``allow_remote=True`` becomes ``--allow-remote``;
    a list or tuple repeats the flag (``fault_stuck_cell=["0=1", "3"]``).
    """
    command = [sys.executable, "-m", "spusim.device", "serve", "--bind", bind]
    for key, value in config.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            command.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                command += [flag, str(item)]
        elif value is not False and value is not None:
            command += [flag, str(value)]
    return command


class DaemonProcess:
    """A running daemon subprocess: its endpoint, its log file, and a clean stop."""

    def __init__(self, process: subprocess.Popen[str], endpoint: str, log_path: Path,
                 config: dict[str, Any] | None = None) -> None:
        self.process = process
        self.endpoint = endpoint
        self.log_path = log_path
        self.config = dict(config or {})

    @classmethod
    def start(cls, start_timeout: float = 120.0, **config: Any) -> DaemonProcess:
        """Launch a daemon on a free loopback port (or ``bind=...``); returns once it printed
        ``READY``.

        ``start_timeout`` (s) covers numba compilation on a cold cache. The daemon's stderr goes
        to a log file (``log_path``), deleted after a clean stop. ``config`` may be a
        configuration file's path or a mapping (a ``hello`` reply's ``config``, as run records
        keep it), handed to the daemon as a temporary JSON file.
        """
        options, mapping_file = dict(config), None
        if isinstance(config.get("config"), Mapping):
            options["config"] = mapping_file = _config_file(config["config"])
        log_file = tempfile.NamedTemporaryFile(prefix="spusim-daemon-", suffix=".log",
                                               delete=False)
        log_path = Path(log_file.name)
        # The daemon watches the pipe on its stdin: when this process exits, however it dies,
        # the pipe closes and the daemon shuts down instead of living on as an orphan.
        process = subprocess.Popen(
            [*daemon_command(**options), "--exit-with-stdin"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=log_file, text=True, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log_file.close()
        try:
            endpoint = _await_ready(process, start_timeout)
        except DaemonStartError as error:
            _terminate(process, 5.0)
            error.message += f"\n--- daemon log ({log_path}) ---\n{_tail(log_path)}"
            error.args = (error.message,)
            raise
        finally:
            if mapping_file is not None:
                mapping_file.unlink()  # read before READY (or the daemon is gone)
        return cls(process, endpoint, log_path, config)

    def restart(self, start_timeout: float = 120.0) -> None:
        """Stop this daemon if it still runs, and start a new one with the same options on the
        same endpoint (a new boot id: clients see :class:`~spusim.driver.errors.DeviceRestarted`)."""
        self.stop()
        fresh = DaemonProcess.start(start_timeout, **{**self.config, "bind": self.endpoint})
        self.process, self.log_path = fresh.process, fresh.log_path

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code."""
        code = _terminate(self.process, timeout)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        if code == 0:
            self.log_path.unlink(missing_ok=True)
        return code

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the daemon's log."""
        return _tail(self.log_path, lines)


def _config_file(mapping: Mapping[str, Any]) -> Path:
    """``mapping`` written to a fresh JSON file for the daemon's ``--config``."""
    with tempfile.NamedTemporaryFile("w", prefix="spusim-config-", suffix=".json",
                                     delete=False) as file:
        json.dump(dict(mapping), file)
    return Path(file.name)


def _await_ready(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while (remaining := deadline - time.monotonic()) > 0:
            if not selector.select(remaining):
                continue
            line = process.stdout.readline()
            if line.startswith(READY_PREFIX):
                return line[len(READY_PREFIX):].strip()
            if not line:  # stdout closed: the daemon exited
                code = process.wait()
                raise DaemonStartError("DAEMON_START", f"the daemon exited with code {code} "
                                       "before it was ready")
    raise DaemonStartError("DAEMON_START", f"the daemon was not ready within {timeout:.0f} s")


def _terminate(process: subprocess.Popen[str], timeout: float) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
