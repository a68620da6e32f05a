"""A message's frames onto and off a ZeroMQ socket, at pyzmq's lowest per-frame cost.

pyzmq's ``send_multipart``/``recv_multipart`` with ``copy=False`` wrap every frame as a
``zmq.Frame`` (and go through flag enums per frame), a few microseconds of CPU per message
beyond a plain copied send (docs/performance.md); a small frame (a routing id, a msgpack
header) is cheaper copied. Arrays are sent and
received as zero-copy frames still, so a large upload is never copied in Python, and so is any
received frame whose size is not bounded before it is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq

# Frames of at least this many bytes travel without a copy.
ZERO_COPY_BYTES = 64 * 1024
_MORE = int(zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)


def send_frames(socket: zmq.Socket[Any], frames: Sequence[Any]) -> None:
    """Send ``frames`` (bytes, zmq.Frame or any buffer: ndarrays) as one message."""
    last = len(frames) - 1
    for k, frame in enumerate(frames):
        socket.send(frame, _MORE if k < last else 0,
                    copy=memoryview(frame).nbytes < ZERO_COPY_BYTES)


def recv_frames(socket: zmq.Socket[Any], copied: int) -> list[Any]:
    """One message's frames: the first ``copied`` as bytes (a ROUTER's routing id, at most
    255 bytes), the rest as zero-copy ``zmq.Frame``s, so a large frame (one the receiver has
    not yet checked, as a header over its limit) never costs a second copy. Blocks as the
    socket's receive timeout says (zmq.Again when it runs out before a message)."""
    frames: list[Any] = [socket.recv(copy=copied > 0)]
    while socket.getsockopt(_RCVMORE):
        frames.append(socket.recv(copy=len(frames) < copied))
    return frames
