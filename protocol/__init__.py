"""Wire protocol between the SPU daemon (device/) and its hosts (host/): ZeroMQ + msgpack.

The bottom layer: it imports neither side. docs/protocol.md is its specification.
"""

from spusim.protocol.codec import (
    ALLOWED_DTYPES,
    MAX_ARRAYS,
    MAX_HEADER_BYTES,
    MAX_NDIM,
    MAX_SESSION_CHARS,
    PROTOCOL_VERSION,
    UINT64_MAX,
    MalformedRequest,
    Reply,
    Request,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from spusim.protocol.errors import ErrorCode, ProtocolError
from spusim.protocol.ops import (
    DRIFTS,
    FAULT_TRIGGERS,
    INTEGRATORS,
    MAX_LEASE_S,
    OPS,
    OpSpec,
    spec_for,
)

__all__ = [
    "ALLOWED_DTYPES", "DRIFTS", "FAULT_TRIGGERS", "INTEGRATORS", "MAX_ARRAYS", "MAX_HEADER_BYTES",
    "MAX_LEASE_S", "MAX_NDIM", "MAX_SESSION_CHARS", "OPS", "PROTOCOL_VERSION", "UINT64_MAX",
    "ErrorCode", "MalformedRequest", "OpSpec", "ProtocolError", "Reply", "Request",
    "decode_reply", "decode_request", "encode_reply", "encode_request", "spec_for",
]
