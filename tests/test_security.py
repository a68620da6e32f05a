"""Security: loopback by default, CURVE authentication, no code from the wire, size limits
checked before anything is allocated."""

from __future__ import annotations

import ast
import tracemalloc
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.auth

from spusim.device.cli import build_parser, security_problem
from spusim.device.security import CurveServerKeys
from spusim import Device, DeviceTimeout, InvalidRequest
from spusim.protocol import MAX_SESSION_CHARS, ErrorCode, MalformedRequest, decode_request
from tests.conftest import ServedDevice

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """A server certificate, one admitted client and one stranger (ZeroMQ certificates)."""
    admitted = tmp_path / "admitted"
    admitted.mkdir()
    zmq.auth.create_certificates(tmp_path, "server")
    zmq.auth.create_certificates(admitted, "client")
    zmq.auth.create_certificates(tmp_path, "stranger")
    for secret in (*tmp_path.glob("*.key_secret"), *admitted.glob("*.key_secret")):
        secret.chmod(0o600)  # as the key recipes write them (docs/hil.md)
    return {"server_secret": tmp_path / "server.key_secret", "server": tmp_path / "server.key",
            "admitted": admitted, "client": admitted / "client.key_secret",
            "stranger": tmp_path / "stranger.key_secret"}


def test_curve_admits_listed_clients_only(keys: dict[str, Path]) -> None:
    curve = CurveServerKeys(keys["server_secret"], keys["admitted"])
    assert curve.problems() == []
    served = ServedDevice(server_options={"curve": curve}, cells=4)
    try:
        with Device.connect(served.endpoint, curve_server_key=keys["server"],
                            curve_client_key=keys["client"]) as device:
            assert device.info["security"] == "curve"
            device.program([[2.0]])
            assert device.status()["programmed"]
        for client_keys in ({}, {"curve_server_key": keys["server"],
                                 "curve_client_key": keys["stranger"]}):
            with pytest.raises(DeviceTimeout):  # no handshake, so never an answer
                Device.connect(served.endpoint, timeout=0.3, retries=0, **client_keys)
    finally:
        served.stop()


def test_unusable_key_files_are_reported(keys: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    problems = CurveServerKeys(keys["server"], empty).problems()  # a public key, no clients
    assert any("no secret key" in problem for problem in problems)
    assert any("no public key" in problem for problem in problems)
    assert CurveServerKeys(tmp_path / "missing", keys["admitted"]).problems()
    with pytest.raises(ValueError, match="both"):
        Device.connect("tcp://127.0.0.1:1", curve_server_key=keys["server"])


@pytest.mark.parametrize(("flags", "refusal"), [
    ([], None),
    (["--bind", "ipc:///tmp/spu.sock"], None),
    (["--bind", "tcp://[::1]:5555"], None),
    (["--bind", "tcp://0.0.0.0:5555"], "--allow-remote"),
    (["--bind", "tcp://10.1.2.3:5555", "--allow-remote"], "--curve-secret-key-file"),
    (["--bind", "tcp://0.0.0.0:5555", "--allow-remote", "--curve-secret-key-file", "s",
      "--curve-public-keys-dir", "d"], None),
    (["--curve-secret-key-file", "s"], "both"),
])
def test_a_network_bind_needs_the_flag_and_curve_keys(flags: list[str],
                                                      refusal: str | None) -> None:
    problem = security_problem(build_parser().parse_args(["serve", *flags]))
    if refusal is None:
        assert problem is None
    else:
        assert problem is not None and refusal in problem


def test_no_code_is_ever_loaded_from_data() -> None:
    """No pickle/marshal/shelve, no eval/exec, no pyzmq *_pyobj, no allow_pickle in the code."""
    banned_modules = {"pickle", "cPickle", "dill", "marshal", "shelve", "jsonpickle"}
    banned_calls = {"eval", "exec", "recv_pyobj", "send_pyobj", "__import__"}
    found = []
    files = [path for package in ("device", "host", "protocol", "timing")
             for path in (ROOT / package).rglob("*.py")]
    assert len(files) > 20
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names]
                if isinstance(node, ast.ImportFrom) and node.module:
                    names.append(node.module)
                found += [f"{path}: import {name}" for name in names
                          if name.split(".")[0] in banned_modules]
            elif isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name in banned_calls:
                    found.append(f"{path}:{node.lineno}: {name}()")
                found += [f"{path}:{node.lineno}: allow_pickle" for keyword in node.keywords
                          if keyword.arg == "allow_pickle"]
    assert found == []


def test_sizes_are_checked_before_anything_is_allocated() -> None:
    huge_shape = msgpack.packb({"v": [1, 1], "id": 1, "op": "program", "arrays": [
        {"name": "A", "dtype": "<f8", "shape": [2**31 - 1, 2**31 - 1]}]})
    huge_claims = [b"\x81\xa1v\xdd\xff\xff\xff\xff",  # an array of 2^32 - 1 entries
                   b"\x81\xa1v\xdf\xff\xff\xff\xff",  # a map of 2^32 - 1 entries
                   b"\x81\xa1v\xdb\xff\xff\xff\xff",  # a string of 4 GiB
                   b"\x91" * 60_000]  # nesting 60 000 deep
    tracemalloc.start()
    try:
        with pytest.raises(MalformedRequest) as shape:
            decode_request([huge_shape, b"\x00" * 8])
        for claim in huge_claims:
            with pytest.raises(MalformedRequest) as claimed:
                decode_request([claim])
            assert claimed.value.code == ErrorCode.BAD_MESSAGE
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert shape.value.code == ErrorCode.BAD_SHAPE
    assert peak < 4 << 20  # bytes: nothing near what the claims describe


def test_header_fields_of_1_1_are_bounded(served: ServedDevice, device: Device) -> None:
    too_long = msgpack.packb({"v": [1, 1], "id": 5, "op": "ping",
                              "session": "s" * (MAX_SESSION_CHARS + 1)})
    with pytest.raises(MalformedRequest) as session:
        decode_request([too_long])
    assert session.value.code == ErrorCode.BAD_MESSAGE and session.value.details == {
        "field": "session"}
    assert session.value.request_id == 5
    served.server.test_mode = True  # white box: switch inject_fault on for this daemon
    with pytest.raises(InvalidRequest) as stuck:
        device.inject_fault(stuck_cells=[(i, 0.0) for i in range(1025)])
    assert stuck.value.code == ErrorCode.BAD_ARGUMENT
    with pytest.raises(InvalidRequest):
        device.inject_fault(drop_reply={"p": 0.5, "count": 1, "extra": 1})
    with pytest.raises(InvalidRequest):
        device.inject_fault(rail=float("inf"))
