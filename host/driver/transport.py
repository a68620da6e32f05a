"""Request/reply over ZeroMQ to one daemon: a DEALER socket with the Lazy Pirate pattern, and
heartbeats while a call waits (the zguide's Paranoid Pirate).

Each call carries a fresh request id, the connection's session id (protocol 1.1) and which
sending it is (``attempt``, 1.2); replies with another id (late answers to abandoned requests)
are dropped. After a timeout the socket is closed and recreated, and the call may be sent again
under the same id and session: the daemon then answers from the session's kept replies instead
of executing it twice. Which calls are resent is the caller's choice (``retries``).

With ``heartbeat`` (a 1.2 daemon), a call that waits longer than ``heartbeat_s`` sends a
``ping`` asking about its request every ``heartbeat_s``: while the daemon says it is queued or
running, the call's time-out is pushed back (a long run never times out while the daemon works
on it); "done" or "unknown" (a reply lost on the way) resends it at once; and a daemon silent
for ``liveness_s`` is taken for dead: :class:`DeviceTimeout` at once, whatever the op's length.
Ctrl-C while waiting asks the daemon to cancel the request. With :class:`CurveClientKeys` every
socket authenticates and encrypts with CURVE.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.auth

from spusim.driver.errors import DeviceError, DeviceTimeout
from spusim.protocol import ProtocolError, Reply, decode_reply, encode_request
from spusim.protocol.frames import recv_frames, send_frames


@dataclass(frozen=True)
class CurveClientKeys:
    """CURVE keys of a client (ZeroMQ certificates, as ``zmq.auth.create_certificates`` writes).

    server_key_file: the daemon's public certificate (``NAME.key``).
    client_key_file: this client's certificate with its secret key (``NAME.key_secret``); its
        public half must be in the daemon's ``--curve-public-keys-dir``.
    """

    server_key_file: Path | str
    client_key_file: Path | str

    def load(self) -> tuple[bytes, bytes, bytes]:
        """(server public, client public, client secret) keys, Z85-encoded."""
        server_public, _ = zmq.auth.load_certificate(self.server_key_file)
        client_public, client_secret = zmq.auth.load_certificate(self.client_key_file)
        if client_secret is None:
            raise ValueError(f"{self.client_key_file} holds no secret key")
        return server_public, client_public, client_secret


class Transport:
    """One client connection to ``endpoint`` (e.g. ``tcp://127.0.0.1:5555``).

    session: the id the daemon knows this client by (kept replies, lease); a fresh random one
    (128 bits) by default: without CURVE it is the client's only credential, so keep it
    private. curve: authenticate with CURVE (required by daemons reachable off loopback).
    heartbeat_s, liveness_s: the heartbeat interval and the silence after which the daemon is
    taken for dead (wall seconds), for calls made with ``heartbeat``.
    """

    heartbeat_s = 1.0
    liveness_s = 4.0

    def __init__(self, endpoint: str, context: zmq.Context[Any] | None = None, *,
                 session: str | None = None, curve: CurveClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self.session = session or uuid.uuid4().hex
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket[Any] | None = None
        self._rcvtimeo = -1  # the socket's receive timeout, ms (kept to set it only on change)
        self._ids = itertools.count(1)
        self._curve = None if curve is None else curve.load()
        self.sent = 0  # requests sent, every attempt counted

    def call(self, op: str, args: Mapping[str, Any] | None = None,
             arrays: Mapping[str, np.ndarray] | None = None, *, timeout: float,
             retries: int = 0, lease: int | None = None, heartbeat: bool = False,
             heartbeat_s: float | None = None) -> Reply:
        """Send one request and wait for its reply.

        ``timeout`` (s) applies to each attempt (pushed back while heartbeats say the daemon
        works on it); ``retries`` extra attempts follow a timeout or a lost reply (pass 0 for
        calls that must not run twice); ``lease``: the lease epoch held (1.2); ``heartbeat``:
        send heartbeats (a 1.2 daemon), every ``heartbeat_s`` (default: the class's).
        Raises :class:`DeviceTimeout`.
        """
        request_id = next(self._ids)
        interval = min(heartbeat_s or self.heartbeat_s, timeout / 2) if heartbeat else None
        for attempt in range(1, 2 + retries):
            frames = encode_request(request_id, op, args, arrays, session=self.session,
                                    attempt=attempt, lease=lease)
            socket = self._connected()
            send_frames(socket, frames)
            self.sent += 1
            try:
                reply = self._await(socket, request_id, timeout, interval)
            except KeyboardInterrupt:
                if heartbeat:  # ask the daemon to stop it; do not wait for the answer
                    self._send(socket, "cancel", {"request": request_id})
                raise
            except _Silent as silent:
                self._discard_socket()
                raise DeviceTimeout("TIMEOUT", f"the daemon at {self.endpoint} answered "
                                    f"neither {op!r} nor heartbeats for {silent.args[0]:.3g} s: "
                                    "it is taken for dead",
                                    {"op": op, "timeout_s": timeout, "attempts": attempt,
                                     "silent_s": silent.args[0]}) from None
            if reply is not None:
                return reply
            self._discard_socket()
        raise DeviceTimeout("TIMEOUT",
                            f"no reply to {op!r} from {self.endpoint} within {timeout:.3g} s"
                            f"{f' (tried {1 + retries} times)' if retries else ''}",
                            {"op": op, "timeout_s": timeout, "attempts": 1 + retries})

    def close(self) -> None:
        self._discard_socket()

    def _await(self, socket: zmq.Socket[Any], request_id: int, timeout: float,
               heartbeat_s: float | None) -> Reply | None:
        """The reply to ``request_id``, or None: timed out, or (heartbeats) the daemon says
        the request is not in progress, so its reply was lost. Raises :class:`_Silent`."""
        heard = started = time.monotonic()
        deadline = started + timeout
        beat = started + heartbeat_s if heartbeat_s else math.inf
        beats: set[int] = set()
        while (now := time.monotonic()) < deadline:
            if heartbeat_s and now - heard > self.liveness_s:
                raise _Silent(now - heard)
            if now >= beat:
                beats.add(self._send(socket, "ping", {"request": request_id}))
                beat = now + heartbeat_s  # type: ignore[operator]
            wake = min(deadline, beat, heard + self.liveness_s if heartbeat_s else math.inf)
            # a blocking receive under the socket's timeout (set only when it changes): cheaper
            # per round trip than building a poller and polling before each receive
            timeout_ms = max(1, math.ceil((wake - now) * 1000))
            if timeout_ms != self._rcvtimeo:
                socket.rcvtimeo = self._rcvtimeo = timeout_ms
            try:
                frames = recv_frames(socket)
            except zmq.Again:
                continue
            try:
                reply = decode_reply(frames)
            except ProtocolError as error:
                raise DeviceError(error.code, f"malformed reply from {self.endpoint}: "
                                  f"{error.message}") from None
            heard = time.monotonic()
            # id None: the daemon could not read our request's id, so it answers the one in flight.
            if reply.id in (request_id, None):
                return reply
            if reply.id in beats:
                if reply.result.get("request") == "pending":
                    deadline = max(deadline, heard + timeout)
                elif reply.result.get("request") in ("done", "unknown"):
                    return None  # the reply was lost (or the request): resend
        return None

    def _send(self, socket: zmq.Socket[Any], op: str, args: Mapping[str, Any]) -> int:
        """Send a side request (heartbeat, cancel) of this session; returns its id."""
        request_id = next(self._ids)
        socket.send_multipart(encode_request(request_id, op, args, session=self.session))
        self.sent += 1
        return request_id

    def _connected(self) -> zmq.Socket[Any]:
        if self._socket is None:
            self._socket = self._context.socket(zmq.DEALER)
            self._socket.linger = 0
            if self._curve is not None:
                server_public, public, secret = self._curve
                self._socket.curve_serverkey = server_public
                self._socket.curve_publickey = public
                self._socket.curve_secretkey = secret
            self._socket.connect(self.endpoint)
            self._rcvtimeo = -1
        return self._socket

    def _discard_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None


class _Silent(Exception):
    """The daemon answered nothing, heartbeats included, for ``args[0]`` seconds."""
