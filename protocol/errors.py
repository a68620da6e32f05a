"""The closed list of error codes a daemon may answer with, and the exception that carries one.

Both sides share this list: the daemon raises :class:`ProtocolError` and turns it into an error
reply; the host library maps the code back to a typed exception. The codes are part of the wire
protocol (docs/protocol.md); adding one is a minor version bump, changing one a major bump.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Why a request failed. The value is what travels on the wire."""

    # The message itself.
    BAD_MESSAGE = "BAD_MESSAGE"  # frames that do not form a request: not msgpack, missing fields, ...
    BAD_VERSION = "BAD_VERSION"  # protocol major version differs from the daemon's
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"  # a header over the advertised limit
    UNKNOWN_OP = "UNKNOWN_OP"
    BAD_ARGUMENT = "BAD_ARGUMENT"  # an argument missing, unknown, of the wrong type or out of range
    BAD_SHAPE = "BAD_SHAPE"  # an array of the wrong shape, or whose frame size does not match it
    BAD_DTYPE = "BAD_DTYPE"  # an array dtype other than the allowed ones
    # The device.
    CAPACITY_EXCEEDED = "CAPACITY_EXCEEDED"  # more cells than the device has
    NON_FINITE = "NON_FINITE"  # NaN or inf in programmed values
    NOT_SYMMETRIC = "NOT_SYMMETRIC"
    NOT_POSITIVE_DEFINITE = "NOT_POSITIVE_DEFINITE"  # the dynamics would diverge
    NOT_REALISABLE = "NOT_REALISABLE"  # the cells' circuit cannot realise the matrix (1.1)
    UNSTABLE_STEP = "UNSTABLE_STEP"  # Euler-Maruyama step too large for the programmed matrix
    NOT_PROGRAMMED = "NOT_PROGRAMMED"  # the op needs a coupling matrix and none is programmed
    NO_SAMPLES = "NO_SAMPLES"  # read asked for moments that no run has recorded
    DIVERGED = "DIVERGED"  # the state left the finite range during a run; state and
    # averager were cleared
    # The daemon.
    BUSY = "BUSY"  # the device's work queue is full (or an injected busy fault)
    LEASED = "LEASED"  # another session holds the device's lease (1.1)
    LEASE_EXPIRED = "LEASE_EXPIRED"  # this session's lease lapsed: others may have changed the
    # device; acquire again (1.1)
    DUPLICATE_REQUEST = "DUPLICATE_REQUEST"  # this (session, id) was executed already and its
    # reply is no longer cached; not executed again (1.1)
    FORBIDDEN = "FORBIDDEN"  # the op is disabled on this daemon (inject_fault without
    # --test-mode) (1.1)
    SHUTTING_DOWN = "SHUTTING_DOWN"  # the daemon is stopping: a queued op was not executed,
    # a running run was stopped part-way (details.completed_ns)
    CANCELLED = "CANCELLED"  # a run stopped by a cancel request, a lapsed lease or its time
    # limit (details.reason, details.completed_ns); a queued op not executed (1.2)
    CLOCK_OVERFLOW = "CLOCK_OVERFLOW"  # the op would carry the simulated clock past 2^64 - 1
    # ns; refused before it changed anything (1.2)
    INTERNAL = "INTERNAL"  # a bug in the daemon; it keeps serving


class ProtocolError(Exception):
    """A request that cannot be served, with the code and a message a person understands.

    ``details`` holds machine-readable context (offending shape, limit, ...) and must contain
    only msgpack-serialisable values.
    """

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.details = details
