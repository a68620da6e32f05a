"""The daemon's network side: one ROUTER socket, one device worker thread.

The main thread owns the ROUTER socket. It decodes and validates every request, answers
``hello``, ``ping``, ``status`` and ``shutdown`` itself (so they stay answerable during a long
run), and queues device ops for the worker thread, which owns the :class:`EmulatedSPU` and sends
its replies back through an inproc PAIR socket for the main thread to forward. Nothing a peer
sends can stop the loop: every defect becomes a typed error reply.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import zmq

from device.config import DeviceConfig
from device.spu import EmulatedSPU
from protocol import (
    ALLOWED_DTYPES,
    INTEGRATORS,
    MAX_ARRAYS,
    MAX_HEADER_BYTES,
    MAX_NDIM,
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
_IMMEDIATE_OPS = frozenset({"hello", "ping", "status", "shutdown"})
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


class DeviceServer:
    """Serves one :class:`EmulatedSPU` on ``bind`` until :meth:`serve`'s stop event is set.

    ``seconds_per_cell_step`` is the kernel speed measured at start-up (wall time per N^2
    element-step); hosts use it to size their timeouts, never as device time.
    """

    def __init__(self, config: DeviceConfig, bind: str, seconds_per_cell_step: float,
                 context: zmq.Context[Any] | None = None) -> None:
        self.config = config
        self.boot_id = uuid.uuid4().hex
        self.spu = EmulatedSPU(config)
        self._seconds_per_cell_step = seconds_per_cell_step
        self._context = context or zmq.Context.instance()
        self._router = self._context.socket(zmq.ROUTER)
        self._router.linger = 500
        # libzmq drops (and disconnects) a peer whose frame exceeds this, before allocating it.
        self._router.maxmsgsize = config.max_frame_bytes
        self._router.router_mandatory = False
        self._router.bind(bind)
        self.endpoint = self._router.last_endpoint.decode()
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
                ready = dict(poller.poll(_POLL_MS))
                if self._replies in ready:
                    self._forward_replies()
                if self._router in ready:
                    self._receive()
        finally:
            self._shut_down()

    def _receive(self) -> None:
        """Take one request off the ROUTER socket and answer or queue it; never raises."""
        frames = self._router.recv_multipart(copy=False)
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
        if request.op in _IMMEDIATE_OPS:
            try:
                result = self._answer_immediately(request.op)
            except Exception as exc:  # a daemon bug: report it, keep serving
                log.exception("op %s (id %s) failed", request.op, request.id)
                self._reply(envelope, request.id, error=_internal(request.op, exc))
                return
            self._reply(envelope, request.id, result=result)
            return
        try:
            self._jobs.put_nowait(_Job(envelope, request, args))
        except queue.Full:
            self._reply(envelope, request.id, error=ProtocolError(
                ErrorCode.BUSY, f"the device has {QUEUE_LIMIT} operations queued; retry later",
                queued=QUEUE_LIMIT))

    def _answer_immediately(self, op: str) -> dict[str, Any]:
        if op == "hello":
            return self.hello()
        if op == "status":
            return {**self.spu.status(), "busy": self._busy_with is not None,
                    "busy_with": self._busy_with, "queued": self._jobs.qsize(),
                    "uptime_s": time.monotonic() - self._started, "boot_id": self.boot_id}
        if op == "shutdown":
            log.info("shutdown requested by a client")
            assert self._stop is not None
            self._stop.set()
        return {}

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
                       "max_ndim": MAX_NDIM, "max_queued": QUEUE_LIMIT},
            "config": self.config.describe(),
            "seconds_per_cell_step": self._seconds_per_cell_step,
        }

    def _reply(self, envelope: list[Any], request_id: int | None, *,
               result: dict[str, Any] | None = None, error: ProtocolError | None = None,
               arrays: dict[str, Any] | None = None, socket: zmq.Socket[Any] | None = None) -> None:
        frames = encode_reply(request_id, self._device_info(), result=result, error=error,
                              arrays=arrays)
        (socket or self._router).send_multipart([*envelope, *frames], copy=False)

    def _device_info(self) -> dict[str, Any]:
        return {"boot_id": self.boot_id, "sim_time_ns": self.spu.clock.now_ns}

    def _forward_replies(self) -> None:
        while True:
            try:
                frames = self._replies.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._router.send_multipart(frames, copy=False)

    def _shut_down(self) -> None:
        """Stop the running op, answer the queued ones SHUTTING_DOWN in order, close."""
        log.info("stopping: cancelling the running op and refusing queued ones")
        self._cancel.set()
        try:
            self._jobs.put(None, timeout=5.0)  # behind the queued jobs: replies stay in order
        except queue.Full:
            log.error("the worker is stuck; queued requests get no reply")
        self._worker.join(timeout=5.0)
        self._forward_replies()
        self._replies.close()
        self._router.close()
        log.info("stopped")

    # --- worker thread ---------------------------------------------------------------------

    def _work(self) -> None:
        replies = self._context.socket(zmq.PAIR)
        replies.linger = 1000
        replies.connect(self._replies_endpoint)
        try:
            while (job := self._jobs.get()) is not None:
                self._execute(job, replies)
        finally:
            replies.close()

    def _execute(self, job: _Job, replies: zmq.Socket[Any]) -> None:
        request = job.request
        if self._cancel.is_set():
            self._reply(job.envelope, request.id, socket=replies, error=ProtocolError(
                ErrorCode.SHUTTING_DOWN,
                "the daemon is shutting down; the request was not executed"))
            return
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
        self._reply(job.envelope, request.id, result=result, arrays=arrays, error=error,
                    socket=replies)
        log.debug("op %s id %s: %.2f ms wall, +%d ns device time", request.op, request.id,
                  (time.perf_counter() - started) * 1e3, self.spu.clock.now_ns - clock_before)

    def _dispatch(self, request: Request, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        spu, arrays = self.spu, request.arrays
        match request.op:
            case "program":
                return spu.program(arrays["A"], **args)
            case "set_bias":
                return spu.set_bias(arrays["b"])
            case "set_state":
                return spu.set_state(arrays["x"])
            case "run":
                return spu.run(**args, cancel=self._cancel)
            case "read":
                return spu.read(**args)
            case "reset":
                return spu.reset()
        raise AssertionError(f"op {request.op} has no handler")


def _internal(what: str, exc: Exception) -> ProtocolError:
    return ProtocolError(ErrorCode.INTERNAL, f"internal error in {what}: {type(exc).__name__}: "
                         f"{exc}")
