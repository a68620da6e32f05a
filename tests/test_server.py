"""Host and daemon over a real loopback socket (server in a thread of the test process)."""

from __future__ import annotations

import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from spusim.device import kernels
from spusim import (
    Device,
    DeviceRestarted,
    DeviceStateError,
    DeviceTimeout,
    InvalidRequest,
    MatrixRejected,
    linalg,
)
from spusim.driver.transport import Transport
from spusim.protocol import PROTOCOL_VERSION, ErrorCode, decode_reply, encode_request
from tests import stats
from tests.conftest import ServedDevice

A4 = stats.spd_matrix(np.array([0.5, 1.0, 2.0, 4.0]), seed=4)
B4 = np.array([1.0, -1.0, 0.5, 2.0])
# A correct batch-means estimate over 10 blocks has |error| / SE ~ Student t with 9 dof:
# beyond 6.5 with probability 2e-4 per component.
T_BOUND = 6.5


def raw_call(endpoint: str, frames: list[object], socket_type: int = zmq.DEALER,
             timeout_ms: int = 5000) -> list[bytes] | None:
    with zmq.Context() as context, context.socket(socket_type) as socket:
        socket.linger = 0
        socket.connect(endpoint)
        socket.send_multipart(frames)
        if not socket.poll(timeout_ms):
            return None
        return socket.recv_multipart()


def test_solve_and_inverse_through_the_wire(device: Device) -> None:
    x_true = np.linalg.solve(A4, B4)
    result = linalg.solve(device, A4, B4, seed=3)
    assert np.all(np.abs(result.x - x_true) < T_BOUND * result.standard_error)
    assert result.error_estimate < 0.05 * np.linalg.norm(x_true)
    assert result.samples == 5000
    # Uploads (16 + 4 values), 50 tau burn-in, 10 blocks of 50 tau each read back (4 values).
    assert result.device_time_ns == 6 + 2 + 50_000 + 10 * (50_000 + 2)
    inverse = linalg.inv(device, A4, seed=4)
    assert np.all(np.abs(inverse.inverse - np.linalg.inv(A4)) < T_BOUND * inverse.standard_error)
    assert inverse.error_estimate < 0.1 * np.linalg.norm(np.linalg.inv(A4))
    assert all(len(kernel.signatures) == 1 for kernel in kernels.KERNELS)


def test_device_errors_arrive_as_typed_exceptions(device: Device) -> None:
    """Every error reply becomes a typed exception carrying the exact code."""
    with pytest.raises(DeviceStateError) as state:
        device.run(1000)
    assert state.value.code == ErrorCode.NOT_PROGRAMMED
    asymmetric = np.eye(3)
    asymmetric[0, 1] = 1.0
    with pytest.raises(MatrixRejected) as rejected:
        device.program(asymmetric)
    assert rejected.value.code == ErrorCode.NOT_SYMMETRIC
    with pytest.raises(MatrixRejected) as capacity:  # 65 x 65 exceeds the 64-cell device
        device.program(np.eye(65))
    assert capacity.value.code == ErrorCode.CAPACITY_EXCEEDED
    with pytest.raises(InvalidRequest) as too_large:  # refused before it is sent
        device.program(np.eye(100))
    assert too_large.value.code == ErrorCode.MESSAGE_TOO_LARGE
    assert too_large.value.details["limit"] == device.info["limits"]["max_frame_bytes"]
    device.program(np.eye(3))
    with pytest.raises(InvalidRequest) as shape:
        device.set_bias(np.ones(4))
    assert shape.value.code == ErrorCode.BAD_SHAPE
    reply = raw_call(device.endpoint, encode_request(1, "teleport"))
    assert reply is not None
    unknown = decode_reply(reply)
    assert unknown.error is not None and unknown.error["code"] == ErrorCode.UNKNOWN_OP


def test_garbage_is_answered_and_the_daemon_keeps_serving(served: ServedDevice) -> None:
    for frames in ([b"\x00\xff garbage"], [msgpack.packb({"v": [1, 0], "id": 9, "op": 1})],
                   [msgpack.packb({"v": [9, 0], "id": 10, "op": "ping"})]):
        reply = raw_call(served.endpoint, frames)
        assert reply is not None
        decoded = decode_reply(reply)
        assert not decoded.ok and decoded.error is not None
        assert decoded.error["code"] in ("BAD_MESSAGE", "BAD_VERSION")
    # A frame over the size cap cannot be answered: libzmq drops that peer, others go on.
    assert raw_call(served.endpoint, [b"\x80" * (1 << 20)], timeout_ms=300) is None
    reply = raw_call(served.endpoint, encode_request(11, "ping"))
    assert reply is not None and decode_reply(reply).ok


def test_a_req_socket_client_is_served_too(served: ServedDevice) -> None:
    reply = raw_call(served.endpoint, encode_request(3, "hello"), socket_type=zmq.REQ)
    assert reply is not None
    decoded = decode_reply(reply)
    assert decoded.ok and decoded.id == 3
    assert decoded.result["protocol"] == list(PROTOCOL_VERSION)


def test_ping_and_status_are_answered_during_a_long_run(served: ServedDevice,
                                                        device: Device) -> None:
    device.program(np.eye(64))
    device.run(100)  # the first run checks the matrix; keep it out of the timed part
    finished = threading.Event()

    def long_run() -> None:
        with Device.connect(served.endpoint) as runner:
            runner.run(400_000 * 100)  # 400 000 samples at N = 64
        finished.set()

    thread = threading.Thread(target=long_run)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not device.status()["busy"] and time.monotonic() < deadline:
            time.sleep(0.01)
        status = device.status()
        assert status["busy"] and status["busy_with"] == "run"
        assert device.ping() < 0.1
        assert not finished.is_set()
    finally:
        thread.join(timeout=60)
    assert finished.is_set()


def test_a_restarted_daemon_is_detected_by_its_boot_id(served: ServedDevice) -> None:
    endpoint = served.endpoint
    with Device.connect(endpoint) as device:
        device.program(np.eye(2))
        served.stop()
        again = ServedDevice(bind=endpoint)
        try:
            with pytest.raises(DeviceRestarted):
                device.status()
            assert device.status()["programmed"] is False  # the new daemon, nothing programmed
        finally:
            again.stop()
        served.stop = lambda: None  # type: ignore[method-assign]  # already stopped


def test_calls_time_out_and_only_idempotent_ones_are_retried() -> None:
    with zmq.Context() as context, context.socket(zmq.ROUTER) as silent:
        silent.bind("tcp://127.0.0.1:0")  # accepts requests, never answers
        transport = Transport(silent.last_endpoint.decode())
        started = time.monotonic()
        with pytest.raises(DeviceTimeout) as status:
            transport.call("status", timeout=0.2, retries=2)
        assert status.value.details["attempts"] == 3
        assert 0.55 < time.monotonic() - started < 2.0
        received = 0
        while silent.poll(100):
            silent.recv_multipart()
            received += 1
        assert received == 3  # Lazy Pirate: the same request sent again on a fresh socket
        device = Device(transport, timeout=0.2, retries=2)
        with pytest.raises(DeviceTimeout) as run:
            device.run(100)
        assert run.value.details["attempts"] == 1  # a run is never sent twice
        transport.close()


def test_a_bad_schedule_is_refused_before_anything_reaches_the_device(device: Device) -> None:
    for bad in ({"blocks": 1}, {"t_sample": 0.0}, {"t_burn": -1.0}):
        with pytest.raises(ValueError):
            linalg.solve(device, A4, B4, **bad)  # type: ignore[arg-type]
    assert device.status()["programmed"] is False and device.sim_time_ns == 0


def random_request(rng: np.random.Generator) -> list[bytes]:
    """A malformed request: random bytes, or a header with fields of random types and sizes."""
    junk = [None, True, -1, -(2**63), 3.5, "x", b"\x00", [], {}, [1, "a"], {"k": [None]}]
    kind = rng.integers(3)
    if kind == 0:
        return [rng.bytes(int(rng.integers(0, 64))) for _ in range(int(rng.integers(1, 4)))]
    fields: dict[str, object] = {"v": [1, 0], "id": int(rng.integers(1, 1000)),
                                 "op": str(rng.choice(["program", "run", "read", "set_bias",
                                                       "nope"])),
                                 "args": {}, "arrays": []}
    for key in rng.choice(list(fields), size=int(rng.integers(1, 4)), replace=False):
        fields[str(key)] = junk[int(rng.integers(len(junk)))]
    if kind == 2:
        fields["arrays"] = [{"name": "A", "dtype": str(rng.choice(["<f8", "<f4", ">f8"])),
                             "shape": [int(d) for d in rng.integers(-1, 5, size=2)]}]
    frames = [msgpack.packb(fields)]
    return frames + [rng.bytes(int(rng.integers(0, 200)))] * int(rng.integers(0, 2))


def test_malformed_traffic_never_stops_the_daemon(served: ServedDevice, device: Device) -> None:
    """300 malformed requests: each is answered with an error, and the device state survives."""
    device.program(np.eye(3))
    rng = np.random.default_rng(2024)
    with zmq.Context() as context, context.socket(zmq.DEALER) as socket:
        socket.linger = 0
        socket.connect(served.endpoint)
        for _ in range(300):
            socket.send_multipart(random_request(rng))
            assert socket.poll(5000), "no answer"
            frames = socket.recv_multipart()
            if frames[0] == b"":  # we sent an empty first frame: a REQ-style delimiter, echoed
                frames = frames[1:]
            reply = decode_reply(frames)
            assert not reply.ok and reply.error is not None
            assert reply.error["code"] in {code.value for code in ErrorCode}
    assert device.status()["programmed"] and device.status()["n"] == 3




def test_a_finished_reply_is_taken_before_the_next_request_is_handled() -> None:
    """The worker's wake-up travels through the ROUTER, fair-queued behind the peers' messages:
    until it arrives, a finished reply waits. The daemon takes finished replies before it
    handles any request, so a ping about a finished request says "done" and the request's own
    reply goes out first (docs/protocol.md 8.1), never "pending" with the reply held back.
    Here the wake-ups never count: once the worker has connected, the main loop looks for
    another routing id than the one it sends."""
    served = ServedDevice(kappa0=0.01, cells=8)
    dealer = served.context.socket(zmq.DEALER)
    dealer.linger, dealer.rcvtimeo = 0, 3000
    try:
        time.sleep(0.2)  # the worker's DEALER has taken the real id
        served.server._wake_id += b"-lost"
        dealer.connect(served.endpoint)
        dealer.send_multipart(encode_request(1, "program", arrays={"A": np.eye(2)},
                                             session="s", attempt=1))
        time.sleep(0.5)  # the worker has finished it; no wake-up reaches the main loop
        dealer.send_multipart(encode_request(2, "ping", {"request": 1}, session="s"))
        first, second = (decode_reply(dealer.recv_multipart()) for _ in range(2))
        assert (first.id, first.ok) == (1, True)
        assert (second.id, second.result) == (2, {"request": "done"})
    finally:
        dealer.close()
        served.stop()
