"""The wire codec: frames in, commands out; results, errors and events in, frames out.

Only this package knows msgid numbers, JSON field names, errno values and the legacy dialect.
"""

from chatserver.adapters.wire.decoding import BadRequest, Request, decode
from chatserver.adapters.wire.encoding import (
    MAX_OFFLINE_IN_LOGIN_ACK,
    encode_bad_request,
    encode_error,
    encode_event,
    encode_frame_too_large,
    encode_refusal,
    encode_result,
)
from chatserver.adapters.wire.protocol import Dialect

__all__ = [
    "MAX_OFFLINE_IN_LOGIN_ACK",
    "BadRequest",
    "Dialect",
    "Request",
    "decode",
    "encode_bad_request",
    "encode_error",
    "encode_event",
    "encode_frame_too_large",
    "encode_refusal",
    "encode_result",
]
