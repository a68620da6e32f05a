"""Request/reply over ZeroMQ to one daemon: a DEALER socket with the Lazy Pirate pattern.

Each call carries a fresh request id and the connection's session id (protocol 1.1); replies
with another id (late answers to abandoned requests) are dropped. After a timeout the socket is
closed and recreated, and the call may be sent again under the same id and session: a 1.1
daemon then answers from its reply cache instead of executing it twice. Which calls are resent
is the caller's choice (``retries``). With :class:`CurveClientKeys` every socket authenticates
and encrypts with CURVE.
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

    session: the id the daemon knows this client by (reply cache, lease); a fresh random one
    by default. curve: authenticate with CURVE (required by daemons reachable off loopback).
    """

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
             retries: int = 0) -> Reply:
        """Send one request and wait for its reply.

        ``timeout`` (s) applies to each attempt; ``retries`` extra attempts follow a timeout
        (pass 0 for calls that must not run twice). Raises :class:`DeviceTimeout`.
        """
        request_id = next(self._ids)
        frames = encode_request(request_id, op, args, arrays, session=self.session)
        for _ in range(1 + retries):
            socket = self._connected()
            send_frames(socket, frames)
            self.sent += 1
            reply = self._await(socket, request_id, time.monotonic() + timeout)
            if reply is not None:
                return reply
            self._discard_socket()
        raise DeviceTimeout("TIMEOUT",
                            f"no reply to {op!r} from {self.endpoint} within {timeout:.3g} s"
                            f"{f' (tried {1 + retries} times)' if retries else ''}",
                            {"op": op, "timeout_s": timeout, "attempts": 1 + retries})

    def close(self) -> None:
        self._discard_socket()

    def _await(self, socket: zmq.Socket[Any], request_id: int, deadline: float) -> Reply | None:
        """The reply to ``request_id``, or None at ``deadline``: a blocking receive with the
        socket's timeout (cheaper per call than a poll before each receive)."""
        while (remaining := deadline - time.monotonic()) > 0:
            timeout_ms = max(1, math.ceil(remaining * 1000))
            if timeout_ms != self._rcvtimeo:
                socket.rcvtimeo = self._rcvtimeo = timeout_ms
            try:
                frames = recv_frames(socket, copied=0)
            except zmq.Again:
                return None
            try:
                reply = decode_reply(frames)
            except ProtocolError as error:
                raise DeviceError(error.code, f"malformed reply from {self.endpoint}: "
                                  f"{error.message}") from None
            # id None: the daemon could not read our request's id, so it answers the one in flight.
            if reply.id in (request_id, None):
                return reply
        return None

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
