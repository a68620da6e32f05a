"""The daemon's network side: one ROUTER socket, one device worker thread.

The main thread owns the ROUTER socket and the per-session state (reply cache, lease: see
device/sessions.py). It decodes and validates every request, answers the immediate ops
(``hello``, ``ping``, ``status``, ``shutdown``, ``acquire``, ``release``, ``inject_fault``)
itself, so they stay answerable during a long run, and queues device ops for the worker thread,
which owns the :class:`EmulatedSPU`. The worker hands each reply back (a queue, plus a wake-up
on an inproc PAIR socket); the main thread caches it and sends it. Every reply leaves through
:meth:`DeviceServer._send`, where injected transmission faults strike (device/faults.py).
Nothing a peer sends can stop the loop: every defect becomes a typed error reply.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import zmq

from spusim.device.config import DeviceConfig
from spusim.device.faults import FaultConfig, FaultInjector
from spusim.device.security import CurveServerKeys, secure
from spusim.device.sessions import Claim, Key, LeaseTable, ReplyCache
from spusim.device.spu import EmulatedSPU
from spusim.protocol.frames import recv_frames, send_frames
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
CRASH_EXIT_CODE = 70  # exit status of a daemon killed by an injected crash_run fault
_IMMEDIATE_OPS = frozenset({"hello", "ping", "status", "shutdown", "acquire", "release",
                            "inject_fault"})
_POLL_MS = 100


def _implementation_version() -> str:
    try:
        return metadata.version("spusim")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class _Job:
    envelope: list[Any]  # routing frames to put back in front of the reply
    request: Request
    args: dict[str, Any]

    @property
    def key(self) -> Key | None:
        """The reply cache's key, if the request carries a session."""
        session = self.request.session
        return None if session is None else (session, self.request.id)


@dataclass(frozen=True)
class _Done:
    """An executed job's reply frames, handed from the worker to the main thread."""

    job: _Job
    frames: list[Any]
    reset: bool  # an injected reset power-cycled the device before the job executed


class DeviceServer:
    """Serves one :class:`EmulatedSPU` on ``bind`` until :meth:`serve`'s stop event is set.

    ``seconds_per_cell_step`` is the kernel speed measured at start-up (wall time per N^2
    element-step); hosts use it to size their timeouts, never as device time. ``faults``: the
    faults to inject from the start; ``test_mode`` lets clients change them (``inject_fault``);
    ``curve``: require CURVE authentication with these keys.
    """

    def __init__(self, config: DeviceConfig, bind: str, seconds_per_cell_step: float,
                 context: zmq.Context[Any] | None = None, *, faults: FaultConfig | None = None,
                 test_mode: bool = False, curve: CurveServerKeys | None = None) -> None:
        self.config = config
        self.boot_id = uuid.uuid4().hex
        self.spu = EmulatedSPU(config)
        self.faults = FaultInjector(faults)
        self.test_mode = test_mode
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
        self._cache = ReplyCache()
        self._leases = LeaseTable()
        self._counters = {"requests": 0, "replies": 0, "cache_hits": 0}
        self._delayed: list[tuple[float, int, list[Any]]] = []  # (due, order, frames) heap
        self._order = itertools.count()
        self._done: queue.SimpleQueue[_Done] = queue.SimpleQueue()
        self._replies = self._context.socket(zmq.PAIR)
        self._replies.linger = 0
        self._replies_endpoint = f"inproc://spu-replies-{self.boot_id}"
        self._replies.bind(self._replies_endpoint)
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._cancel = threading.Event()
        self._busy_with: str | None = None
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
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._replies, zmq.POLLIN)
        log.info("serving on %s (boot id %s)", self.endpoint, self.boot_id)
        try:
            while not stop.is_set():
                ready = dict(poller.poll(self._poll_ms()))
                if self._replies in ready:
                    self._collect_replies()
                if self._router in ready:
                    self._receive()
                self._send_delayed(time.monotonic())
        finally:
            self._shut_down()

    def _receive(self) -> None:
        """Take one request off the ROUTER socket and answer or queue it; never raises."""
        frames = recv_frames(self._router, copied=1)  # the routing id
        self._counters["requests"] += 1
        envelope, body = frames[:1], frames[1:]
        if body and memoryview(body[0]).nbytes == 0:  # a REQ peer's empty delimiter
            envelope, body = frames[:2], frames[2:]
        try:
            self._handle(envelope, body)
        except Exception as exc:  # a daemon bug: report it, keep serving
            log.exception("failed to handle a request")
            self._reply(envelope, None, error=_internal("a request", exc))

    def _handle(self, envelope: list[Any], body: list[Any]) -> None:
        request_id = None
        try:
            request = decode_request(body)
            request_id = request.id
            args = spec_for(request.op).validate(request.args, request.arrays)
        except MalformedRequest as error:
            self._reply(envelope, error.request_id, error=error)
            return
        except ProtocolError as error:
            self._reply(envelope, request_id, error=error)
            return
        self._leases.touch(request.session)
        if request.op in _IMMEDIATE_OPS:
            # The test-control op's own reply is never subject to the faults it configures.
            faulty = request.op != "inject_fault"
            try:
                result = self._answer_immediately(request, args)
            except ProtocolError as error:
                self._reply(envelope, request.id, error=error, faulty=faulty)
                return
            except Exception as exc:  # a daemon bug: report it, keep serving
                log.exception("op %s (id %s) failed", request.op, request.id)
                self._reply(envelope, request.id, error=_internal(request.op, exc))
                return
            self._reply(envelope, request.id, result=result, faulty=faulty)
            return
        self._accept(_Job(envelope, request, args))

    def _accept(self, job: _Job) -> None:
        """A device op: answer a repeat from the reply cache, else queue it or refuse it."""
        key = job.key
        if key is not None:
            claim, cached = self._cache.claim(key, job.envelope)
            if claim in (Claim.CACHED, Claim.PENDING):
                self._counters["cache_hits"] += 1
                log.debug("op %s id %s repeated: answered from the reply cache", job.request.op,
                          job.request.id)
                if cached is not None:
                    self._send(job.envelope, cached)
                return  # PENDING: the reply goes to this requester too when it is ready
            if claim is Claim.EVICTED:
                self._reply(job.envelope, job.request.id, error=ProtocolError(
                    ErrorCode.DUPLICATE_REQUEST,
                    f"request {job.request.id} of this session was executed already and its "
                    "reply is no longer cached; it was not executed again",
                    id=job.request.id))
                return
        refusal = self._enqueue(job)
        if refusal is not None:
            if key is not None:
                self._cache.abandon(key)
            self._reply(job.envelope, job.request.id, error=refusal)

    def _enqueue(self, job: _Job) -> ProtocolError | None:
        """Queue ``job`` for the worker, or the error that refuses it (lease, busy)."""
        try:
            self._leases.check(job.request.session)
        except ProtocolError as error:
            return error
        if self.faults.fires("busy"):
            log.info("injected fault: answering %s id %s BUSY", job.request.op, job.request.id)
            return ProtocolError(ErrorCode.BUSY, "the device is busy; retry later",
                                 queued=self._jobs.qsize())
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            return ProtocolError(ErrorCode.BUSY, f"the device has {QUEUE_LIMIT} operations "
                                 "queued; retry later", queued=QUEUE_LIMIT)
        self._leases.started(job.request.session)
        return None

    def _answer_immediately(self, request: Request, args: dict[str, Any]) -> dict[str, Any]:
        session = request.session
        match request.op:
            case "hello":
                return self.hello()
            case "status":
                return self.status(session)
            case "shutdown":
                self._leases.check(session)
                log.info("shutdown requested by a client")
                assert self._stop is not None
                self._stop.set()
            case "acquire":
                if session is None:
                    raise ProtocolError(ErrorCode.BAD_MESSAGE, "acquire needs a 'session' in "
                                        "the request header", field="session")
                return self._leases.acquire(session, float(args["ttl_s"]))
            case "release":
                return {"released": session is not None and self._leases.release(session)}
            case "inject_fault":
                if not self.test_mode:
                    raise ProtocolError(ErrorCode.FORBIDDEN, "inject_fault is disabled: start "
                                        "the daemon with --test-mode to allow it",
                                        op="inject_fault")
                self.faults.configure(FaultConfig.from_wire(args))
                log.warning("a client set the injected faults: %s", self.faults.config.describe())
                return self.faults.status()
        return {}

    def status(self, session: str | None = None) -> dict[str, Any]:
        """The device's state and the daemon's: queue, lease (as ``session`` sees it), faults,
        counters."""
        return {**self.spu.status(), "busy": self._busy_with is not None,
                "busy_with": self._busy_with, "queued": self._jobs.qsize(),
                "uptime_s": time.monotonic() - self._started, "boot_id": self.boot_id,
                "lease": self._leases.status(session), "faults": self.faults.status(),
                "counters": dict(self._counters),
                "reply_cache": {"entries": len(self._cache), "bytes": self._cache.bytes}}

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
                       "max_session_chars": MAX_SESSION_CHARS, "max_lease_s": MAX_LEASE_S,
                       "reply_cache_entries": self._cache.max_entries,
                       "reply_cache_bytes": self._cache.max_bytes},
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
        """Cache and send the replies the worker has produced (in execution order)."""
        while True:
            try:
                self._replies.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
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
        """Cache an executed request's reply and send it to it and to its repeats."""
        if done.reset:  # the power-cycled device remembers no replies and no lease
            self._cache.clear()
            self._leases.clear()
        session, key = done.job.request.session, done.job.key
        self._leases.finished(session)
        waiters = [] if key is None else self._cache.complete(key, done.frames)
        for envelope in (done.job.envelope, *waiters):
            self._send(envelope, done.frames)

    def _shut_down(self) -> None:
        """Stop the running op, answer the queued ones SHUTTING_DOWN in order, close."""
        log.info("stopping: cancelling the running op and refusing queued ones")
        self._cancel.set()
        try:
            self._jobs.put(None, timeout=5.0)  # behind the queued jobs: replies stay in order
        except queue.Full:
            log.error("the worker is stuck; queued requests get no reply")
        self._worker.join(timeout=5.0)
        self._collect_replies()
        self._send_delayed(math.inf)
        self._replies.close()
        self._close_router()
        log.info("stopped")

    def _close_router(self) -> None:
        self._router.close()
        if self._authenticator is not None:
            self._authenticator.stop()

    # --- worker thread ---------------------------------------------------------------------

    def _work(self) -> None:
        wake = self._context.socket(zmq.PAIR)
        wake.linger = 1000
        wake.connect(self._replies_endpoint)
        try:
            while (job := self._jobs.get()) is not None:
                try:
                    done = self._execute(job)
                except Exception as exc:  # a daemon bug: answer it, keep the worker alive
                    log.exception("op %s (id %s) failed", job.request.op, job.request.id)
                    self._busy_with = None
                    done = _Done(job, encode_reply(job.request.id, self._device_info(),
                                                   error=_internal(job.request.op, exc)),
                                 reset=False)
                self._done.put(done)
                wake.send(b"")
        finally:
            wake.close()

    def _execute(self, job: _Job) -> _Done:
        request = job.request
        if self._cancel.is_set():
            return _Done(job, encode_reply(request.id, self._device_info(), error=ProtocolError(
                ErrorCode.SHUTTING_DOWN,
                "the daemon is shutting down; the request was not executed")), reset=False)
        reset = self.faults.fires("reset")
        if reset:
            self._power_cycle()
        self._busy_with = request.op
        started, clock_before = time.perf_counter(), self.spu.clock.now_ns
        result, arrays, error = None, None, None
        try:
            result, arrays = self._dispatch(request, job.args)
        except ProtocolError as failure:
            error = failure
        except Exception as exc:  # a daemon bug: report it, keep serving
            log.exception("op %s (id %s) failed", request.op, request.id)
            error = _internal(request.op, exc)
        self._busy_with = None  # before the reply, so a status that follows it sees idle
        frames = encode_reply(request.id, self._device_info(), result=result, error=error,
                              arrays=arrays)
        log.debug("op %s id %s: %.2f ms wall, +%d ns device time", request.op, request.id,
                  (time.perf_counter() - started) * 1e3, self.spu.clock.now_ns - clock_before)
        return _Done(job, frames, reset)

    def _power_cycle(self) -> None:
        """An injected device reset: a new chip state, clock and noise stream, a new boot id."""
        old = self.boot_id
        self.spu = EmulatedSPU(self.config)
        self.boot_id = uuid.uuid4().hex
        log.warning("injected fault: device reset (boot id %s -> %s)", old, self.boot_id)

    def _crash_during_run(self, args: dict[str, Any]) -> None:
        """An injected crash: run half of the requested duration, then die without a reply."""
        interval = self.config.sample_interval_ns
        half = args["duration_ns"] // 2 // interval * interval
        try:
            if half:
                self.spu.run(**{**args, "duration_ns": half}, cancel=self._cancel)
        finally:
            log.critical("injected fault: the daemon crashes %d ns into a %d ns run", half,
                         args["duration_ns"])
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(CRASH_EXIT_CODE)

    def _dispatch(self, request: Request, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
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
                    self._crash_during_run(args)
                return spu.run(**args, cancel=self._cancel)
            case "read":
                result, read_arrays = spu.read(**args)
                return result, self.faults.corrupt_readout(read_arrays)
            case "reset":
                return spu.reset()
            case "solve_factored":
                result, solved = spu.solve_factored(arrays["J"], arrays["H"], arrays["b"],
                                                    x=arrays.get("x"), **args,
                                                    cancel=self._cancel)
                return result, self.faults.corrupt_readout(solved)
        raise AssertionError(f"op {request.op} has no handler")


def _internal(what: str, exc: Exception) -> ProtocolError:
    return ProtocolError(ErrorCode.INTERNAL, f"internal error in {what}: {type(exc).__name__}: "
                         f"{exc}")
