"""The daemon and the client under attack (docs/reliability.md, "Attacks and bounds"): one test
per attack of the outside review, each on loopback only and bounded in count and time.

Raw DEALER sockets play the attackers and the victims whose replies are "lost" (a victim keeps
the first reply, then resends as a client would after a timeout).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket as tcp
import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
import zmq.auth

from spusim import Device, DeviceError, DeviceLeased, DeviceTimeout, LeaseExpired, ReplyLost
from spusim.device.cli import build_parser
from spusim.device.security import CurveServerKeys
from spusim.device.sessions import MAX_SESSIONS, MAX_WAITERS
from spusim.driver.daemon import DaemonProcess
from spusim.driver.errors import error_from_reply
from spusim.protocol import ErrorCode, Reply, decode_reply, encode_reply, encode_request
from tests.conftest import ServedDevice

A2 = np.array([[2.0, 0.5], [0.5, 1.0]])
B2 = np.array([1.0, 1.0])
LONG_RUN_NS = 100 * 2_000_000  # 2 000 000 samples at N = 64: seconds of wall time


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    with zmq.Context() as context:
        yield context


def dealer(context: zmq.Context[Any], endpoint: str, **options: Any) -> zmq.Socket[Any]:
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    for name, value in options.items():
        setattr(socket, name, value)
    socket.connect(endpoint)
    return socket


def send(socket: zmq.Socket[Any], request_id: int, op: str, session: str | None = None,
         args: dict[str, Any] | None = None, **header: Any) -> None:
    socket.send_multipart(encode_request(request_id, op, args, header.pop("arrays", None),
                                         session=session, **header))


def receive(socket: zmq.Socket[Any], timeout_s: float = 10.0) -> list[bytes]:
    assert socket.poll(int(timeout_s * 1000)), "no reply"
    return socket.recv_multipart()


def call(socket: zmq.Socket[Any], request_id: int, op: str, session: str | None = None,
         args: dict[str, Any] | None = None, timeout_s: float = 10.0, **header: Any) -> Reply:
    send(socket, request_id, op, session, args, **header)
    return decode_reply(receive(socket, timeout_s))


def code(reply: Reply) -> str:
    return "ok" if reply.ok else str((reply.error or {})["code"])


def start_long_run(served: ServedDevice, socket: zmq.Socket[Any], session: str,
                   request_id: int = 1, **header: Any) -> int:
    """Program the 64 cells and start a run of LONG_RUN_NS on ``socket``; returns the clock
    before the run, once the worker is busy with it."""
    with Device.connect(served.endpoint) as setup:
        setup.program(np.eye(64))
        setup.run(100)  # the first run's matrix checks, outside the long one
        before = setup.status()["sim_time_ns"]
        send(socket, request_id, "run", session, {"duration_ns": LONG_RUN_NS}, **header)
        deadline = time.monotonic() + 5
        while not setup.status()["busy"] and time.monotonic() < deadline:
            time.sleep(0.005)
    return before


# 1. A retried run executes at most once, whatever other sessions do -------------------------

def test_a_neighbours_flood_cannot_make_a_retried_run_run_twice(served: ServedDevice,
                                                                context: zmq.Context[Any]) -> None:
    with Device.connect(served.endpoint) as device:
        device.program(A2)
        victim = dealer(context, served.endpoint)
        send(victim, 5, "run", "victim", {"duration_ns": 100_000}, attempt=1)
        first = receive(victim)  # the reply the victim "lost"
        neighbour = dealer(context, served.endpoint)
        for start in range(0, 2100, 60):  # 2 100 cheap device ops, 60 in the queue at a time
            for request_id in range(start, start + 60):
                send(neighbour, request_id + 1, "reset", "neighbour")
            for _ in range(60):
                receive(neighbour)
        device.program(A2)
        clock = device.status()["sim_time_ns"]
        retry = dealer(context, served.endpoint)  # Lazy Pirate: a new socket, same id
        send(retry, 5, "run", "victim", {"duration_ns": 100_000}, attempt=2)
        assert receive(retry) == first  # its own kept reply, byte for byte
        assert device.status()["sim_time_ns"] == clock  # not executed again
        # Crowding the session table out with throw-away sessions: the resend is told it
        # cannot know (ReplyLost), and is still not executed.
        send(victim, 6, "run", "victim", {"duration_ns": 100_000}, attempt=1)
        receive(victim)
        crowd = dealer(context, served.endpoint)
        for start in range(0, MAX_SESSIONS + 40, 60):
            for k in range(start, start + 60):
                send(crowd, 1, "set_state", f"throwaway-{k}", arrays={"x": np.zeros(2)})
            for _ in range(60):
                receive(crowd)
        clock = device.status()["sim_time_ns"]
        send(retry, 6, "run", "victim", {"duration_ns": 100_000}, attempt=2)
        lost = decode_reply(receive(retry))
        assert code(lost) == ErrorCode.DUPLICATE_REQUEST and lost.error is not None
        assert isinstance(error_from_reply(lost.error), ReplyLost)
        assert device.status()["sim_time_ns"] == clock
        for socket in (victim, neighbour, retry, crowd):
            socket.close()


# 2. A lapsed lease holder always gets a typed error -----------------------------------------

def test_a_lapsed_holder_never_reads_another_sessions_state(served: ServedDevice,
                                                            context: zmq.Context[Any]) -> None:
    with Device.connect(served.endpoint) as victim, Device.connect(served.endpoint) as other:
        victim.acquire(ttl_s=0.2)
        victim.program(A2, reset_state=True)
        victim.set_bias(B2)
        time.sleep(0.3)  # the victim goes quiet: its lease runs out
        attacker = dealer(context, served.endpoint)
        for k in range(1100):  # throw-away sessions with 1 ms leases, each lapsing
            reply = call(attacker, k + 1, "acquire", f"throwaway-{k}", {"ttl_s": 0.001})
            assert reply.ok, reply.error
            time.sleep(0.0012)
        attacker.close()
        with other.lease():
            other.program(5 * np.eye(2), reset_state=True)  # someone else's state
            other.set_bias([3.0, -3.0])
            other.run(10_000)
        for attempt in (lambda: victim.run(1000), victim.read, lambda: victim.acquire(1.0)):
            with pytest.raises(LeaseExpired):
                attempt()
        victim.acquire(ttl_s=5.0)  # a fresh lease after the lapse was reported
        victim.program(A2, reset_state=True)
        victim.release()


# 3. Sessions are bound to the peer (CURVE key) ----------------------------------------------

@pytest.fixture
def curve_keys(tmp_path: Path) -> dict[str, Any]:
    admitted = tmp_path / "admitted"
    admitted.mkdir()
    keys = {"server": zmq.auth.create_certificates(tmp_path, "server")}
    for name in ("alice", "mallory"):
        public, secret = zmq.auth.create_certificates(tmp_path, name)
        (admitted / Path(public).name).write_bytes(Path(public).read_bytes())
        keys[name] = zmq.auth.load_certificate(secret)
    os.chmod(keys["server"][1], 0o600)
    keys["admitted"] = admitted
    return keys


def curve_dealer(context: zmq.Context[Any], endpoint: str, keys: dict[str, Any],
                 who: str) -> zmq.Socket[Any]:
    public, secret = keys[who]
    server_public, _ = zmq.auth.load_certificate(keys["server"][0])
    return dealer(context, endpoint, curve_serverkey=server_public, curve_publickey=public,
                  curve_secretkey=secret)


def test_another_key_presenting_a_session_gets_neither_its_replies_nor_its_lease(
        curve_keys: dict[str, Any], context: zmq.Context[Any]) -> None:
    curve = CurveServerKeys(Path(curve_keys["server"][1]), curve_keys["admitted"])
    served = ServedDevice(server_options={"curve": curve}, cells=4)
    try:
        alice = curve_dealer(context, served.endpoint, curve_keys, "alice")
        mallory = curve_dealer(context, served.endpoint, curve_keys, "mallory")
        assert call(alice, 1, "acquire", "alice-session", {"ttl_s": 30.0}).ok
        program = {"arrays": {"A": A2}}
        assert call(alice, 2, "program", "alice-session", **program).ok
        assert call(alice, 3, "run", "alice-session", {"duration_ns": 1000}).ok
        stolen = call(mallory, 3, "run", "alice-session", {"duration_ns": 1000})
        assert code(stolen) == ErrorCode.FORBIDDEN  # not alice's kept reply
        assert code(call(mallory, 4, "program", "alice-session", **program)) == "FORBIDDEN"
        assert code(call(mallory, 5, "program", "mallory", **program)) == ErrorCode.LEASED
        assert call(alice, 4, "run", "alice-session", {"duration_ns": 1000}).ok
        alice.close(), mallory.close()
    finally:
        served.stop()


# 4. Memory before validation ----------------------------------------------------------------

def test_a_message_of_endless_frames_is_read_one_frame_at_a_time(
        served: ServedDevice, context: zmq.Context[Any]) -> None:
    attacker = dealer(context, served.endpoint)
    frames = [encode_request(1, "ping")[0], *[b""] * 100_000]
    tracemalloc.start()
    try:
        attacker.send_multipart(frames)
        reply = decode_reply(receive(attacker, 30))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code(reply) == ErrorCode.BAD_MESSAGE and "100001 frames" in reply.error["message"]
    assert peak < 4 << 20  # bytes: no object per frame held (100 000 frames would be ~20 MiB)
    assert call(attacker, 2, "ping").ok
    attacker.close()


def test_shapes_capacity_and_bytes_are_checked_before_an_op_is_queued(
        served: ServedDevice, context: zmq.Context[Any]) -> None:
    runner, attacker = dealer(context, served.endpoint), dealer(context, served.endpoint)
    start_long_run(served, runner, "runner")
    too_big = call(attacker, 1, "program", "attacker", arrays={"A": np.eye(80)}, timeout_s=1.0)
    assert code(too_big) == ErrorCode.CAPACITY_EXCEEDED  # answered while the run executes
    served.server.max_queued_bytes = 3 * 8 * 64**2 + 100  # white box: room for 3 matrices
    for request_id in range(2, 7):
        send(attacker, request_id, "program", "attacker", arrays={"A": np.eye(64)})
    refused = [decode_reply(receive(attacker, 1.0)) for _ in range(2)]
    assert [code(reply) for reply in refused] == [ErrorCode.BUSY] * 2
    assert all(reply.error["details"]["queued_bytes"] == 3 * 8 * 64**2 for reply in refused)
    assert served.server.status()["queued_bytes"] == 3 * 8 * 64**2
    for _ in range(30):  # resends of the running run: attached to it, never queued again
        send(runner, 1, "run", "runner", {"duration_ns": LONG_RUN_NS}, attempt=2)
    time.sleep(0.2)
    session = served.server._sessions.get("runner")
    assert session is not None and len(session.pending[1]) == MAX_WAITERS
    assert served.server.status()["queued"] == 3
    control = dealer(context, served.endpoint)  # the runner's own session, another socket
    assert call(control, 1, "cancel", "runner", {"request": 1}).result == {"request": "running"}
    replies = [decode_reply(receive(runner)) for _ in range(1 + MAX_WAITERS)]
    assert {code(reply) for reply in replies} == {ErrorCode.CANCELLED}
    assert not runner.poll(300)
    for _ in range(3):
        assert code(decode_reply(receive(attacker))) == "ok"
    runner.close(), attacker.close(), control.close()


# 5. Runs can be stopped: cancel, a maximum length, a lease that runs out --------------------

def test_cancel_stops_a_running_run_and_its_reply_says_how_far_it_got(
        served: ServedDevice, context: zmq.Context[Any]) -> None:
    runner = dealer(context, served.endpoint)
    before = start_long_run(served, runner, "runner")
    started = time.monotonic()
    cancel = call(runner, 2, "cancel", "runner", {"request": 1})
    assert cancel.result == {"request": "running"}
    run = decode_reply(receive(runner, 5))
    assert time.monotonic() - started < 1.0  # within a chunk or so
    assert run.error is not None and run.error["code"] == ErrorCode.CANCELLED
    completed = run.error["details"]["completed_ns"]
    assert 0 < completed < LONG_RUN_NS and run.error["details"]["reason"] == "cancel"
    assert run.device["sim_time_ns"] == before + completed  # the clock says where it stopped
    assert call(runner, 3, "cancel", "runner", {"request": 1}).result == {"request": "done"}
    runner.close()


def test_ctrl_c_while_a_run_waits_cancels_it_on_the_daemon(served: ServedDevice) -> None:
    with Device.connect(served.endpoint) as device, Device.connect(served.endpoint) as watcher:
        device.program(np.eye(64))
        device.run(100)
        interrupt = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        interrupt.start()
        with pytest.raises(KeyboardInterrupt):
            device.run(10 * LONG_RUN_NS)  # tens of seconds of wall time
        interrupted = time.monotonic()
        while watcher.status()["busy"] and time.monotonic() - interrupted < 2.0:
            time.sleep(0.01)
        assert not watcher.status()["busy"]  # the daemon stopped it
        assert watcher.status()["sim_time_ns"] < 10 * LONG_RUN_NS


def test_a_run_longer_than_the_daemons_maximum_is_refused_at_once(
        served: ServedDevice, context: zmq.Context[Any]) -> None:
    limit = 2**40  # the default
    with Device.connect(served.endpoint) as device:
        device.program(A2)
        socket = dealer(context, served.endpoint)
        reply = call(socket, 1, "run", "s", {"duration_ns": 100 * 2**40}, timeout_s=2.0)
        assert code(reply) == ErrorCode.BAD_ARGUMENT and reply.error["details"]["limit"] == limit
        assert device.info["limits"]["max_run_ns"] == limit  # advertised
    assert build_parser().parse_args(["serve", "--max-run-ns", "1000"]).max_run_ns == 1000
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--max-run-ns", "0"])
    socket.close()


def test_a_lease_whose_holder_vanishes_during_its_run_runs_out_and_stops_it(
        served: ServedDevice, context: zmq.Context[Any]) -> None:
    with Device.connect(served.endpoint) as other:
        other.program(np.eye(64))
        other.run(100)
        holder = dealer(context, served.endpoint)
        granted = call(holder, 1, "acquire", "holder", {"ttl_s": 0.3})
        send(holder, 2, "run", "holder", {"duration_ns": LONG_RUN_NS},
             lease=granted.result.get("epoch"))
        while not other.status()["busy"]:
            time.sleep(0.005)
        started = time.monotonic()  # the holder now says nothing more
        other.acquire(ttl_s=5.0, wait_s=3.0)
        assert time.monotonic() - started < 1.5
        run = decode_reply(receive(holder, 5))
        assert run.error is not None and run.error["code"] == ErrorCode.LEASE_EXPIRED
        assert 0 < run.error["details"]["completed_ns"] < LONG_RUN_NS
        other.program(A2)
    holder.close()


# 6. The clock cannot overflow ---------------------------------------------------------------

def test_the_clock_never_passes_what_a_uint64_carries() -> None:
    coarse = 2**58  # ns per sample: a run of 15 samples moves the clock by ~2^62
    served = ServedDevice(cells=2, sample_interval_ns=coarse, em_step_ns=coarse)
    served.server.max_run_ns = 2**62  # white box: the option --max-run-ns
    try:
        with Device.connect(served.endpoint, timeout=3.0, retries=0) as device:
            device.program(A2)
            for _ in range(4):
                device.run(15 * coarse)
            with pytest.raises(DeviceError) as refused:  # a 5th would pass 2^64 - 1
                device.run(15 * coarse)
            assert refused.value.code == ErrorCode.CLOCK_OVERFLOW
            assert device.ping() < 1.0  # still serving
            assert 4 * 15 * coarse <= device.status()["sim_time_ns"] < 2**64
    finally:
        served.stop()


def test_a_reply_that_cannot_be_packed_becomes_a_packable_internal_error() -> None:
    frames = encode_reply(7, {"boot_id": "b", "sim_time_ns": 2**64}, result={"n": 1})
    reply = decode_reply(frames)
    assert not reply.ok and reply.id == 7 and code(reply) == ErrorCode.INTERNAL
    assert reply.device == {"boot_id": "b"}


# 7. The client notices a dead daemon within seconds, and waits for a healthy one ------------

def test_a_killed_daemon_is_noticed_within_seconds_whatever_the_runs_length() -> None:
    process = DaemonProcess.start(cells=64)
    try:
        with Device.connect(process.endpoint) as device:
            device.program(np.eye(64))
            device.run(100)
            outcome: list[BaseException | float] = []

            def long_run() -> None:
                try:
                    device.run(100 * 10**8)  # 10^8 samples: minutes of wall time
                except BaseException as error:  # noqa: BLE001 (the outcome is checked)
                    outcome.append(error)

            thread = threading.Thread(target=long_run, daemon=True)
            thread.start()
            time.sleep(1.0)
            killed = time.monotonic()
            os.kill(process.process.pid, signal.SIGKILL)
            thread.join(timeout=8.0)
            assert outcome, "the client did not notice the dead daemon within 8 s"
            assert isinstance(outcome[0], DeviceTimeout)
            assert time.monotonic() - killed < 6.0
    finally:
        process.stop()


def test_a_healthy_long_run_never_times_out(served: ServedDevice) -> None:
    timeout = 0.05  # s: far below the run's length (2e6 samples), on any machine
    with Device.connect(served.endpoint, timeout=timeout, retries=0) as device:
        device.program(A2)
        device.run(100)
        started = time.monotonic()
        assert device.run(100 * 2_000_000)["samples"] == 2_000_000
        assert time.monotonic() - started > timeout


# 8. A thousand idle connected peers do not lock new clients out -----------------------------

def zmtp_null_peer(port: int) -> tcp.socket:
    """A raw TCP peer that completes the ZMTP 3.0 NULL handshake (as a DEALER), then idles."""
    peer = tcp.create_connection(("127.0.0.1", port))
    peer.sendall(b"\xff" + b"\x00" * 8 + b"\x7f\x03\x00" + b"NULL".ljust(20, b"\x00")
                 + b"\x00" * 32)
    ready = b"\x05READY\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    peer.sendall(b"\x04" + bytes([len(ready)]) + ready)
    return peer


def test_a_thousand_idle_peers_do_not_lock_new_clients_out() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard open-files limit ({hard}) leaves no room to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # the daemon inherits 1024
    try:
        process = DaemonProcess.start(cells=4)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))  # this test's
    peers = []
    try:
        port = int(process.endpoint.rsplit(":", 1)[1])
        peers = [zmtp_null_peer(port) for _ in range(1100)]
        time.sleep(0.5)
        with Device.connect(process.endpoint, timeout=3.0, retries=0) as device:
            assert device.ping() < 1.0
            assert device.status()["connections"] >= 1100
        assert "open files limit" in process.log_tail()  # raised from 1024, and said so
    finally:
        for peer in peers:
            peer.close()
        process.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# 9. Deep nesting, readable secret keys, shutdown -------------------------------------------

def test_deep_nesting_is_a_bad_argument_without_a_traceback(
        served: ServedDevice, context: zmq.Context[Any], caplog: pytest.LogCaptureFixture) -> None:
    head = msgpack.packb({"v": [1, 2], "id": 1, "op": "run"})
    nested = (b"\x84" + head[1:] + msgpack.packb("args") + b"\x81"
              + msgpack.packb("duration_ns") + b"\x91" * 1000 + b"\x01")
    socket = dealer(context, served.endpoint)
    with caplog.at_level(logging.ERROR):
        for request_id in range(3):
            socket.send(nested)
            reply = decode_reply(receive(socket))
            assert code(reply) == ErrorCode.BAD_ARGUMENT and reply.id == 1
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    socket.close()


def test_a_secret_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    _, secret = zmq.auth.create_certificates(tmp_path, "server")
    clients = tmp_path / "clients"
    clients.mkdir()
    zmq.auth.create_certificates(clients, "client")
    keys = CurveServerKeys(Path(secret), clients)
    os.chmod(secret, 0o644)
    assert any("chmod 600" in problem for problem in keys.problems())
    os.chmod(secret, 0o600)
    assert keys.problems() == []


def test_only_the_lease_holder_may_shut_the_daemon_down(served: ServedDevice) -> None:
    with Device.connect(served.endpoint) as holder, Device.connect(served.endpoint) as other:
        holder.acquire(ttl_s=30.0)
        with pytest.raises(DeviceLeased):
            other.shutdown()
        assert holder.ping() < 1.0
