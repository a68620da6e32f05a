"""What the daemon keeps per client session (protocol 1.1): the reply cache that makes a retried
request execute at most once, and the lease that gives one session the device to itself.

Both are keyed by the session id a client puts in its request header, never by the ZeroMQ
routing id, which changes whenever a client recreates its socket after a timeout (Lazy Pirate).
Both belong to the daemon's network thread and are not thread-safe.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from spusim.protocol import ErrorCode, ProtocolError

Key = tuple[str, int]  # (session, request id)
REPLY_CACHE_ENTRIES = 1024  # replies kept
REPLY_CACHE_BYTES = 64 * 1024 * 1024  # bytes of replies kept (the newest is kept whatever size)
REPLY_CACHE_TOMBSTONES = 16384  # evicted keys remembered (~3 MiB), to refuse late retries
_LAPSED_SESSIONS = 1024  # sessions whose lapsed lease is remembered


class Claim(Enum):
    """What :meth:`ReplyCache.claim` found for a request's key."""

    NEW = "new"  # never seen: execute it
    CACHED = "cached"  # executed: answer with the cached reply
    PENDING = "pending"  # queued or executing: its reply will be sent to this requester too
    EVICTED = "evicted"  # executed, reply no longer held: refuse (DUPLICATE_REQUEST)


@dataclass
class _Pending:
    waiters: list[list[Any]] = field(default_factory=list)  # envelopes of duplicate requests


class ReplyCache:
    """Replies of executed device ops by (session, request id), least recently stored first out.

    An entry goes when more than ``max_entries`` are held or the replies held exceed
    ``max_bytes``; the newest entry stays whatever its size. An evicted key is remembered
    (``max_tombstones`` of them) so that a late retry is refused rather than executed twice.
    """

    def __init__(self, max_entries: int = REPLY_CACHE_ENTRIES,
                 max_bytes: int = REPLY_CACHE_BYTES,
                 max_tombstones: int = REPLY_CACHE_TOMBSTONES) -> None:
        self.max_entries, self.max_bytes, self.max_tombstones = (max_entries, max_bytes,
                                                                 max_tombstones)
        self._replies: OrderedDict[Key, tuple[list[Any], int]] = OrderedDict()
        self._bytes = 0
        self._pending: dict[Key, _Pending] = {}
        self._tombstones: OrderedDict[Key, None] = OrderedDict()

    def claim(self, key: Key, envelope: list[Any]) -> tuple[Claim, list[Any] | None]:
        """Look ``key`` up; a NEW key is marked pending, a PENDING one gets ``envelope`` as a
        waiter. Returns the claim and, for CACHED, the reply frames."""
        if key in self._replies:
            return Claim.CACHED, self._replies[key][0]
        if key in self._pending:
            self._pending[key].waiters.append(envelope)
            return Claim.PENDING, None
        if key in self._tombstones:
            return Claim.EVICTED, None
        self._pending[key] = _Pending()
        return Claim.NEW, None

    def abandon(self, key: Key) -> None:
        """A NEW claim that was not executed after all (refused BUSY, LEASED, ...)."""
        self._pending.pop(key, None)

    def complete(self, key: Key, frames: list[Any]) -> list[list[Any]]:
        """Store the reply of an executed request; returns the envelopes waiting for it."""
        pending = self._pending.pop(key, _Pending())
        size = sum(memoryview(frame).nbytes for frame in frames)
        self._replies[key] = (frames, size)
        self._bytes += size
        while len(self._replies) > 1 and (len(self._replies) > self.max_entries
                                          or self._bytes > self.max_bytes):
            old, (_, old_size) = self._replies.popitem(last=False)
            self._bytes -= old_size
            self._tombstones[old] = None
            if len(self._tombstones) > self.max_tombstones:
                self._tombstones.popitem(last=False)
        return pending.waiters

    def clear(self) -> None:
        """Forget every reply (a device reset); requests still executing stay pending."""
        self._replies.clear()
        self._tombstones.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._replies)

    @property
    def bytes(self) -> int:
        return self._bytes


class LeaseTable:
    """The device's lease: at most one session holds it, and only it may use the device.

    A lease lasts ``ttl_s`` seconds of wall time (``clock``, default time.monotonic) after its
    holder's last request or reply, and never runs out while an op of the holder is queued or
    executing. A holder whose lease ran out has *lapsed*: its device ops are refused
    (LEASE_EXPIRED) until it acquires again or releases, because another session may have
    changed the device in between.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._holder: str | None = None
        self._ttl_s = 0.0
        self._last_seen = 0.0
        self._in_flight: Counter[str] = Counter()
        self._lapsed: OrderedDict[str, None] = OrderedDict()

    def acquire(self, session: str, ttl_s: float) -> dict[str, Any]:
        """Grant or renew the lease; raises LEASED if another session holds it."""
        self._expire()
        if self._holder not in (None, session):
            raise self._leased()
        renewed = self._holder == session
        self._holder, self._ttl_s, self._last_seen = session, ttl_s, self._clock()
        self._lapsed.pop(session, None)
        return {"ttl_s": ttl_s, "renewed": renewed}

    def release(self, session: str) -> bool:
        """Give the lease up (no-op unless ``session`` holds it); clears a lapse too."""
        self._expire()
        self._lapsed.pop(session, None)
        if self._holder != session:
            return False
        self._holder = None
        return True

    def check(self, session: str | None) -> None:
        """May ``session`` use the device now? Raises LEASED or LEASE_EXPIRED if not."""
        self._expire()
        if self._holder is not None and self._holder != session:
            raise self._leased()
        if session is not None and session in self._lapsed:
            raise ProtocolError(ErrorCode.LEASE_EXPIRED,
                                "this session's lease ran out, so other sessions may have used "
                                "the device since; acquire the lease again (or release it) "
                                "before using the device")

    def touch(self, session: str | None) -> None:
        """A request from ``session`` arrived: the holder's lease starts its ttl again."""
        self._expire()
        if session is not None and session == self._holder:
            self._last_seen = self._clock()

    def started(self, session: str | None) -> None:
        """An op of ``session`` was queued."""
        if session is not None:
            self._in_flight[session] += 1

    def finished(self, session: str | None) -> None:
        """An op of ``session`` was answered: the holder's ttl starts again from now."""
        if session is None or not self._in_flight[session]:
            return
        if session == self._holder:
            self._last_seen = self._clock()
        self._in_flight[session] -= 1
        if not self._in_flight[session]:
            del self._in_flight[session]

    def clear(self) -> None:
        """Forget the lease and the lapses (a device reset)."""
        self._holder = None
        self._lapsed.clear()

    def status(self, session: str | None) -> dict[str, Any]:
        """For ``status``: is the device leased, to the asking session, until when (s)."""
        self._expire()
        if self._holder is None:
            return {"held": False, "yours": False, "expires_in_s": None}
        return {"held": True, "yours": self._holder == session,
                "expires_in_s": self._remaining()}

    def _remaining(self) -> float:
        return max(0.0, self._last_seen + self._ttl_s - self._clock())

    def _expire(self) -> None:
        holder = self._holder
        if holder is None or self._in_flight[holder] or self._remaining() > 0:
            return
        self._holder = None
        self._lapsed[holder] = None
        if len(self._lapsed) > _LAPSED_SESSIONS:
            self._lapsed.popitem(last=False)

    def _leased(self) -> ProtocolError:
        return ProtocolError(ErrorCode.LEASED,
                             "another session holds the device's lease; retry after it is "
                             "released or runs out", expires_in_s=self._remaining())
