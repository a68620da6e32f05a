"""What the daemon keeps per client session: the replies that make a resent request execute at
most once (1.1; per session since 1.2), and the lease that gives one session the device.

A session is the id a client puts in its request headers, not the ZeroMQ routing id, which
changes whenever a client recreates its socket after a timeout (Lazy Pirate). Under CURVE a
session is bound to the client key that first used it (``peer``, the ZAP User-Id): another key
presenting it is refused. Everything here belongs to the daemon's network thread (not
thread-safe), and every table has a bound (docs/reliability.md):

* at most ``MAX_SESSIONS`` sessions; the one seen least recently, with no request in flight,
  is forgotten to make room, and so is any session idle for ``SESSION_IDLE_S``;
* per session, the ids of its last ``SESSION_REPLIES`` executed requests, with their replies
  while these total at most ``SESSION_REPLY_BYTES`` (older or larger replies are dropped, the
  id is kept), and a *floor*: every id at or below it counts as executed. Nothing another
  session does can evict them.

A resent request (header ``attempt`` > 1) of a session the daemon does not know is refused as
"cannot know" (its first sending may have executed before the session was forgotten).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from spusim.protocol import ErrorCode, ProtocolError

MAX_SESSIONS = 256  # sessions known at once
SESSION_IDLE_S = 600.0  # a session not heard from for this long (wall s) is forgotten
SESSION_REPLIES = 32  # executed request ids remembered per session, with their replies
SESSION_REPLY_BYTES = 256 * 1024  # bytes of replies kept per session
MAX_WAITERS = 4  # resends of one executing request that get its reply too (latest kept)

Holder = tuple[str, str | None]  # (session, peer): who holds the lease


class Claim(Enum):
    """What :meth:`Session.claim` found for a request id."""

    NEW = "new"  # never executed: execute it
    CACHED = "cached"  # executed: answer with the kept reply
    PENDING = "pending"  # queued or executing: its reply will be sent to this requester too
    EVICTED = "evicted"  # executed (or may have been), reply not kept: refuse, never re-execute


@dataclass
class Session:
    """One client session: its executed requests, those in flight, and its lease lapse."""

    name: str
    peer: str | None  # the CURVE User-Id it is bound to; None without CURVE
    floor: int  # ids <= floor that are not in ``done`` count as executed
    last_seen: float
    done: OrderedDict[int, tuple[list[Any], int] | None] = field(default_factory=OrderedDict)
    bytes: int = 0  # of the replies in ``done``
    pending: dict[int, list[list[Any]]] = field(default_factory=dict)  # id -> waiters
    lapsed: bool = False  # its lease ran out (for 1.1 clients, which send no lease epoch)

    def claim(self, request_id: int, envelope: list[Any]) -> tuple[Claim, list[Any] | None]:
        """Look ``request_id`` up; a NEW one is marked pending, a PENDING one gets ``envelope``
        as a waiter. Returns the claim and, for CACHED, the reply frames."""
        if request_id in self.pending:
            waiters = self.pending[request_id]
            waiters.append(envelope)
            del waiters[:-MAX_WAITERS]
            return Claim.PENDING, None
        if request_id in self.done:
            kept = self.done[request_id]
            return (Claim.EVICTED, None) if kept is None else (Claim.CACHED, kept[0])
        if request_id <= self.floor:
            return Claim.EVICTED, None
        self.pending[request_id] = []
        return Claim.NEW, None

    def abandon(self, request_id: int) -> None:
        """A NEW claim that was not executed after all (refused BUSY, LEASED, ...)."""
        self.pending.pop(request_id, None)

    def complete(self, request_id: int, frames: list[Any]) -> list[list[Any]]:
        """Keep an executed request's reply; returns the envelopes waiting for it."""
        waiters = self.pending.pop(request_id, [])
        size = sum(memoryview(frame).nbytes for frame in frames)
        self.done[request_id] = (frames, size) if size <= SESSION_REPLY_BYTES else None
        self.done.move_to_end(request_id)
        self.bytes += size if size <= SESSION_REPLY_BYTES else 0
        for old in list(self.done):  # oldest first: drop replies (keep ids) until within bytes
            if self.bytes <= SESSION_REPLY_BYTES:
                break
            kept = self.done[old]
            if kept is not None:
                self.bytes -= kept[1]
                self.done[old] = None
        while len(self.done) > SESSION_REPLIES:
            old, kept = self.done.popitem(last=False)
            self.bytes -= 0 if kept is None else kept[1]
            self.floor = max(self.floor, old)
        return waiters

    def state_of(self, request_id: int) -> str:
        """For ``ping``: "pending", "done" (executed) or "unknown"."""
        if request_id in self.pending:
            return "pending"
        return "done" if request_id in self.done or request_id <= self.floor else "unknown"


class SessionTable:
    """The sessions the daemon knows, at most ``max_sessions``, forgotten when idle."""

    def __init__(self, max_sessions: int = MAX_SESSIONS, idle_s: float = SESSION_IDLE_S,
                 clock: Callable[[], float] = time.monotonic,
                 kept: Callable[[str], bool] = lambda name: False) -> None:
        """``kept(name)``: a session never dropped for room or idleness (the lease holder's,
        so that its lapse is always recorded on it)."""
        self.max_sessions, self.idle_s, self._clock = max_sessions, idle_s, clock
        self._kept = kept
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently seen first
        self.forgotten = 0  # sessions dropped for room or idleness, for status
        self._expired_at = -float("inf")

    def find(self, name: str, peer: str | None) -> Session | None:
        """The known session ``name``, refreshed; FORBIDDEN if another peer owns it."""
        session = self._sessions.get(name)
        if session is None:
            return None
        if session.peer != peer:
            raise ProtocolError(ErrorCode.FORBIDDEN, "this session id belongs to another "
                                "client key; choose a fresh random session id",
                                field="session")
        session.last_seen = self._clock()
        self._sessions.move_to_end(name)
        return session

    def open(self, name: str, peer: str | None, first_id: int) -> Session:
        """A new session, first heard of with request ``first_id``: ids below it count as
        executed (a forgotten session's old requests are never run again)."""
        self.expire()
        if len(self._sessions) >= self.max_sessions:
            idle = next((s for s in self._sessions.values()
                         if not s.pending and not self._kept(s.name)), None)
            if idle is None:
                raise ProtocolError(ErrorCode.BUSY, f"the daemon tracks {self.max_sessions} "
                                    "sessions with requests in flight; retry later",
                                    sessions=self.max_sessions)
            self._forget(idle.name)
        session = Session(name, peer, floor=first_id - 1, last_seen=self._clock())
        self._sessions[name] = session
        return session

    def get(self, name: str) -> Session | None:
        """The session ``name`` if known (no refresh, no peer check)."""
        return self._sessions.get(name)

    def expire(self) -> None:
        """Forget the sessions idle for ``idle_s`` with nothing in flight (looks at most once a
        second: the daemon calls it on every turn of its loop)."""
        now = self._clock()
        if now - self._expired_at < 1.0:
            return
        self._expired_at, horizon = now, now - self.idle_s
        stale = [s.name for s in self._sessions.values()
                 if s.last_seen < horizon and not s.pending and not self._kept(s.name)]
        for name in stale:
            self._forget(name)

    def _forget(self, name: str) -> None:
        del self._sessions[name]
        self.forgotten += 1

    def clear_replies(self) -> None:
        """A device reset: forget every kept reply (ids stay executed; in-flight stays)."""
        for session in self._sessions.values():
            session.done = OrderedDict((key, None) for key in session.done)
            session.bytes = 0

    def __iter__(self) -> Iterator[Session]:
        return iter(self._sessions.values())

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def bytes(self) -> int:
        return sum(session.bytes for session in self._sessions.values())


class LeaseTable:
    """The device's lease: at most one session (bound to its peer) holds it.

    Each grant to a new holder starts a new *epoch*; a client that states the epoch it was
    granted (header ``lease``, 1.2) is refused LEASE_EXPIRED unless it still holds that very
    grant, whatever happened in between and however many sessions others made: no table of
    lapsed sessions is needed. A lease lasts ``ttl_s`` wall seconds after its holder's last
    request (heartbeat pings included) or reply; it runs out also while an op of the holder
    executes, and the daemon then stops that op (see device/server.py).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.holder: Holder | None = None
        self.epoch = 0
        self._ttl_s = 0.0
        self._last_seen = 0.0
        self._lapsed: list[Holder] = []

    def acquire(self, holder: Holder, ttl_s: float, epoch: int | None) -> dict[str, Any]:
        """Grant or renew the lease. Raises LEASE_EXPIRED if ``epoch`` is not the holder's
        current grant, LEASED if another session holds it."""
        self._check_epoch(holder, epoch)
        if self.holder not in (None, holder):
            raise self._leased()
        renewed = self.holder == holder
        if not renewed:
            self.epoch += 1
        self.holder, self._ttl_s, self._last_seen = holder, ttl_s, self._clock()
        return {"ttl_s": ttl_s, "renewed": renewed, "epoch": self.epoch}

    def release(self, holder: Holder) -> bool:
        """Give the lease up (no-op unless ``holder`` holds it)."""
        self._expire()
        if self.holder != holder:
            return False
        self.holder = None
        return True

    def check(self, holder: Holder | None, epoch: int | None) -> None:
        """May ``holder`` use the device now? Raises LEASE_EXPIRED or LEASED if not."""
        self._check_epoch(holder, epoch)
        if self.holder is not None and self.holder != holder:
            raise self._leased()

    def touch(self, holder: Holder | None) -> None:
        """The holder was heard from (a request, or a reply sent to it): its ttl restarts."""
        self._expire()
        if holder is not None and holder == self.holder:
            self._last_seen = self._clock()

    def lapsed(self) -> list[Holder]:
        """The holders whose lease ran out since the last call (at most one a call, in
        practice)."""
        self._expire()
        found, self._lapsed = self._lapsed, []
        return found

    def clear(self) -> None:
        """Forget the lease (a device reset); its holder's epoch is then stale."""
        self.holder = None

    def status(self, holder: Holder | None) -> dict[str, Any]:
        """For ``status``: is the device leased, to the asking session, until when (s)."""
        self._expire()
        if self.holder is None:
            return {"held": False, "yours": False, "expires_in_s": None}
        return {"held": True, "yours": self.holder == holder, "expires_in_s": self._remaining()}

    def _check_epoch(self, holder: Holder | None, epoch: int | None) -> None:
        self._expire()
        if epoch is not None and (self.holder != holder or self.epoch != epoch):
            raise ProtocolError(ErrorCode.LEASE_EXPIRED,
                                f"the lease of epoch {epoch} is no longer this session's (it "
                                "ran out or was released), so other sessions may have used "
                                "the device since; acquire it again (without an epoch) and "
                                "re-program", epoch=self.epoch)

    def _remaining(self) -> float:
        return max(0.0, self._last_seen + self._ttl_s - self._clock())

    def _expire(self) -> None:
        if self.holder is None or self._remaining() > 0:
            return
        self._lapsed.append(self.holder)
        self.holder = None

    def _leased(self) -> ProtocolError:
        return ProtocolError(ErrorCode.LEASED,
                             "another session holds the device's lease; retry after it is "
                             "released or runs out", expires_in_s=self._remaining())
