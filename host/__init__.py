"""Host side of spusim: the client of an SPU daemon, and thermodynamic linear algebra on it.

    from host import Device, linalg
    with Device.spawn() as device:
        result = linalg.solve(device, A, b)

Imports only protocol/ and timing/; it reaches the device over the wire, never by import.
"""

from host import linalg
from host.client import Device, Readout
from host.errors import (
    DaemonStartError,
    DeviceBusy,
    DeviceError,
    DeviceInternalError,
    DeviceLeased,
    DeviceRestarted,
    DeviceStateError,
    DeviceTimeout,
    InvalidRequest,
    LeaseExpired,
    MatrixRejected,
    ReplyLost,
)

__all__ = [
    "DaemonStartError", "Device", "DeviceBusy", "DeviceError", "DeviceInternalError",
    "DeviceLeased", "DeviceRestarted", "DeviceStateError", "DeviceTimeout", "InvalidRequest",
    "LeaseExpired", "MatrixRejected", "Readout", "ReplyLost", "linalg",
]
