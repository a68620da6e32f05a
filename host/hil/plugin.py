"""pytest plugin of spusim: SPU daemons for hardware-in-the-loop tests (docs/hil.md).

Installed with the package (entry point ``pytest11``), so any test suite in an environment where
spusim is installed can use:

Fixtures
    ``spu_device``  a :class:`~spusim.Device` connected to ``spu_daemon`` and reset (nothing
        programmed, start-up faults restored) before the test; closed after it.
    ``spu_daemon``  the test's daemon (:class:`SpuDaemon`): a subprocess on a free loopback port,
        started once per distinct configuration and kept for the session, stopped cleanly at
        its end, restarted if a test killed it. ``spu_daemon.connect()`` gives more clients.
    ``spu_daemon_pool``  (session) the :class:`DaemonPool` behind ``spu_daemon``.
    ``spu_chips``  ``spu_chips(k)``: k devices on k distinct daemons of the test's options
        (chip i's daemon seeded seed + i), each reset like ``spu_device``: several chips for
        one multi-chip optimizer (docs/scaling.md).

Marker
    ``@pytest.mark.spu_config(**options)``  daemon options by flag name (``cells=64``,
    ``test_mode=True``, ``fault_drop_reply="0.1"``, ...; ``curve=True`` generates CURVE keys and
    connects with them; ``config="chip.toml"``: a configuration file). A marker closer to the
    test overrides one further out. Names are spelled in full: a misspelt or abbreviated one
    (``kappa=0.5``) keeps the daemon from starting, and the test errors with the daemon's log.

Options
    ``--spu-connect ENDPOINT[,ENDPOINT...]``  run against running daemons (or a real device's
    gateway) instead of starting them: the first for ``spu_device``, chip i of ``spu_chips``
    on the i-th (tests that need more are skipped); tests with an ``spu_config`` marker are
    then skipped.
    ``--spu-option KEY=VALUE``  default daemon option for every test (repeatable).
    ``--spu-start-timeout S``, ``--spu-timeout S``.

When a test fails, the lines its daemon logged during the test are attached to the report
(section "spu daemon log").
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spusim.driver.client import Device
from spusim.driver.daemon import DaemonProcess
from spusim.driver.errors import DeviceError, DeviceRestarted

MARKER = "spu_config"
_LOG_LINES = 200  # at most this many daemon log lines are attached to a failure
_LOG = pytest.StashKey[tuple["SpuDaemon", Path | None, int]]()
log = logging.getLogger("spusim.pytest")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spusim", "SPU device daemons (spusim hardware-in-the-loop)")
    group.addoption("--spu-connect", metavar="ENDPOINT[,ENDPOINT...]", default=None,
                    help="use the daemon at ENDPOINT instead of starting one per configuration "
                         "(tests marked spu_config are skipped); several, comma-separated, for "
                         "the chips of spu_chips")
    group.addoption("--spu-option", action="append", default=[], metavar="KEY=VALUE",
                    help="daemon option for every test, by flag name (e.g. cells=64); repeatable")
    group.addoption("--spu-start-timeout", type=float, default=120.0, metavar="S",
                    help="seconds a daemon may take to print READY (cold numba cache)")
    group.addoption("--spu-timeout", type=float, default=10.0, metavar="S",
                    help="base timeout of a call of the spu_device client")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(**options): options of this test's SPU daemon, by flag name "
                   "(cells=64, test_mode=True, fault_drop_reply='0.1', curve=True, ...); one "
                   "daemon per distinct set of options, kept for the session")


class SpuDaemon:
    """A daemon for tests: its endpoint and options, and clients connected to it.

    ``process`` is None for a daemon the plugin did not start (``--spu-connect``).
    """

    def __init__(self, endpoint: str, process: DaemonProcess | None, options: dict[str, Any],
                 curve_keys: dict[str, Path] | None = None, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.process = process
        self.options = options
        self.curve_keys = curve_keys or {}  # connect()'s curve_server_key, curve_client_key
        self.timeout = timeout
        self.startup_faults: dict[str, Any] | None = None  # as the daemon reported at start
        self._clients: list[Device] = []

    def connect(self, **kwargs: Any) -> Device:
        """A new client (its own session), closed after the test (its lease released)."""
        options = {"timeout": self.timeout, **self.curve_keys, **kwargs}
        device = Device.connect(self.endpoint, **options)
        self._clients.append(device)
        return device

    @property
    def running(self) -> bool:
        return self.process is None or self.process.running

    def restart(self, start_timeout: float = 120.0) -> None:
        """Stop the daemon (if alive) and start it again on the same endpoint: a new boot."""
        if self.process is None:
            raise RuntimeError("cannot restart a daemon this plugin did not start")
        self.process.restart(start_timeout)

    def log_since(self, path: Path | None, offset: int) -> str:
        """The last lines logged to ``path`` after byte ``offset``."""
        if path is None:
            return ""
        try:
            with path.open("rb") as file:
                file.seek(offset)
                text = file.read().decode(errors="replace")
        except OSError:
            return "(the daemon's log is gone)"
        return "\n".join(text.splitlines()[-_LOG_LINES:])

    def log_position(self) -> tuple[Path | None, int]:
        if self.process is None:
            return None, 0
        path = self.process.log_path
        return path, path.stat().st_size if path.exists() else 0

    def close_clients(self) -> None:
        """Release what the test's clients leased and close them."""
        for device in self._clients:
            with contextlib.suppress(DeviceError):
                if self.running:
                    device.release()
            device.close()
        self._clients.clear()


class DaemonPool:
    """The session's daemons, one per distinct set of options and chip index."""

    def __init__(self, config: pytest.Config, key_dir: Path) -> None:
        self._defaults = _parse_options(config.getoption("spu_option"))
        self._connect = config.getoption("spu_connect")
        self._start_timeout = config.getoption("spu_start_timeout")
        self._timeout = config.getoption("spu_timeout")
        self._key_dir = key_dir
        self._daemons: dict[tuple[tuple[str, str], ...], SpuDaemon] = {}

    def get(self, options: dict[str, Any], chip: int = 0) -> SpuDaemon:
        """The running daemon for ``options`` (merged over the --spu-option defaults); chip
        i > 0: a distinct daemon of the same options (its seed, if any, plus i)."""
        if self._connect is not None:
            if options:
                pytest.skip(f"needs its own daemon ({MARKER}{options}); --spu-connect is set")
            endpoints = self._connect.split(",")
            if chip >= len(endpoints):
                pytest.skip(f"needs {chip + 1} daemons; --spu-connect gives {len(endpoints)}")
            return self._daemons.setdefault(((str(chip), ""),), SpuDaemon(
                endpoints[chip].strip(), None, {}, timeout=self._timeout))
        merged = {**self._defaults, **options}
        if chip and "seed" in merged:
            merged["seed"] = int(merged["seed"]) + chip
        key = (*sorted((name, repr(value)) for name, value in merged.items()), (str(chip), ""))
        daemon = self._daemons.get(key)
        if daemon is not None and not daemon.running:
            log.warning("the spu daemon %s died (exit code %s): restarting it", daemon.endpoint,
                        daemon.process.process.returncode if daemon.process else None)
            daemon.restart(self._start_timeout)
            daemon.startup_faults = None
        if daemon is None:
            daemon = self._daemons[key] = self._start(merged)
        return daemon

    def _start(self, options: dict[str, Any]) -> SpuDaemon:
        options = dict(options)
        curve_keys = None
        if options.pop("curve", False):
            curve_keys = self._curve_keys()
            options.update(curve_secret_key_file=self._key_dir / "server.key_secret",
                           curve_public_keys_dir=self._key_dir / "clients")
        process = DaemonProcess.start(start_timeout=self._start_timeout, **options)
        return SpuDaemon(process.endpoint, process, options, curve_keys, self._timeout)

    def _curve_keys(self) -> dict[str, Path]:
        """A server certificate and one admitted client certificate (made once a session)."""
        import zmq.auth

        clients = self._key_dir / "clients"
        if not clients.exists():
            _, server_secret = zmq.auth.create_certificates(self._key_dir, "server")
            clients.mkdir()
            _, client_secret = zmq.auth.create_certificates(clients, "client")
            for secret in (server_secret, client_secret):  # the daemon refuses readable ones
                os.chmod(secret, 0o600)
        return {"curve_server_key": self._key_dir / "server.key",
                "curve_client_key": clients / "client.key_secret"}

    def close(self) -> None:
        """Stop every daemon started (SIGTERM, then SIGKILL after 5 s)."""
        for daemon in self._daemons.values():
            if daemon.process is not None:
                code = daemon.process.stop()
                if code != 0:
                    log.warning("the spu daemon %s exited with code %s; log kept at %s",
                                daemon.endpoint, code, daemon.process.log_path)
        self._daemons.clear()


def _parse_options(items: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise pytest.UsageError(f"--spu-option {item!r}: expected KEY=VALUE")
        options[name.strip().replace("-", "_")] = {"true": True, "false": False}.get(
            value.strip().lower(), value.strip())
    return options


def _marker_options(node: pytest.Item) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for marker in reversed(list(node.iter_markers(MARKER))):  # the closest marker wins
        options.update(marker.kwargs)
    return options


@pytest.fixture(scope="session")
def spu_daemon_pool(pytestconfig: pytest.Config,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonPool]:
    pool = DaemonPool(pytestconfig, tmp_path_factory.mktemp("spu-curve-keys"))
    yield pool
    pool.close()


@pytest.fixture
def spu_daemon(spu_daemon_pool: DaemonPool, request: pytest.FixtureRequest) -> Iterator[SpuDaemon]:
    daemon = spu_daemon_pool.get(_marker_options(request.node))
    request.node.stash[_LOG] = (daemon, *daemon.log_position())
    yield daemon
    daemon.close_clients()


@pytest.fixture
def spu_device(spu_daemon: SpuDaemon) -> Device:
    """Connected, with nothing programmed and the daemon's start-up faults in force."""
    return _prepared(spu_daemon)


@pytest.fixture
def spu_chips(spu_daemon_pool: DaemonPool,
              request: pytest.FixtureRequest) -> Iterator[Callable[[int], list[Device]]]:
    """``spu_chips(k)``: k devices, each like ``spu_device``, on k distinct daemons of the
    test's options; closed after the test."""
    options, used = _marker_options(request.node), []

    def chips(k: int) -> list[Device]:
        daemons = [spu_daemon_pool.get(options, chip=i) for i in range(k)]
        used.extend(daemons)
        return [_prepared(daemon) for daemon in daemons]

    yield chips
    for daemon in used:
        daemon.close_clients()


def _prepared(daemon: SpuDaemon) -> Device:
    """A new client of ``daemon``: nothing programmed, the start-up faults in force."""
    device = daemon.connect()
    if device.info.get("test_mode"):
        if daemon.startup_faults is None:
            daemon.startup_faults = device.status()["faults"]["config"]
        device.inject_fault(**daemon.startup_faults)  # undo what an earlier test injected
    for attempt in range(3):  # a start-up reset fault may strike the reset itself
        try:
            device.reset()
            break
        except DeviceRestarted:
            if attempt == 2:
                raise
    return device


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed and _LOG in item.stash:
        daemon, path, offset = item.stash[_LOG]
        text = daemon.log_since(path, offset)
        if text:
            report.sections.append((f"spu daemon log ({daemon.endpoint})", text))
    return report
