"""Request/reply over ZeroMQ to one daemon: a DEALER socket with the Lazy Pirate pattern.

Each call carries a fresh request id; replies with another id (late answers to abandoned
requests) are dropped. After a timeout the socket is closed and recreated, and an idempotent
call is sent again under the same id; a non-idempotent one is not retried.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import zmq

from host.errors import DeviceError, DeviceTimeout
from protocol import ProtocolError, Reply, decode_reply, encode_request


class Transport:
    """One client connection to ``endpoint`` (e.g. ``tcp://127.0.0.1:5555``)."""

    def __init__(self, endpoint: str, context: zmq.Context[Any] | None = None) -> None:
        self.endpoint = endpoint
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket[Any] | None = None
        self._ids = itertools.count(1)

    def call(self, op: str, args: Mapping[str, Any] | None = None,
             arrays: Mapping[str, np.ndarray] | None = None, *, timeout: float,
             retries: int = 0) -> Reply:
        """Send one request and wait for its reply.

        ``timeout`` (s) applies to each attempt; ``retries`` extra attempts follow a timeout
        (pass 0 for calls that must not run twice). Raises :class:`DeviceTimeout`.
        """
        request_id = next(self._ids)
        frames = encode_request(request_id, op, args, arrays)
        for _ in range(1 + retries):
            socket = self._connected()
            socket.send_multipart(frames, copy=False)
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
        while (remaining := deadline - time.monotonic()) > 0:
            if not socket.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                continue
            frames = socket.recv_multipart(copy=False)
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
            self._socket.connect(self.endpoint)
        return self._socket

    def _discard_socket(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
