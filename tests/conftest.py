"""Shared fixtures: an in-process daemon (server thread on loopback) and a client for it.

Tests of the daemon as a subprocess use the project's own pytest plugin (host/hil/plugin.py:
spu_daemon, spu_device, the spu_config marker), loaded through its pytest11 entry point.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from spusim.device import kernels
from spusim.device.config import DeviceConfig
from spusim.device.server import DeviceServer
from spusim import Device

pytest_plugins = ["pytester"]  # to run inner pytest sessions that use the spusim plugin


class ServedDevice:
    """A :class:`DeviceServer` answering on loopback from a thread of the test process.

    ``server_options`` go to the server (faults, test_mode, curve); ``config`` to DeviceConfig.
    """

    def __init__(self, bind: str = "tcp://127.0.0.1:0",
                 server_options: dict[str, Any] | None = None, **config: object) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.server = DeviceServer(DeviceConfig(**config), bind,  # type: ignore[arg-type]
                                   seconds_per_cell_step=1e-9, context=self.context,
                                   **(server_options or {}))
        self.endpoint = self.server.endpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.server.serve, args=(self._stop,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the server did not stop"
        self.context.term()


@pytest.fixture(scope="session", autouse=True)
def warm_kernels() -> None:
    kernels.warm_up()


@pytest.fixture
def served() -> Iterator[ServedDevice]:
    served = ServedDevice(kappa0=0.01, cells=64)
    yield served
    served.stop()


@pytest.fixture
def device(served: ServedDevice) -> Iterator[Device]:
    with Device.connect(served.endpoint, timeout=10.0) as device:
        yield device
