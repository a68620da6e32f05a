"""The daemon's network side: one ROUTER socket, one device worker thread.

The main thread owns the ROUTER socket and the per-session state (kept replies, lease: see
device/sessions.py). It reads a message frame by frame (frames beyond the most a request has
are discarded as they are read), decodes and validates it, checks a device op's shapes,
capacity and run length against the device *before* queueing it, answers the immediate ops
(``hello``, ``ping``, ``status``, ``shutdown``, ``acquire``, ``release``, ``inject_fault``,
``cancel``) itself, so they stay answerable during a long run (clients' heartbeats), and
queues device ops, within a count and a byte budget, for the worker thread, which owns the
:class:`EmulatedSPU`. The worker hands each reply back (a queue, plus a wake-up message into the
ROUTER from an inproc DEALER with a secret routing id: the main thread waits in one blocking
receive, cheaper per request than polling several sockets); the main thread keeps it for the
session and sends it. A third thread counts the connected peers (a socket monitor). Every
reply leaves through :meth:`DeviceServer._send`, where injected transmission faults strike
(device/faults.py). Nothing a peer sends can stop the loop: every defect becomes a typed
error reply. Bounds: docs/reliability.md.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import queue
import resource
import threading
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from spusim.device.cli import DEFAULT_MAX_RUN_NS
from spusim.device.config import DeviceConfig
from spusim.device.coupling import check_dense, check_factored
from spusim.device.faults import FaultConfig, FaultInjector
from spusim.device.security import CurveServerKeys, secure
from spusim.device.sessions import (
    MAX_SESSIONS,
    SESSION_IDLE_S,
    SESSION_REPLIES,
    SESSION_REPLY_BYTES,
    Claim,
    Holder,
    LeaseTable,
    Session,
    SessionTable,
)
from spusim.device.spu import EmulatedSPU
from spusim.protocol.frames import recv_at_most, send_frames
from spusim.protocol import (
    ALLOWED_DTYPES,
    INTEGRATORS,
    MAX_ARRAYS,
    MAX_HEADER_BYTES,
    MAX_LEASE_S,
    MAX_NDIM,
    MAX_SESSION_CHARS,
    OPS,
    PROTOCOL_VERSION,
    UINT64_MAX,
    ErrorCode,
    MalformedRequest,
    ProtocolError,
    Request,
    decode_request,
    encode_reply,
    spec_for,
)

log = logging.getLogger("spusim.device")

QUEUE_LIMIT = 64  # device ops waiting behind the running one; more are answered BUSY
MIN_QUEUE_BYTES = 64 * 1024 * 1024  # array bytes held by queued and running ops, at least
CLOCK_LIMIT_NS = UINT64_MAX  # the simulated clock never passes what the protocol carries
CRASH_EXIT_CODE = 70  # exit status of a daemon killed by an injected crash_run fault
_IMMEDIATE_OPS = frozenset({"hello", "ping", "status", "shutdown", "acquire", "release",
                            "inject_fault", "cancel"})
# Immediate ops that neither need nor open a session record (an unknown session gets none).
_SESSIONLESS_OPS = frozenset({"hello", "ping", "status", "release", "inject_fault"})
_MAX_FRAMES = 3 + MAX_ARRAYS  # routing id, REQ delimiter, header, arrays
_POLL_MS = 100
# Why a stopped op is answered the way it is: the code of each reason.
_STOPPED = {"shutdown": ErrorCode.SHUTTING_DOWN, "lease_expired": ErrorCode.LEASE_EXPIRED,
            "cancel": ErrorCode.CANCELLED}


def _implementation_version() -> str:
    try:
        return metadata.version("spusim")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass
class _Job:
    envelope: list[Any]  # routing frames to put back in front of the reply
    request: Request
    args: dict[str, Any]
    session: Session | None
    holder: Holder | None  # (session, peer) for the lease
    nbytes: int  # array bytes it holds
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str = ""  # why it was stopped: a key of _STOPPED

    def stop(self, reason: str) -> None:
        """Stop it: before it executes, it is not; a running run ends at its next chunk."""
        if not self.cancel.is_set():
            self.reason = reason
            self.cancel.set()


@dataclass(frozen=True)
class _Done:
    """An executed job's reply frames, handed from the worker to the main thread."""

    job: _Job
    frames: list[Any]
    reset: bool  # an injected reset power-cycled the device before the job executed


class DeviceServer:
    """Serves one :class:`EmulatedSPU` on ``bind`` until :meth:`serve`'s stop event is set.

    ``seconds_per_cell_step`` is the kernel speed measured at start-up (wall time per N^2
    element-step); hosts may use it to size their timeouts, never as device time. ``faults``:
    the faults to inject from the start; ``test_mode`` lets clients change them
    (``inject_fault``); ``curve``: require CURVE authentication with these keys;
    ``max_run_ns``: the longest run accepted (simulated ns).
    """

    def __init__(self, config: DeviceConfig, bind: str, seconds_per_cell_step: float,
                 context: zmq.Context[Any] | None = None, *, faults: FaultConfig | None = None,
                 test_mode: bool = False, curve: CurveServerKeys | None = None,
                 max_run_ns: int = DEFAULT_MAX_RUN_NS) -> None:
        self.config = config
        self.boot_id = uuid.uuid4().hex
        self.spu = EmulatedSPU(config)
        self.faults = FaultInjector(faults)
        self.test_mode = test_mode
        self.max_run_ns = max_run_ns
        self.max_queued_bytes = max(MIN_QUEUE_BYTES, 2 * 8 * config.cells**2)
        self._op_clock_ns = _op_clock_bound_ns(config)
        self._seconds_per_cell_step = seconds_per_cell_step
        self._context = context or zmq.Context.instance()
        self._router = self._context.socket(zmq.ROUTER)
        self._router.linger = 500
        # libzmq drops (and disconnects) a peer whose frame exceeds this, before allocating it.
        self._router.maxmsgsize = config.max_frame_bytes
        self._router.router_mandatory = False
        self._authenticator = None if curve is None else secure(self._router, self._context,
                                                                curve)
        try:
            self._router.bind(bind)
        except zmq.ZMQError:
            self._close_router()
            raise
        self.endpoint = self._router.last_endpoint.decode()
        self._connections = _ConnectionWatch(self._router)
        self._leases = LeaseTable()
        self._sessions = SessionTable(kept=lambda name: (self._leases.holder or ("",))[0] == name)
        self._counters = {"requests": 0, "replies": 0, "cache_hits": 0}
        self._delayed: list[tuple[float, int, list[Any]]] = []  # (due, order, frames) heap
        self._order = itertools.count()
        self._done: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        # The worker wakes this thread through the ROUTER itself (an inproc DEALER with a secret
        # routing id), so that the thread waits in one blocking receive: the cheapest wait.
        self._wake_id = b"spu-worker-" + uuid.uuid4().bytes
        self._wake_endpoint = f"inproc://spu-wake-{self.boot_id}"
        self._router.bind(self._wake_endpoint)
        self._rcvtimeo = -1  # the ROUTER's receive timeout, ms (set only when it changes)
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._in_flight: list[_Job] = []  # queued or running, at most QUEUE_LIMIT + 1
        self._queued_bytes = 0
        self._running: _Job | None = None
        self._stop: threading.Event | None = None
        self._worker = threading.Thread(target=self._work, name="spu-worker", daemon=True)
        self._started = time.monotonic()
        if self.faults.config.active:
            log.warning("injecting faults: %s", self.faults.config.describe())

    # --- main thread -----------------------------------------------------------------------

    def serve(self, stop: threading.Event) -> None:
        """Answer requests until ``stop`` is set (by a signal or a ``shutdown`` op), then close."""
        self._stop = stop
        self._worker.start()
        self._connections.start()
        log.info("serving on %s (boot id %s)", self.endpoint, self.boot_id)
        try:
            while not stop.is_set():
                wait_ms = self._poll_ms()
                if wait_ms != self._rcvtimeo:
                    self._router.rcvtimeo = self._rcvtimeo = wait_ms
                self._receive()
                self._stop_lapsed()
                self._sessions.expire()
                if self._delayed:
                    self._send_delayed(time.monotonic())
        finally:
            self._shut_down()

    def _receive(self) -> None:
        """Take one message off the ROUTER socket, waiting at most its receive timeout: answer
        or queue a request, or collect the replies the worker woke us for; never raises."""
        try:
            frames, dropped = recv_at_most(self._router, _MAX_FRAMES)
        except zmq.Again:  # nothing arrived in time
            return
        if not self._done.empty():  # first what the worker finished: a cancel or a ping
            self._collect_replies()  # about a request must see its reply kept, not "queued"
        if frames[0].bytes == self._wake_id:
            return
        self._counters["requests"] += 1
        envelope, body = frames[:1], frames[1:]
        if body and memoryview(body[0]).nbytes == 0:  # a REQ peer's empty delimiter
            envelope, body = frames[:2], frames[2:]
        if dropped:
            self._reply(envelope, None, error=ProtocolError(
                ErrorCode.BAD_MESSAGE, f"{len(body) + dropped} frames: at most 1 header + "
                f"{MAX_ARRAYS} arrays", limit=1 + MAX_ARRAYS))
            return
        try:
            self._handle(envelope, body, self._peer(frames[0]))
        except Exception as exc:  # a daemon bug: report it, keep serving
            log.exception("failed to handle a request")
            self._reply(envelope, None, error=_internal("a request", exc))

    def _peer(self, frame: zmq.Frame) -> str | None:
        """Who sent ``frame``: its CURVE public key (the ZAP User-Id); None without CURVE."""
        return None if self._authenticator is None else frame.get("User-Id")

    def _handle(self, envelope: list[Any], body: list[Any], peer: str | None) -> None:
        request_id = None
        try:
            request = decode_request(body)
            request_id = request.id
            args = spec_for(request.op).validate(request.args, request.arrays)
            self._precheck(request, args)
            session = self._session(request, peer)
        except MalformedRequest as error:
            self._reply(envelope, error.request_id, error=error)
            return
        except ProtocolError as error:
            self._reply(envelope, request_id, error=error)
            return
        holder = None if request.session is None else (request.session, peer)
        self._leases.touch(holder)
        if request.op in _IMMEDIATE_OPS:
            # The test-control op's own reply is never subject to the faults it configures.
            faulty = request.op != "inject_fault"
            try:
                result = self._answer_immediately(request, args, session, holder)
            except ProtocolError as error:
                self._reply(envelope, request.id, error=error, faulty=faulty)
                return
            except Exception as exc:  # a daemon bug: report it, keep serving
                log.exception("op %s (id %s) failed", request.op, request.id)
                self._reply(envelope, request.id, error=_internal(request.op, exc))
                return
            self._reply(envelope, request.id, result=result, faulty=faulty)
            return
        nbytes = sum(array.nbytes for array in request.arrays.values())
        self._accept(_Job(envelope, request, args, session, holder, nbytes))

    def _precheck(self, request: Request, args: dict[str, Any]) -> None:
        """What can be checked against the device before the op is queued (1.2): the run's
        length, and the arrays' shapes and the cells they need, so that no queued op holds
        more than the device could take."""
        arrays, cells = request.arrays, self.config.cells
        match request.op:
            case "run" if args["duration_ns"] > self.max_run_ns:
                raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"run: duration_ns "
                                    f"{args['duration_ns']} exceeds this daemon's longest run, "
                                    f"{self.max_run_ns} ns", op="run", argument="duration_ns",
                                    limit=self.max_run_ns)
            case "run" if (lag_bytes := 8 * cells * (args["lag_samples"] + cells)) > \
                    self.max_queued_bytes:
                raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"run: lag_samples "
                                    f"{args['lag_samples']} needs a ring buffer and lag sum of "
                                    f"{lag_bytes} bytes on {cells} cells, more than this "
                                    f"daemon's {self.max_queued_bytes}", op="run",
                                    argument="lag_samples", limit=self.max_queued_bytes)
            case "program":
                check_dense(arrays["A"], self.config)
            case "solve_factored" if (analog := _analog_ns(request.op, args)) > self.max_run_ns:
                raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"solve_factored: delay_ns + "
                                    f"burn_ns + record_ns = {analog} exceeds this daemon's "
                                    f"longest run, {self.max_run_ns} ns", op=request.op,
                                    argument="record_ns", limit=self.max_run_ns)
            case "program_factored" | "solve_factored":
                check_factored(arrays["J"], arrays["H"], self.config)
                n = arrays["J"].shape[1]
                vectors = [arrays[name] for name in ("b", "x") if name in arrays]
                if any(vector.shape != (n,) for vector in vectors):
                    raise ProtocolError(ErrorCode.BAD_SHAPE, f"{request.op}: b and x must have "
                                        f"shape [{n}] to match J", expected=[n])
            case "set_bias" | "set_state":
                vector = next(iter(arrays.values()))
                if vector.ndim != 1 or vector.size > cells:
                    raise ProtocolError(ErrorCode.BAD_SHAPE, f"{request.op}: expected a "
                                        f"vector of at most {cells} values, got "
                                        f"{list(vector.shape)}", shape=list(vector.shape))

    def _session(self, request: Request, peer: str | None) -> Session | None:
        """The request's session, opened by a device op, ``acquire``, ``cancel`` or
        ``shutdown`` when new; a resend (attempt > 1) of a device op in a session the daemon
        does not know is refused: its first sending may have executed."""
        if request.session is None:
            return None
        session = self._sessions.find(request.session, peer)
        if session is not None or request.op in _SESSIONLESS_OPS:
            return session
        if (request.attempt or 1) > 1 and request.op not in _IMMEDIATE_OPS:
            raise ProtocolError(ErrorCode.DUPLICATE_REQUEST, "this resent request's session "
                                "is not known here (forgotten when idle or crowded out), so "
                                "its first sending may have executed; it was not executed "
                                "now", id=request.id)
        return self._sessions.open(request.session, peer, request.id)

    def _accept(self, job: _Job) -> None:
        """A device op: answer a repeat from its session's replies, else queue or refuse it."""
        session, request_id = job.session, job.request.id
        if session is not None:
            claim, cached = session.claim(request_id, job.envelope)
            if claim in (Claim.CACHED, Claim.PENDING):
                self._counters["cache_hits"] += 1
                log.debug("op %s id %s repeated: answered from the session's replies",
                          job.request.op, request_id)
                if cached is not None:
                    self._send(job.envelope, cached)
                return  # PENDING: the reply goes to this requester too when it is ready
            if claim is Claim.EVICTED:
                self._reply(job.envelope, request_id, error=ProtocolError(
                    ErrorCode.DUPLICATE_REQUEST,
                    f"request {request_id} of this session was executed already (or may "
                    "have been) and its reply is no longer kept; it was not executed again",
                    id=request_id))
                return
        refusal = self._enqueue(job)
        if refusal is not None:
            if session is not None:
                session.abandon(request_id)
            self._reply(job.envelope, request_id, error=refusal)

    def _enqueue(self, job: _Job) -> ProtocolError | None:
        """Queue ``job`` for the worker, or the error that refuses it (lease, busy)."""
        try:
            self._check_lease(job.request, job.session, job.holder)
        except ProtocolError as error:
            return error
        if self.faults.fires("busy"):
            log.info("injected fault: answering %s id %s BUSY", job.request.op, job.request.id)
            return ProtocolError(ErrorCode.BUSY, "the device is busy; retry later",
                                 queued=self._jobs.qsize())
        if self._queued_bytes + job.nbytes > self.max_queued_bytes:
            return ProtocolError(ErrorCode.BUSY, f"the queued operations hold "
                                 f"{self._queued_bytes} bytes of arrays; this one would pass "
                                 f"{self.max_queued_bytes}; retry later",
                                 queued=self._jobs.qsize(), queued_bytes=self._queued_bytes)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            return ProtocolError(ErrorCode.BUSY, f"the device has {QUEUE_LIMIT} operations "
                                 "queued; retry later", queued=QUEUE_LIMIT)
        self._in_flight.append(job)
        self._queued_bytes += job.nbytes
        return None

    def _check_lease(self, request: Request, session: Session | None,
                     holder: Holder | None) -> None:
        """LEASED, or LEASE_EXPIRED for a stale epoch (1.2) or a lapsed 1.1 session."""
        self._leases.check(holder, request.lease)
        if request.lease is None and session is not None and session.lapsed:
            raise ProtocolError(ErrorCode.LEASE_EXPIRED,
                                "this session's lease ran out, so other sessions may have used "
                                "the device since; acquire the lease again (or release it) "
                                "before using the device")

    def _stop_lapsed(self) -> None:
        """A lease that ran out: its holder's ops in flight are stopped (a running run at its
        next chunk, LEASE_EXPIRED) and its session is marked lapsed."""
        for holder in self._leases.lapsed():
            session = self._sessions.get(holder[0])
            if session is not None and session.peer == holder[1]:
                session.lapsed = True
            stopped = [job for job in self._in_flight if job.holder == holder]
            for job in stopped:
                job.stop("lease_expired")
            log.warning("a lease ran out (its holder went quiet); %d of its ops in flight "
                        "stopped", len(stopped))

    def _answer_immediately(self, request: Request, args: dict[str, Any],
                            session: Session | None, holder: Holder | None) -> dict[str, Any]:
        match request.op:
            case "hello":
                return self.hello()
            case "ping":
                if args["request"] is None:
                    return {}
                state = "unknown" if session is None else session.state_of(args["request"])
                return {"request": state}
            case "status":
                return self.status(holder)
            case "shutdown":
                self._check_lease(request, session, holder)
                log.info("shutdown requested by a client")
                assert self._stop is not None
                self._stop.set()
            case "acquire":
                holder = _needs_session(holder, "acquire")
                granted = self._leases.acquire(holder, float(args["ttl_s"]), request.lease)
                if session is not None:
                    session.lapsed = False
                return granted
            case "release":
                if session is not None:
                    session.lapsed = False
                return {"released": holder is not None and self._leases.release(holder)}
            case "cancel":
                return {"request": self._cancel(_needs_session(holder, "cancel"),
                                                args["request"], session)}
            case "inject_fault":
                if not self.test_mode:
                    raise ProtocolError(ErrorCode.FORBIDDEN, "inject_fault is disabled: start "
                                        "the daemon with --test-mode to allow it",
                                        op="inject_fault")
                self.faults.configure(FaultConfig.from_wire(args))
                log.warning("a client set the injected faults: %s", self.faults.config.describe())
                return self.faults.status()
        return {}

    def _cancel(self, holder: Holder, request_id: int, session: Session | None) -> str:
        """Stop request ``request_id`` of ``holder``'s session; returns what it was:
        "running", "queued", "done" or "unknown"."""
        for job in self._in_flight:
            if job.holder == holder and job.request.id == request_id:
                job.stop("cancel")
                return "running" if job is self._running else "queued"
        return "unknown" if session is None else session.state_of(request_id)

    def status(self, holder: Holder | None = None) -> dict[str, Any]:
        """The device's state and the daemon's: queue, lease (as ``holder`` sees it), faults,
        counters, sessions."""
        running = self._running
        return {**self.spu.status(), "busy": running is not None,
                "busy_with": None if running is None else running.request.op,
                "queued": self._jobs.qsize(), "queued_bytes": self._queued_bytes,
                "uptime_s": time.monotonic() - self._started, "boot_id": self.boot_id,
                "lease": self._leases.status(holder), "faults": self.faults.status(),
                "counters": dict(self._counters),
                "sessions": {"known": len(self._sessions),
                             "forgotten": self._sessions.forgotten},
                "connections": self._connections.count,
                "reply_cache": {"entries": sum(reply is not None for s in self._sessions
                                                for reply in s.done.values()),
                                "bytes": self._sessions.bytes}}

    def hello(self) -> dict[str, Any]:
        """Identity, protocol version, capabilities, limits and configuration of this daemon."""
        return {
            "protocol": list(PROTOCOL_VERSION),
            "implementation": "spusim",
            "implementation_version": _implementation_version(),
            "boot_id": self.boot_id,
            "ops": sorted(OPS),
            "dtypes": list(ALLOWED_DTYPES),
            "integrators": list(INTEGRATORS),
            "limits": {"max_frame_bytes": self.config.max_frame_bytes,
                       "max_header_bytes": MAX_HEADER_BYTES, "max_arrays": MAX_ARRAYS,
                       "max_ndim": MAX_NDIM, "max_queued": QUEUE_LIMIT,
                       "max_queued_bytes": self.max_queued_bytes,
                       "max_session_chars": MAX_SESSION_CHARS, "max_lease_s": MAX_LEASE_S,
                       "reply_cache_entries": SESSION_REPLIES,
                       "reply_cache_bytes": SESSION_REPLY_BYTES,
                       "max_sessions": MAX_SESSIONS, "session_idle_s": SESSION_IDLE_S,
                       "max_run_ns": self.max_run_ns},
            "config": self.config.describe(),
            "seconds_per_cell_step": self._seconds_per_cell_step,
            "security": "null" if self._authenticator is None else "curve",
            "test_mode": self.test_mode,
        }

    def _reply(self, envelope: list[Any], request_id: int | None, *,
               result: dict[str, Any] | None = None, error: ProtocolError | None = None,
               faulty: bool = True) -> None:
        frames = encode_reply(request_id, self._device_info(), result=result, error=error)
        self._send(envelope, frames, faulty=faulty)

    def _send(self, envelope: list[Any], frames: list[Any], *, faulty: bool = True) -> None:
        """Send a reply, unless an injected transmission fault drops or delays it."""
        if faulty and self.faults.fires("drop_reply"):
            log.info("injected fault: dropped a reply")
            return
        if faulty and self.faults.fires("delay_reply"):
            due = time.monotonic() + self.faults.config.delay_ms / 1e3
            heapq.heappush(self._delayed, (due, next(self._order), [*envelope, *frames]))
            return
        self._transmit([*envelope, *frames])

    def _transmit(self, frames: list[Any]) -> None:
        self._counters["replies"] += 1
        send_frames(self._router, frames)

    def _send_delayed(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            self._transmit(heapq.heappop(self._delayed)[2])

    def _poll_ms(self) -> int:
        """How long to wait for traffic: until the next delayed reply is due, at most 100 ms."""
        if not self._delayed:
            return _POLL_MS
        return max(0, min(_POLL_MS, math.ceil((self._delayed[0][0] - time.monotonic()) * 1e3)))

    def _device_info(self) -> dict[str, Any]:
        return {"boot_id": self.boot_id, "sim_time_ns": self.spu.clock.now_ns}

    def _collect_replies(self) -> None:
        """Keep and send the replies the worker has produced (in execution order)."""
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                return
            try:
                self._deliver(done)
            except Exception:  # a daemon bug: log it, keep serving
                log.exception("failed to deliver the reply of %s id %s", done.job.request.op,
                              done.job.request.id)

    def _deliver(self, done: _Done) -> None:
        """Keep an executed request's reply and send it to it and to its repeats."""
        job = done.job
        if done.reset:  # the power-cycled device remembers no replies and no lease
            self._sessions.clear_replies()
            self._leases.clear()
        self._in_flight.remove(job)
        self._queued_bytes -= job.nbytes
        self._leases.touch(job.holder)
        waiters = [] if job.session is None else job.session.complete(job.request.id,
                                                                      done.frames)
        for envelope in (job.envelope, *waiters):
            self._send(envelope, done.frames)

    def _shut_down(self) -> None:
        """Stop the running op, answer the queued ones SHUTTING_DOWN in order, close."""
        log.info("stopping: cancelling the running op and refusing queued ones")
        for job in self._in_flight:
            job.stop("shutdown")
        try:
            self._jobs.put(None, timeout=5.0)  # behind the queued jobs: replies stay in order
        except queue.Full:
            log.error("the worker is stuck; queued requests get no reply")
        self._worker.join(timeout=5.0)
        self._collect_replies()
        self._send_delayed(math.inf)
        self._close_router()
        log.info("stopped")

    def _close_router(self) -> None:
        if hasattr(self, "_connections"):
            self._connections.close()
        self._router.close()
        if self._authenticator is not None:
            self._authenticator.stop()

    # --- worker thread ---------------------------------------------------------------------

    def _work(self) -> None:
        wake = self._context.socket(zmq.DEALER)
        wake.linger = 0  # a wake-up left unread at shutdown is moot: the replies are collected
        wake.routing_id = self._wake_id
        wake.connect(self._wake_endpoint)
        try:
            while (job := self._jobs.get()) is not None:
                try:
                    done = self._execute(job)
                except Exception as exc:  # a daemon bug: answer it, keep the worker alive
                    log.exception("op %s (id %s) failed", job.request.op, job.request.id)
                    self._running = None
                    done = _Done(job, encode_reply(job.request.id, self._device_info(),
                                                   error=_internal(job.request.op, exc)),
                                 reset=False)
                self._done.put(done)
                wake.send(b"")
        finally:
            wake.close()

    def _execute(self, job: _Job) -> _Done:
        request = job.request
        if job.cancel.is_set():  # stopped while queued: not executed
            return _Done(job, encode_reply(request.id, self._device_info(),
                                           error=_stopped(job, None)), reset=False)
        reset = self.faults.fires("reset")
        if reset:
            self._power_cycle()
        self._running = job
        started, clock_before = time.perf_counter(), self.spu.clock.now_ns
        result, arrays, error = None, None, None
        try:
            self._check_clock(request, job.args)
            result, arrays = self._dispatch(request, job.args, job.cancel)
        except ProtocolError as failure:
            error = failure
            if failure.code == ErrorCode.CANCELLED:
                error = _stopped(job, failure.details["completed_ns"])
                if "completed" in failure.details:  # solve_factored: the steps done before
                    error.details["completed"] = failure.details["completed"]
        except Exception as exc:  # a daemon bug: report it, keep serving
            log.exception("op %s (id %s) failed", request.op, request.id)
            error = _internal(request.op, exc)
        self._running = None  # before the reply, so a status that follows it sees idle
        frames = encode_reply(request.id, self._device_info(), result=result, error=error,
                              arrays=arrays)
        log.debug("op %s id %s: %.2f ms wall, +%d ns device time", request.op, request.id,
                  (time.perf_counter() - started) * 1e3, self.spu.clock.now_ns - clock_before)
        return _Done(job, frames, reset)

    def _check_clock(self, request: Request, args: dict[str, Any]) -> None:
        """CLOCK_OVERFLOW, before anything changes, if the op could carry the clock past
        ``CLOCK_LIMIT_NS``: a run by its duration, every op by the most any non-run op costs."""
        now = self.spu.clock.now_ns
        needed = (self._op_clock_ns * (_FUSED_OPS if request.op == "solve_factored" else 1)
                  + _analog_ns(request.op, args))
        if now + needed > CLOCK_LIMIT_NS:
            raise ProtocolError(ErrorCode.CLOCK_OVERFLOW, f"the simulated clock is at {now} "
                                f"ns; this op could advance it by {needed} ns, past "
                                f"{CLOCK_LIMIT_NS} ns, the most the protocol carries; "
                                "restart the daemon to reset the clock",
                                limit=CLOCK_LIMIT_NS, needed_ns=needed)

    def _power_cycle(self) -> None:
        """An injected device reset: a new chip state, clock and noise stream, a new boot id."""
        old = self.boot_id
        self.spu = EmulatedSPU(self.config)
        self.boot_id = uuid.uuid4().hex
        log.warning("injected fault: device reset (boot id %s -> %s)", old, self.boot_id)

    def _crash_during_run(self, args: dict[str, Any], cancel: threading.Event) -> None:
        """An injected crash: run half of the requested duration, then die without a reply."""
        interval = self.config.sample_interval_ns
        half = args["duration_ns"] // 2 // interval * interval
        try:
            if half:
                self.spu.run(**{**args, "duration_ns": half}, cancel=cancel)
        finally:
            log.critical("injected fault: the daemon crashes %d ns into a %d ns run", half,
                         args["duration_ns"])
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(CRASH_EXIT_CODE)

    def _dispatch(self, request: Request, args: dict[str, Any],
                  cancel: threading.Event) -> tuple[dict[str, Any], dict[str, Any]]:
        spu, arrays = self.spu, request.arrays
        match request.op:
            case "program":
                return spu.program(arrays["A"], **args)
            case "program_factored":
                return spu.program_factored(arrays["J"], arrays["H"], **args)
            case "set_bias":
                return spu.set_bias(arrays["b"])
            case "set_state":
                return spu.set_state(arrays["x"])
            case "run":
                if self.faults.fires("crash_run"):
                    self._crash_during_run(args, cancel)
                return spu.run(**args, cancel=cancel)
            case "read":
                result, read_arrays = spu.read(**args)
                return result, self.faults.corrupt_readout(read_arrays)
            case "reset":
                return spu.reset()
            case "solve_factored":
                result, solved = spu.solve_factored(arrays["J"], arrays["H"], arrays["b"],
                                                    x=arrays.get("x"), **args, cancel=cancel)
                return result, self.faults.corrupt_readout(solved)
        raise AssertionError(f"op {request.op} has no handler")


class _ConnectionWatch:
    """Counts the peers connected to ``socket`` (a ZeroMQ socket monitor, read by a thread of
    its own once started) and logs when new
    ones are refused (accept failed: no file descriptor left) or the count nears the process's
    open-files limit, which bounds it (device/cli.py raises that limit at start)."""

    _EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_ACCEPT_FAILED
    _LOG_EVERY_S = 10.0
    _CLOSE_CHECK_MS = 100  # how often the counting thread looks whether it should stop

    def __init__(self, socket: zmq.Socket[Any]) -> None:
        self._socket = socket
        self.events = socket.get_monitor_socket(self._EVENTS)
        self.count = 0
        self.limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 64
        self._warned = False
        self._refused = 0
        self._logged_at = -math.inf
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="spu-connections", daemon=True)

    def start(self) -> None:
        """Count in a thread of its own (events are rare; the serving loop then waits on its
        ROUTER alone)."""
        self._thread.start()

    def _watch(self) -> None:
        self.events.rcvtimeo = self._CLOSE_CHECK_MS
        try:
            while not self._closing.is_set():
                try:
                    event = recv_monitor_message(self.events)
                except zmq.Again:
                    continue
                self._take(event)
        finally:
            self.events.close(linger=0)

    def _take(self, event: dict[str, Any]) -> None:
        """Take one event into account."""
        if event["event"] == zmq.EVENT_ACCEPTED:
            self.count += 1
        elif event["event"] == zmq.EVENT_DISCONNECTED:
            self.count = max(0, self.count - 1)
        else:
            self._refused += 1
            self._log_refusal(int(event["value"]))
        if not self._warned and self.count >= 0.9 * self.limit:
            log.warning("%d peers connected: near this process's limit of about %d (open "
                        "files); idle peers keep their connection", self.count, self.limit)
        self._warned = self.count >= 0.9 * self.limit

    def _log_refusal(self, errno: int) -> None:
        now = time.monotonic()
        if now - self._logged_at >= self._LOG_EVERY_S:
            log.error("refusing new connections (%s): %d peers connected, about %d allowed by "
                      "the open-files limit; %d refused so far", os.strerror(errno), self.count,
                      self.limit, self._refused)
            self._logged_at = now

    def close(self) -> None:
        self._closing.set()
        self._socket.disable_monitor()
        if self._thread.ident is None:  # never started
            self.events.close(linger=0)
        else:
            self._thread.join()


def _op_clock_bound_ns(config: DeviceConfig) -> int:
    """The most simulated time any op but a run's evolution can cost on this device: an
    upload of 3 cells^2 values and a readout of 2 cells^2 + cells values (mean, second and
    lag moments) (ns)."""
    timing, cells = config.timing, config.cells
    return (sum(timing.upload(3 * cells**2, cells).values())
            + sum(timing.readout(cells, 2 * cells**2 + cells).values()))


def _needs_session(holder: Holder | None, op: str) -> Holder:
    if holder is None:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"{op} needs a 'session' in the request "
                            "header", field="session")
    return holder


def _stopped(job: _Job, completed_ns: int | None) -> ProtocolError:
    """The answer of a stopped op: why (``job.reason``), and how much of a run was done
    (``completed_ns``; None: it was stopped before it began)."""
    code = _STOPPED[job.reason]
    words = {"shutdown": "the daemon is shutting down", "cancel": "a cancel request",
             "lease_expired": "its session's lease ran out"}[job.reason]
    if completed_ns is None:
        return ProtocolError(code, f"{job.request.op} was not executed: {words}",
                             reason=job.reason, completed_ns=0)
    return ProtocolError(code, f"{job.request.op} stopped after {completed_ns} ns of its "
                         f"{_analog_ns(job.request.op, job.args)} ns: {words}; the samples "
                         "taken so far are in the averager", reason=job.reason,
                         completed_ns=completed_ns)


# Ops other than runs in one solve_factored: program_factored, set_bias, set_state, read.
_FUSED_OPS = 4


def _analog_ns(op: str, args: dict[str, Any]) -> int:
    """The analog time an op runs the device for, ns: a run's, or a solve_factored's runs."""
    if op == "run":
        return int(args["duration_ns"])
    if op == "solve_factored":
        return int(args["delay_ns"] + args["burn_ns"] + args["record_ns"])
    return 0


def _internal(what: str, exc: Exception) -> ProtocolError:
    return ProtocolError(ErrorCode.INTERNAL, f"internal error in {what}: {type(exc).__name__}: "
                         f"{exc}")
