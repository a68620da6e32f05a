"""Sessions (protocol 1.1, bounded per session since 1.2): the kept replies (a request executes
at most once) and the lease (one client at a time owns the device's state), as units and over
the wire with several clients. The attacks on them are in test_attacks.py."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

from spusim.device.sessions import (
    MAX_WAITERS,
    SESSION_REPLIES,
    SESSION_REPLY_BYTES,
    Claim,
    LeaseTable,
    Session,
    SessionTable,
)
from spusim import Device, DeviceLeased, InvalidRequest, LeaseExpired, ReplyLost
from spusim.driver.errors import error_from_reply
from spusim.protocol import ErrorCode, ProtocolError, decode_reply, encode_request
from tests.conftest import ServedDevice

A2 = np.array([[2.0, 0.5], [0.5, 1.0]])
B2 = np.array([1.0, 1.0])


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- units -----------------------------------------------------------------------------------

def test_a_session_answers_repeats_and_never_forgets_what_it_executed() -> None:
    session = Session("s", None, floor=0, last_seen=0.0)
    assert session.claim(1, ["first"]) == (Claim.NEW, None)
    assert session.claim(1, ["again"]) == (Claim.PENDING, None)
    assert session.complete(1, [b"r1"]) == [["again"]]  # the waiting duplicate
    assert session.claim(1, ["x"]) == (Claim.CACHED, [b"r1"])
    session.claim(2, ["x"])
    session.complete(2, [b"y" * (SESSION_REPLY_BYTES + 1)])  # too large to keep: id only
    assert session.claim(2, ["x"]) == (Claim.EVICTED, None) and session.state_of(2) == "done"
    session.claim(3, ["x"])
    session.abandon(3)  # refused (BUSY, LEASED): not executed, may come again
    assert session.claim(3, ["x"])[0] is Claim.NEW and session.state_of(3) == "pending"
    for request_id in range(3, 3 + SESSION_REPLIES + 5):
        session.claim(request_id, ["x"])
        session.complete(request_id, [b"r"])
    assert len(session.done) == SESSION_REPLIES and session.floor >= 7
    assert session.claim(1, ["x"]) == (Claim.EVICTED, None)  # below the floor: executed
    for _ in range(MAX_WAITERS + 10):  # resends of one running request: waiters bounded
        session.claim(1000, ["resend"])
    assert len(session.pending[1000]) == MAX_WAITERS


def test_sessions_are_bounded_bound_to_their_peer_and_expire() -> None:
    clock = FakeClock()
    table = SessionTable(max_sessions=2, idle_s=10.0, clock=clock)
    first = table.open("a", "key-a", first_id=5)
    assert first.floor == 4  # ids before the first seen count as executed
    with pytest.raises(ProtocolError) as foreign:
        table.find("a", "key-b")
    assert foreign.value.code == ErrorCode.FORBIDDEN
    first.claim(5, ["x"])  # in flight: never forgotten to make room
    table.open("b", None, 1)
    table.open("c", None, 1)  # full: "b", idle, goes
    assert table.get("b") is None and table.get("a") is first and table.forgotten == 1
    first.complete(5, [b"r"])
    clock.now += 11.0
    table.expire()
    assert len(table) == 0


def test_a_lease_excludes_others_expires_when_quiet_and_a_stale_epoch_is_refused() -> None:
    clock = FakeClock()
    leases = LeaseTable(clock)
    a, b = ("a", None), ("b", None)
    leases.check(None, None)  # unleased: anyone may use the device
    granted = leases.acquire(a, ttl_s=10.0, epoch=None)
    assert granted == {"ttl_s": 10.0, "renewed": False, "epoch": 1}
    leases.check(a, 1)
    for other in (b, None):
        with pytest.raises(ProtocolError) as refused:
            leases.check(other, None)
        assert refused.value.code == ErrorCode.LEASED
    with pytest.raises(ProtocolError):
        leases.acquire(b, ttl_s=10.0, epoch=None)
    clock.now += 9.0
    leases.touch(a)  # a request (or heartbeat) of the holder restarts the ttl
    clock.now += 9.0
    leases.check(a, 1)
    clock.now += 1.5
    leases.check(b, None)  # quiet for the ttl: expired, free
    assert leases.lapsed() == [a] and leases.lapsed() == []
    assert leases.acquire(b, ttl_s=1.0, epoch=None)["epoch"] == 2
    leases.release(b)
    for attempt in (lambda: leases.check(a, 1), lambda: leases.acquire(a, 5.0, epoch=1)):
        with pytest.raises(ProtocolError) as lapsed:  # epoch 1 is gone for good
            attempt()
        assert lapsed.value.code == ErrorCode.LEASE_EXPIRED
    assert leases.acquire(a, ttl_s=1.0, epoch=None)["epoch"] == 3  # a fresh grant
    assert leases.status(a)["yours"] and not leases.status(b)["yours"]
    assert leases.release(a) and not leases.release(a)


# --- over the wire ---------------------------------------------------------------------------

def send(socket: zmq.Socket[bytes], request_id: int, op: str, session: str | None,
         args: dict[str, object] | None = None) -> None:
    socket.send_multipart(encode_request(request_id, op, args, session=session))


def receive(socket: zmq.Socket[bytes], timeout_ms: int = 5000) -> list[bytes]:
    assert socket.poll(timeout_ms), "no reply"
    return socket.recv_multipart()


def test_a_repeated_request_id_is_answered_from_the_cache_not_executed_again(
        served: ServedDevice, device: Device) -> None:
    device.program(A2)
    with zmq.Context() as context, context.socket(zmq.DEALER) as socket:
        socket.linger = 0
        socket.connect(served.endpoint)
        send(socket, 7, "run", "raw", {"duration_ns": 1000})
        first = receive(socket)
        clock = device.status()["sim_time_ns"]
        send(socket, 7, "run", "raw", {"duration_ns": 1000})  # a retry: same session and id
        assert receive(socket) == first  # byte for byte
        assert device.status()["sim_time_ns"] == clock
        send(socket, 7, "run", "other", {"duration_ns": 1000})  # same id, another session
        send(socket, 7, "run", None, {"duration_ns": 1000})  # no session: 1.0 semantics
        receive(socket), receive(socket)
        assert device.status()["sim_time_ns"] == clock + 2000


def test_a_retry_of_a_request_still_executing_gets_the_one_reply(served: ServedDevice,
                                                                 device: Device) -> None:
    device.program(np.eye(64))
    device.run(100)  # the matrix checks, outside the timed part
    clock = device.status()["sim_time_ns"]
    with zmq.Context() as context:
        sockets = [context.socket(zmq.DEALER) for _ in range(2)]
        for socket in sockets:  # two sockets: a Lazy Pirate retry comes from a new one
            socket.linger = 0
            socket.connect(served.endpoint)
        send(sockets[0], 1, "run", "s", {"duration_ns": 100 * 100_000})
        while not device.status()["busy"]:
            time.sleep(0.005)
        send(sockets[1], 1, "run", "s", {"duration_ns": 100 * 100_000})
        replies = [decode_reply(receive(socket, 30_000)) for socket in sockets]
        for socket in sockets:
            socket.close()
    assert all(reply.ok and reply.result["samples"] == 100_000 for reply in replies)
    assert device.status()["sim_time_ns"] == clock + 100 * 100_000  # once


def test_a_retry_whose_reply_was_evicted_is_refused_not_executed(served: ServedDevice,
                                                                 device: Device) -> None:
    device.program(A2)
    with zmq.Context() as context, context.socket(zmq.DEALER) as socket:
        socket.linger = 0
        socket.connect(served.endpoint)
        send(socket, 1, "run", "mine", {"duration_ns": 100})
        for request_id in range(2, SESSION_REPLIES + 3):  # the session's own later ops
            send(socket, request_id, "reset", "mine")  # push the run's reply out
        for _ in range(SESSION_REPLIES + 2):
            receive(socket)
        device.program(A2)
        clock = device.status()["sim_time_ns"]
        send(socket, 1, "run", "mine", {"duration_ns": 100})
        reply = decode_reply(receive(socket))
    assert reply.error is not None and reply.error["code"] == ErrorCode.DUPLICATE_REQUEST
    assert device.status()["sim_time_ns"] == clock  # not run again
    assert isinstance(error_from_reply(reply.error), ReplyLost)


def test_a_leased_device_refuses_other_sessions_and_keeps_the_holders_state(
        served: ServedDevice) -> None:
    owner = Device.connect(served.endpoint, timeout=2.0)
    other = Device.connect(served.endpoint, timeout=2.0)
    with owner, other:
        with owner.lease(ttl_s=30.0):
            owner.program(A2, reset_state=True)
            owner.set_bias(B2)
            owner.run(10_000, seed=1, clear=True)
            for attempt in (lambda: other.program(np.eye(2)), lambda: other.set_bias([0, 0]),
                            lambda: other.run(100), lambda: other.read(), other.reset,
                            other.shutdown, lambda: other.acquire(wait_s=0.2)):
                with pytest.raises(DeviceLeased) as refused:
                    attempt()
                assert refused.value.code == ErrorCode.LEASED
                assert 0 < refused.value.details["expires_in_s"] <= 30.0
            other.ping()
            status = other.status()  # read-only ops are always answered
            assert status["lease"] == {"held": True, "yours": False,
                                       "expires_in_s": pytest.approx(30.0, abs=1.0)}
            assert owner.status()["lease"]["yours"]
            mean = owner.read().mean  # the owner's samples, untouched by the other client
        other.program(np.eye(2))  # released: anyone again
    served_again = ServedDevice(kappa0=0.01, cells=64)
    try:
        with Device.connect(served_again.endpoint) as fresh:
            fresh.program(A2, reset_state=True)
            fresh.set_bias(B2)
            fresh.run(10_000, seed=1, clear=True)
            np.testing.assert_array_equal(mean, fresh.read().mean)
    finally:
        served_again.stop()


def test_an_idle_lease_runs_out_and_its_holder_learns_it(served: ServedDevice) -> None:
    with Device.connect(served.endpoint) as owner, Device.connect(served.endpoint) as other:
        owner.acquire(ttl_s=0.2)
        owner.program(A2)
        with pytest.raises(DeviceLeased):
            other.program(np.eye(2))
        started = time.monotonic()
        other.acquire(ttl_s=5.0, wait_s=2.0)  # waits, with back-off, for the lease to run out
        assert 0.05 < time.monotonic() - started < 1.5
        other.release()
        with pytest.raises(LeaseExpired) as expired:
            owner.run(100)
        assert expired.value.code == ErrorCode.LEASE_EXPIRED
        with pytest.raises(LeaseExpired):  # acquire does not hide the lapse either
            owner.acquire(ttl_s=5.0)
        owner.acquire(ttl_s=5.0)  # a fresh lease; the caller re-programs
        owner.run(100)
        assert owner.release()


def test_a_lease_does_not_run_out_during_its_holders_long_run(served: ServedDevice) -> None:
    with Device.connect(served.endpoint) as owner, Device.connect(served.endpoint) as other:
        owner.program(np.eye(64))
        owner.run(100)
        owner.acquire(ttl_s=0.1)
        runner = threading.Thread(target=owner.run, args=(100 * 600_000,))  # about 0.6 s
        runner.start()
        try:
            while not other.status()["busy"]:
                time.sleep(0.005)
            time.sleep(0.15)  # longer than the ttl, while the run executes
            assert other.status()["busy"]
            with pytest.raises(DeviceLeased):
                other.reset()
        finally:
            runner.join(timeout=60)
        assert owner.status()["lease"]["yours"]


def test_acquire_needs_a_session_and_release_without_a_lease_is_harmless(
        served: ServedDevice, device: Device) -> None:
    with zmq.Context() as context, context.socket(zmq.DEALER) as socket:
        socket.linger = 0
        socket.connect(served.endpoint)
        send(socket, 1, "acquire", None)
        reply = decode_reply(receive(socket))
    assert reply.error is not None and reply.error["code"] == ErrorCode.BAD_MESSAGE
    assert reply.error["details"] == {"field": "session"}
    assert device.release() is False
    with pytest.raises(InvalidRequest):
        device.acquire(ttl_s=0.0)


def test_a_full_queue_answers_busy_and_queued_requests_all_execute(served: ServedDevice,
                                                                   device: Device) -> None:
    device.program(np.eye(64))
    device.run(100)
    with zmq.Context() as context, context.socket(zmq.DEALER) as socket:
        socket.linger = 0
        socket.connect(served.endpoint)
        send(socket, 1, "run", "flood", {"duration_ns": 100 * 200_000})
        while not device.status()["busy"]:
            time.sleep(0.005)
        for request_id in range(2, 72):  # 70 more while the run executes: 64 fit in the queue
            send(socket, request_id, "reset", "flood")
        replies = [decode_reply(receive(socket, 30_000)) for _ in range(71)]
    codes = [reply.error["code"] if reply.error else "ok" for reply in replies]
    assert codes.count(ErrorCode.BUSY) == 6 and codes.count("ok") == 65
    busy = [reply for reply in replies if not reply.ok]
    assert all(reply.error is not None and reply.error["details"]["queued"] == 64
               for reply in busy)


def test_the_lease_holders_session_is_never_dropped_for_room_or_idleness() -> None:
    """A crowd of new sessions, or a long idle spell within its lease, must not drop the
    holder's session: its lapse is recorded on it (a 1.1 client sends no epoch)."""
    now = [0.0]
    table = SessionTable(max_sessions=2, idle_s=10.0, clock=lambda: now[0],
                         kept=lambda name: name == "holder")
    table.open("holder", None, 1)
    for k in range(5):
        table.open(f"crowd{k}", None, 1)
    now[0] = 100.0
    table.expire()
    assert table.get("holder") is not None
    assert table.get("crowd4") is None and table.forgotten == 5
