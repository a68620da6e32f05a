"""Codec and op-schema round trips, and every way a request can be malformed."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from spusim.protocol import (
    OPS,
    PROTOCOL_VERSION,
    ErrorCode,
    MalformedRequest,
    ProtocolError,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    spec_for,
)

DEVICE = {"boot_id": "abc", "sim_time_ns": 7}


def header(**fields: object) -> bytes:
    base: dict[str, object] = {"v": list(PROTOCOL_VERSION), "id": 1, "op": "ping", "args": {},
                               "arrays": []}
    return msgpack.packb({**base, **fields})


def malformed(frames: list[object]) -> MalformedRequest:
    with pytest.raises(MalformedRequest) as info:
        decode_request(frames)
    return info.value


def test_request_round_trip_is_exact_and_zero_copy() -> None:
    A = np.arange(12.0).reshape(3, 4)
    frames = encode_request(42, "program", {"reset_state": True}, {"A": A})
    assert frames[1] is A  # the array itself is the frame: no copy on send
    received = [bytes(frames[0]), bytearray(A.tobytes())]
    request = decode_request(received)
    assert (request.id, request.op, request.args) == (42, "program", {"reset_state": True})
    np.testing.assert_array_equal(request.arrays["A"], A)
    assert np.shares_memory(request.arrays["A"], np.frombuffer(received[1]))  # no copy on receive


def test_reply_round_trips_ok_and_error() -> None:
    mean = np.array([1.0, 2.0])
    ok = decode_reply(encode_reply(5, DEVICE, result={"samples": 3}, arrays={"mean": mean}))
    assert ok.ok and ok.id == 5 and ok.result == {"samples": 3} and ok.device == DEVICE
    np.testing.assert_array_equal(ok.arrays["mean"], mean)
    error = ProtocolError(ErrorCode.NOT_PROGRAMMED, "program first", hint=1)
    failed = decode_reply(encode_reply(6, DEVICE, error=error))
    assert not failed.ok and failed.error == {"code": "NOT_PROGRAMMED",
                                              "message": "program first", "details": {"hint": 1}}


def test_encoding_refuses_non_canonical_arrays() -> None:
    with pytest.raises(ValueError):
        encode_request(1, "set_bias", arrays={"b": np.ones(3, dtype=np.float32)})
    with pytest.raises(ValueError):
        encode_request(1, "program", arrays={"A": np.ones((4, 4))[:, ::2]})


@pytest.mark.parametrize(("frames", "code", "request_id"), [
    ([], ErrorCode.BAD_MESSAGE, None),
    ([b"\xc1garbage"], ErrorCode.BAD_MESSAGE, None),
    ([msgpack.packb([1, 2])], ErrorCode.BAD_MESSAGE, None),
    ([header(id=-1)], ErrorCode.BAD_MESSAGE, None),
    ([header(id=True)], ErrorCode.BAD_MESSAGE, None),
    ([header(v=[2, 0])], ErrorCode.BAD_VERSION, 1),
    ([header(v="1.0")], ErrorCode.BAD_MESSAGE, 1),
    ([header(op=3)], ErrorCode.BAD_MESSAGE, 1),
    ([header(args=[1])], ErrorCode.BAD_MESSAGE, 1),
    ([header(arrays=[{"name": "b", "dtype": "<f8", "shape": [2]}])], ErrorCode.BAD_MESSAGE, 1),
    ([header(), b"extra"], ErrorCode.BAD_MESSAGE, 1),
    ([header(arrays=[{"name": "b", "dtype": "<f4", "shape": [2]}]), bytes(8)],
     ErrorCode.BAD_DTYPE, 1),
    ([header(arrays=[{"name": "b", "dtype": "|O", "shape": [2]}]), bytes(16)],
     ErrorCode.BAD_DTYPE, 1),
    ([header(arrays=[{"name": "b", "dtype": "<f8", "shape": [3]}]), bytes(16)],
     ErrorCode.BAD_SHAPE, 1),
    ([header(arrays=[{"name": "b", "dtype": "<f8", "shape": [2, 2, 2]}]), bytes(64)],
     ErrorCode.BAD_SHAPE, 1),
    ([header(arrays=[{"name": "b", "dtype": "<f8", "shape": [-2]}]), b""], ErrorCode.BAD_SHAPE, 1),
    ([b"\x80" + bytes(70_000)], ErrorCode.MESSAGE_TOO_LARGE, None),
    ([header()] + [b""] * 8, ErrorCode.BAD_MESSAGE, None),
])
def test_malformed_requests_get_their_code_and_id_when_known(
        frames: list[object], code: ErrorCode, request_id: int | None) -> None:
    error = malformed(frames)
    assert error.code == code, error
    assert error.request_id == request_id
    assert error.message  # something a person can read


def test_unknown_header_keys_are_ignored_for_minor_additions() -> None:
    request = decode_request([header(future_field={"x": 1})])
    assert request.op == "ping"


def test_op_schemas_fill_defaults_and_reject_what_they_do_not_know() -> None:
    run = spec_for("run")
    assert run.validate({"duration_ns": 100}, {}) == {
        "duration_ns": 100, "record": True, "second_moments": False, "clear": False,
        "seed": None, "lag_samples": 0}
    for args, fragment in [({}, "missing"), ({"duration_ns": 0}, "positive"),
                           ({"duration_ns": True}, "positive"),
                           ({"duration_ns": 100, "record": 1}, "true or false"),
                           ({"duration_ns": 100, "speed": 2}, "unknown")]:
        with pytest.raises(ProtocolError, match=fragment) as info:
            run.validate(args, {})
        assert info.value.code == ErrorCode.BAD_ARGUMENT
    with pytest.raises(ProtocolError, match="takes arrays"):
        spec_for("program").validate({}, {})
    with pytest.raises(ProtocolError) as info:
        spec_for("teleport")
    assert info.value.code == ErrorCode.UNKNOWN_OP and "program" in info.value.message


def test_only_ops_that_advance_the_device_are_not_idempotent() -> None:
    assert {name for name, spec in OPS.items() if not spec.idempotent} == {"run", "read",
                                                                          "solve_factored"}
