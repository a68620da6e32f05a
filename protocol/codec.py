"""Multipart wire format: one msgpack header frame, then one raw frame per array.

A request is ``[header, array_0, array_1, ...]`` where the header is a msgpack map::

    {"v": [1, 2], "id": 42, "op": "program", "session": "4f0c...", "attempt": 1, "args": {...},
     "arrays": [{"name": "A", "dtype": "<f8", "shape": [n, n]}]}

and ``array_k`` holds exactly ``prod(shape) * 8`` bytes, C order, little-endian. A reply is
``[header, array_0, ...]`` with ``{"v", "id", "ok", "result" | "error", "device", "arrays"}``.
docs/protocol.md is the normative description; this module is its implementation for both sides.
Arrays are sent and received without copies (the frames are buffer views of the arrays).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from spusim.protocol.errors import ErrorCode, ProtocolError

PROTOCOL_VERSION: tuple[int, int] = (1, 5)
ALLOWED_DTYPES: tuple[str, ...] = ("<f8",)
MAX_HEADER_BYTES = 64 * 1024
MAX_ARRAYS = 4
MAX_NDIM = 2
MAX_SESSION_CHARS = 128  # a client's session id: 1 to 128 characters (protocol 1.1)
MAX_ATTEMPT = 2**31 - 1  # a request's "attempt" header field: 1 to 2^31 - 1 (protocol 1.2)
UINT64_MAX = 2**64 - 1  # the largest unsigned integer the header carries: ids, clock, ns
_VERSION = list(PROTOCOL_VERSION)  # the header's "v", packed as is (never mutated)
_PACKERS = threading.local()

Frame = Any  # anything exposing the buffer protocol: bytes, memoryview, zmq.Frame, ndarray


@dataclass(slots=True)
class Request:
    """A decoded request, read-only by convention (not frozen: building a frozen dataclass
    costs about 1 us more, on every message). ``arrays`` are float64 views of the received
    frames (no copy).

    ``session`` is the client's session id (protocol 1.1), or None when the header has none.
    ``attempt`` (1.2): 1 for the first sending, more for a resend, None when not stated.
    ``lease``: the lease epoch the client believes it holds (1.2), or None.
    """

    id: int
    op: str
    args: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    session: str | None = None
    attempt: int | None = None
    lease: int | None = None


@dataclass(slots=True)
class Reply:
    """A decoded reply, read-only by convention (not frozen, as :class:`Request`). ``error`` is
    ``{"code", "message", "details"}`` when ``ok`` is false."""

    id: int | None
    ok: bool
    result: dict[str, Any]
    error: dict[str, Any] | None
    device: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class MalformedRequest(ProtocolError):
    """A request the codec rejected; ``request_id`` is set when the header carried a usable id."""

    def __init__(self, error: ProtocolError, request_id: int | None) -> None:
        super().__init__(error.code, error.message, **error.details)
        self.request_id = request_id


def encode_request(
    request_id: int, op: str, args: Mapping[str, Any] | None = None,
    arrays: Mapping[str, np.ndarray] | None = None, *, session: str | None = None,
    attempt: int | None = None, lease: int | None = None,
) -> list[Frame]:
    """Frames of a request. Arrays must already be C-contiguous little-endian float64.

    ``session``: the client's session id, sent when given (deduplication and leases, 1.1);
    ``attempt``: which sending this is, 1 first (1.2); ``lease``: the lease epoch the client
    holds (1.2). Each is sent when given.
    """
    specs, buffers = _array_frames(arrays) if arrays else ([], [])
    header: dict[str, Any] = {"v": _VERSION, "id": request_id, "op": op,
                              "args": dict(args) if args else {}, "arrays": specs}
    if session is not None:
        header["session"] = session
    if attempt is not None:
        header["attempt"] = attempt
    if lease is not None:
        header["lease"] = lease
    return [_pack(header), *buffers]


def encode_reply(
    request_id: int | None, device: Mapping[str, Any], *,
    result: Mapping[str, Any] | None = None, error: ProtocolError | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> list[Frame]:
    """Frames of a reply: ``error`` set means ``ok: false``. ``device`` is boot id and clock.

    Always packable: a reply whose fields msgpack cannot carry (an integer past 2^64 - 1, say)
    becomes an ``INTERNAL`` error reply without details and without the clock.
    """
    specs, buffers = _array_frames(arrays) if arrays else ([], [])
    header: dict[str, Any] = {"v": _VERSION, "id": request_id,
                              "ok": error is None, "device": dict(device), "arrays": specs}
    if error is None:
        header["result"] = dict(result or {})
    else:
        header["error"] = {"code": error.code.value, "message": error.message,
                           "details": error.details}
    try:
        return [_pack(header), *buffers]
    except (OverflowError, TypeError, ValueError) as exc:
        return [_pack({"v": list(PROTOCOL_VERSION),
                       "id": request_id if _is_uint(request_id) else None, "ok": False,
                       "device": {"boot_id": str(device.get("boot_id", ""))}, "arrays": [],
                       "error": {"code": ErrorCode.INTERNAL.value, "details": {},
                                 "message": f"the reply could not be encoded "
                                            f"({type(exc).__name__})"}})]


def decode_request(frames: Sequence[Frame]) -> Request:
    """Validate and decode request frames; raises :class:`MalformedRequest` on any defect.

    Sizes are capped before this, per frame, by the transport (the daemon's ZMQ_MAXMSGSIZE);
    here every array frame must hold exactly the bytes its descriptor declares.
    """
    request_id: int | None = None
    try:
        header = _unpack_header(frames)
        raw_id = header.get("id")
        if not _is_uint(raw_id):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "header field 'id' must be an unsigned "
                                "64-bit integer", field="id")
        request_id = raw_id
        _check_version(header.get("v"))
        op = header.get("op")
        if not isinstance(op, str):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "header field 'op' must be a string")
        session = header.get("session")
        if not (session is None or (isinstance(session, str)
                                    and 0 < len(session) <= MAX_SESSION_CHARS)):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "header field 'session' must be a string "
                                f"of 1 to {MAX_SESSION_CHARS} characters", field="session")
        attempt, lease = header.get("attempt"), header.get("lease")
        if not (attempt is None or (_is_uint(attempt) and 1 <= attempt <= MAX_ATTEMPT)):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "header field 'attempt' must be an "
                                f"integer from 1 to {MAX_ATTEMPT}", field="attempt")
        if not (lease is None or _is_uint(lease)):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "header field 'lease' must be an "
                                "unsigned 64-bit integer", field="lease")
        args = _absent_as(header.get("args"), {})
        if not isinstance(args, dict) or (args and not all(isinstance(k, str) for k in args)):
            raise ProtocolError(ErrorCode.BAD_MESSAGE,
                                "header field 'args' must be a map with string keys")
        arrays = _decode_arrays(_absent_as(header.get("arrays"), []), frames[1:])
        return Request(id=request_id, op=op, args=args, arrays=arrays, session=session,
                       attempt=attempt, lease=lease)
    except ProtocolError as error:
        raise MalformedRequest(error, request_id) from None


def decode_reply(frames: Sequence[Frame]) -> Reply:
    """Decode reply frames (host side). Raises :class:`ProtocolError` on a malformed reply or
    one of another major protocol version."""
    header = _unpack_header(frames)
    _check_version(header.get("v"))
    ok = header.get("ok")
    if not isinstance(ok, bool) or not isinstance(header.get("device"), dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "reply header lacks 'ok' or 'device'")
    error = header.get("error")
    if not ok and not (isinstance(error, dict) and isinstance(error.get("code"), str)):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "error reply lacks 'error.code'")
    arrays = _decode_arrays(_absent_as(header.get("arrays"), []), frames[1:])
    return Reply(id=header.get("id"), ok=ok, result=header.get("result") or {},
                 error=error if not ok else None, device=header["device"], arrays=arrays)


def _is_uint(value: Any) -> bool:
    """An unsigned 64-bit integer (not a bool)."""
    return ((type(value) is int or (isinstance(value, int) and not isinstance(value, bool)))
            and 0 <= value <= UINT64_MAX)


def _absent_as(value: Any, empty: Any) -> Any:
    """An optional header field: nil or absent means ``empty``."""
    return empty if value is None else value


def _pack(header: Mapping[str, Any]) -> bytes:
    # A Packer per thread (the daemon packs on two), reused: msgpack.packb builds one per call.
    packer = getattr(_PACKERS, "packer", None)
    if packer is None:
        packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True)
    packed: bytes = packer.pack(header)
    return packed


def _unpack_header(frames: Sequence[Frame]) -> dict[str, Any]:
    if len(frames) == 0:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "empty message: expected a header frame")
    if len(frames) > 1 + MAX_ARRAYS:
        raise ProtocolError(ErrorCode.BAD_MESSAGE,
                            f"{len(frames)} frames: at most 1 header + {MAX_ARRAYS} arrays")
    raw = memoryview(frames[0])
    if raw.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE,
                            f"header of {raw.nbytes} bytes exceeds {MAX_HEADER_BYTES}",
                            limit=MAX_HEADER_BYTES)
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(ErrorCode.BAD_MESSAGE,
                            f"header frame is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header frame must be a msgpack map")
    return header


def _check_version(version: Any) -> None:
    if not (isinstance(version, list) and len(version) == 2
            and type(version[0]) is int and type(version[1]) is int):  # noqa: E721 (not bool)
        raise ProtocolError(ErrorCode.BAD_MESSAGE,
                            "header field 'v' must be [major, minor] integers")
    if version[0] != PROTOCOL_VERSION[0]:
        raise ProtocolError(
            ErrorCode.BAD_VERSION,
            f"protocol {version[0]}.{version[1]} is not supported; this side speaks "
            f"{PROTOCOL_VERSION[0]}.x", supported=list(PROTOCOL_VERSION))


def _array_frames(arrays: Mapping[str, np.ndarray]) -> tuple[list[dict[str, Any]], list[Frame]]:
    specs, buffers = [], []
    for name, array in arrays.items():
        if array.dtype.str not in ALLOWED_DTYPES or not array.flags.c_contiguous:
            raise ValueError(f"array {name!r} must be C-contiguous little-endian float64")
        specs.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape)})
        buffers.append(array)
    return specs, buffers


def _decode_arrays(specs: Any, frames: Sequence[Frame]) -> dict[str, np.ndarray]:
    if not frames and specs == []:  # most messages: nothing to check
        return {}
    if not isinstance(specs, list):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header field 'arrays' must be a list")
    if len(specs) != len(frames):
        raise ProtocolError(ErrorCode.BAD_MESSAGE,
                            f"header describes {len(specs)} arrays but {len(frames)} array "
                            "frames followed it")
    arrays: dict[str, np.ndarray] = {}
    for spec, frame in zip(specs, frames, strict=True):
        name, shape = _check_array_spec(spec)
        if name in arrays:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"array {name!r} appears twice")
        buffer = memoryview(frame)
        expected = int(np.prod(shape, dtype=np.int64)) * 8
        if buffer.nbytes != expected:
            raise ProtocolError(ErrorCode.BAD_SHAPE,
                                f"array {name!r} of shape {shape} needs {expected} bytes, its "
                                f"frame has {buffer.nbytes}", array=name)
        arrays[name] = np.frombuffer(buffer, dtype="<f8").reshape(shape)
    return arrays


def _check_array_spec(spec: Any) -> tuple[str, tuple[int, ...]]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ProtocolError(ErrorCode.BAD_MESSAGE,
                            "each array descriptor must be a map with a string 'name'")
    name, dtype, shape = spec["name"], spec.get("dtype"), spec.get("shape")
    if dtype not in ALLOWED_DTYPES:
        raise ProtocolError(ErrorCode.BAD_DTYPE,
                            f"array {name!r} has dtype {dtype!r}; allowed: {list(ALLOWED_DTYPES)}",
                            array=name, allowed=list(ALLOWED_DTYPES))
    if not (isinstance(shape, list) and len(shape) <= MAX_NDIM
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31
                    for d in shape)):
        raise ProtocolError(ErrorCode.BAD_SHAPE, f"array {name!r} has an invalid shape {shape!r}; "
                            f"expected a list of at most {MAX_NDIM} non-negative integers",
                            array=name)
    return name, tuple(shape)
