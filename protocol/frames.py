"""A message's frames onto and off a ZeroMQ socket, at pyzmq's lowest per-frame cost.

pyzmq's ``send_multipart``/``recv_multipart`` wrap every frame as a ``zmq.Frame`` when asked
not to copy, and resolve flag enums and socket options per frame: a few microseconds of CPU
per message (docs/performance.md). Here a small frame (a routing id, a msgpack header) is
sent copied, which is cheaper, and an array without a copy; received frames are never copied
(their sizes are not checked before they are read), and whether more frames follow is the
flag pyzmq stores in each received frame (asking the socket again costs ~0.6 us a frame).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import zmq

# Frames of at least this many bytes travel without a copy.
ZERO_COPY_BYTES = 64 * 1024
_MORE = int(zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)


def send_frames(socket: zmq.Socket[Any], frames: Sequence[Any]) -> None:
    """Send ``frames`` (bytes, zmq.Frame or any buffer: ndarrays) as one message."""
    *head, last = frames
    for frame in head:
        socket.send(frame, _MORE, copy=_small(frame))
    socket.send(last, 0, copy=_small(last))


def _small(frame: Any) -> bool:
    """Whether ``frame`` is sent copied (bytes: a header; zmq.Frame: a routing id; ndarray)."""
    return (len(frame) if type(frame) is bytes else memoryview(frame).nbytes) < ZERO_COPY_BYTES


def recv_frames(socket: zmq.Socket[Any]) -> list[Any]:
    """One message's frames as zero-copy ``zmq.Frame``s (none copied: a frame's size is not
    checked before it is read). Blocks as the socket's receive timeout says (zmq.Again when it
    runs out before a message)."""
    return recv_at_most(socket, sys.maxsize)[0]


def recv_at_most(socket: zmq.Socket[Any], max_frames: int) -> tuple[list[Any], int]:
    """As :func:`recv_frames`, but keeping at most ``max_frames`` frames: the rest of the
    message is read into one scratch byte each (truncated, never held); returns the frames
    kept and how many were discarded."""
    frame = socket.recv(copy=False)
    frames: list[Any] = [frame]
    dropped, scratch, more = 0, None, frame.more  # pyzmq stores RCVMORE in each frame
    while more:
        if len(frames) < max_frames:
            frame = socket.recv(copy=False)
            frames.append(frame)
            more = frame.more
        else:
            scratch = scratch or bytearray(1)
            socket.recv_into(scratch)
            dropped += 1
            more = socket.getsockopt(_RCVMORE)
    return frames, dropped
