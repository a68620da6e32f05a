"""spusim: an emulated thermodynamic co-processor (SPU) and the host software that drives it.

    from spusim import Device, linalg
    with Device.spawn() as device:
        result = linalg.solve(device, A, b)

    from spusim import TNGD                     # needs the torch extra
    with Device.spawn(kappa0=1e-3) as device:
        opt = TNGD(model, device=device, loss="cross_entropy", lr=0.01, damping=0.01, t=50.0)
        for x, y in loader:
            loss = opt.step(x, y)

The installed package maps the repository's folders under one import root:

    spusim            host/       the flat public API (this file)
    spusim.driver     host/driver/    the client of a daemon: Device, transport, errors
    spusim.linalg     host/linalg/    thermodynamic linear algebra on a Device
    spusim.training   host/training/  models, optimizers, TNGD and the training loop
    spusim.cli        host/cli/       the ``spu`` command line
    spusim.hil        host/hil/       the pytest plugin for hardware-in-the-loop tests
    spusim.device     device/         the daemon (reached over the wire, never imported by the host)
    spusim.protocol   protocol/       the wire protocol, the bottom layer
    spusim.timing     timing/         the simulated clock, a pure leaf

The names below load on first use (PEP 562), so that ``import spusim.device`` in the daemon
process loads none of the host.
"""

from __future__ import annotations

import importlib
from typing import Any

_ERRORS = (
    "Cancelled", "DaemonStartError", "DeviceBusy", "DeviceError", "DeviceInternalError",
    "DeviceLeased", "DeviceRestarted", "DeviceStateError", "DeviceTimeout", "InvalidRequest",
    "LeaseExpired", "MatrixRejected", "ReplyLost",
)
_EXPORTS: dict[str, str] = {
    "Device": "spusim.driver.client",
    "Readout": "spusim.driver.client",
    "TNGD": "spusim.training.tngd",
    **{name: "spusim.driver.errors" for name in _ERRORS},
}
_SUBMODULES = ("linalg",)

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"spusim.{name}")
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'spusim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
