"""docs/protocol.md section 10 (worked example, raw bytes) replayed against a live server: the
byte counts and results it states are what the daemon sends, so the document cannot drift
from the implementation unnoticed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from tests.conftest import ServedDevice

DOC = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
EXAMPLE = DOC[DOC.index("## 10. Worked example"):]


def stated(pattern: str) -> int:
    """The number the worked example states where ``pattern`` (with one group) matches."""
    found = re.search(pattern, EXAMPLE)
    assert found, f"docs/protocol.md section 10 no longer says {pattern!r}"
    return int(found.group(1))


@pytest.fixture
def raw() -> Iterator[zmq.Socket]:
    """A raw DEALER on a server configured as section 10's daemon (--cells 16)."""
    served = ServedDevice(cells=16)
    socket = served.context.socket(zmq.DEALER)
    socket.connect(served.endpoint)
    yield socket
    socket.close(linger=0)
    served.stop()


def exchange(socket: zmq.Socket, *frames: bytes) -> list[bytes]:
    socket.send_multipart(list(frames))
    assert socket.poll(10_000), "no reply"
    return socket.recv_multipart()


def header(request_id: int, op: str, **fields: object) -> bytes:
    return msgpack.packb({"v": [1, 0], "id": request_id, "op": op, **fields})


def test_worked_example_matches_the_daemon(raw: zmq.Socket) -> None:
    hello = exchange(raw, bytes.fromhex("83a176920100a2696401a26f70a568656c6c6f"))
    assert len(hello[0]) == stated(r"Reply, 1 frame, (\d+) bytes, beginning")
    A = np.array([[2.0, 0.5], [0.5, 1.0]])
    program = exchange(raw, header(2, "program", args={}, arrays=[
        {"name": "A", "dtype": "<f8", "shape": [2, 2]}]), A.tobytes())
    assert len(program[0]) == stated(r"Reply, 1 frame, (\d+) bytes:")
    bias = exchange(raw, header(3, "set_bias", arrays=[
        {"name": "b", "dtype": "<f8", "shape": [2]}]), np.ones(2).tobytes())
    assert len(bias[0]) == stated(r"Reply \((\d+) bytes\) result")
    run = header(4, "run", args={"duration_ns": 100_000, "seed": 7})
    assert len(run) == stated(r"`run` \(id 4\), (\d+) bytes")
    ran = exchange(raw, run)
    assert len(ran[0]) == stated(r"Reply \((\d+) bytes\): `\"ok\": true`")
    assert msgpack.unpackb(ran[0])["result"] == {"samples": 1000, "adc_clipped": 0,
                                                  "timing": {"analog": 100_000}}
    read = exchange(raw, header(5, "read", args={"second_moments": False}))
    assert len(read[0]) == stated(r"Frame 0 \((\d+) bytes\)")
    for value in (read[1][:8], read[1][8:]):  # the mean's two doubles, as printed
        assert value.hex(" ") in EXAMPLE
    error = exchange(raw, bytes.fromhex("83a176920100a2696406a26f70a372756e"))
    assert len(error[0]) == stated(r"Reply, (\d+) bytes:\n\n    86")
    arrays = {"J": np.array([[1.0, 0.5]]), "H": np.array([[2.0]]), "b": np.ones(2),
              "x": np.ones(2)}
    solve = msgpack.packb({"v": [1, 3], "id": 8, "op": "solve_factored", "args": {
        "damping": 1.0, "integrator": "exact", "burn_ns": 900, "record_ns": 100, "seed": 7},
        "arrays": [{"name": name, "dtype": "<f8", "shape": list(a.shape)}
                   for name, a in arrays.items()]})
    assert len(solve) == stated(r"Header frame \((\d+) bytes\), decoded")
    solved = exchange(raw, solve, *(a.tobytes() for a in arrays.values()))
    assert len(solved[0]) == stated(r"Reply, 2 frames. Frame 0 \((\d+) bytes\) decodes\nto")
    result = msgpack.unpackb(solved[0])["result"]
    assert [step["op"] for step in result["steps"]] == [
        "program_factored", "set_bias", "set_state", "run", "run", "read"]
    assert result["steps"][3]["result"]["jumped_ns"] == 900
    assert result["timing"] == {"transfer_in": 4, "analog": 1000, "transfer_out": 1}
    for value in (solved[1][:8], solved[1][8:]):
        assert value.hex(" ") in EXAMPLE
