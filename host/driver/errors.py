"""Typed exceptions of the host library.

Every error reply of the daemon becomes a :class:`DeviceError` subclass chosen by its code, so a
caller can catch a family (``except MatrixRejected``) or test the exact ``error.code``.
"""

from __future__ import annotations

from typing import Any

from spusim.protocol import ErrorCode


class DeviceError(Exception):
    """A failed device call. ``code`` is the protocol's error code; ``details`` its context."""

    def __init__(self, code: ErrorCode | str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.details = details or {}


class InvalidRequest(DeviceError):
    """The daemon could not accept the request as sent (format, version, op, arguments)."""


class MatrixRejected(DeviceError):
    """The device cannot realise the programmed values (size, NaN, symmetry, definiteness)."""


class DeviceStateError(DeviceError):
    """The op does not fit the device's state (nothing programmed, no samples, diverged)."""


class DeviceBusy(DeviceError):
    """The daemon could not take the request now (queue full, shutting down, leased)."""


class DeviceLeased(DeviceBusy):
    """Another session holds the device's lease; ``details["expires_in_s"]`` says how long
    it lasts at most if its holder goes quiet."""


class LeaseExpired(DeviceStateError):
    """This session's lease ran out, so others may have changed the device: acquire it again
    (and re-program) before going on."""


class Cancelled(DeviceError):
    """The op was stopped by a ``cancel`` request (1.2): ``details["completed_ns"]`` says how
    much analog time its runs completed (a run's, or all of a solve_factored's so far; the
    samples are in the averager), the reply's clock where it is."""


class ReplyLost(DeviceError):
    """The daemon executed this request but no longer holds its reply (DUPLICATE_REQUEST):
    the outcome is unknown, and the request was not executed twice."""


class DeviceInternalError(DeviceError):
    """A bug in the daemon; it keeps serving."""


class DeviceTimeout(DeviceError):
    """No reply within the call's timeout (after any retries the op allowed)."""


class DeviceRestarted(DeviceError):
    """The daemon's boot id changed: it restarted, and everything programmed is gone."""


class DaemonStartError(DeviceError):
    """A spawned daemon exited or never printed READY."""


_FAMILY: dict[ErrorCode, type[DeviceError]] = {
    **dict.fromkeys((ErrorCode.BAD_MESSAGE, ErrorCode.BAD_VERSION, ErrorCode.MESSAGE_TOO_LARGE,
                     ErrorCode.UNKNOWN_OP, ErrorCode.BAD_ARGUMENT, ErrorCode.BAD_SHAPE,
                     ErrorCode.BAD_DTYPE, ErrorCode.FORBIDDEN), InvalidRequest),
    **dict.fromkeys((ErrorCode.CAPACITY_EXCEEDED, ErrorCode.NON_FINITE, ErrorCode.NOT_SYMMETRIC,
                     ErrorCode.NOT_POSITIVE_DEFINITE, ErrorCode.UNSTABLE_STEP,
                     ErrorCode.NOT_REALISABLE), MatrixRejected),
    **dict.fromkeys((ErrorCode.NOT_PROGRAMMED, ErrorCode.NO_SAMPLES, ErrorCode.DIVERGED,
                     ErrorCode.CLOCK_OVERFLOW), DeviceStateError),
    ErrorCode.CANCELLED: Cancelled,
    **dict.fromkeys((ErrorCode.BUSY, ErrorCode.SHUTTING_DOWN), DeviceBusy),
    ErrorCode.LEASED: DeviceLeased,
    ErrorCode.LEASE_EXPIRED: LeaseExpired,
    ErrorCode.DUPLICATE_REQUEST: ReplyLost,
    ErrorCode.INTERNAL: DeviceInternalError,
}


def error_from_reply(error: dict[str, Any]) -> DeviceError:
    """The typed exception for an error reply's ``{"code", "message", "details"}``."""
    raw_code = error.get("code", "")
    try:
        code: ErrorCode | str = ErrorCode(raw_code)
        family = _FAMILY[ErrorCode(raw_code)]
    except ValueError:  # a code from a newer daemon
        code, family = raw_code, DeviceError
    return family(code, str(error.get("message", "")), error.get("details") or {})
