"""Wire protocol between the SPU daemon (device/) and its hosts (host/): ZeroMQ + msgpack.

The bottom layer: it imports neither side. docs/protocol.md is its specification.
"""

from protocol.codec import (
    ALLOWED_DTYPES,
    MAX_ARRAYS,
    MAX_HEADER_BYTES,
    MAX_NDIM,
    PROTOCOL_VERSION,
    MalformedRequest,
    Reply,
    Request,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.ops import INTEGRATORS, OPS, OpSpec, spec_for

__all__ = [
    "ALLOWED_DTYPES", "INTEGRATORS", "MAX_ARRAYS", "MAX_HEADER_BYTES", "MAX_NDIM", "OPS",
    "PROTOCOL_VERSION",
    "ErrorCode", "MalformedRequest", "OpSpec", "ProtocolError", "Reply", "Request",
    "decode_reply", "decode_request", "encode_reply", "encode_request", "spec_for",
]
