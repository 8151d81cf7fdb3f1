"""AWS event stream frames (`application/vnd.amazon.eventstream`), written the way Bedrock sends them.

Frame layout (docs.aws.amazon.com/lexv2/latest/dg/event-stream-encoding.html, the same encoding
every AWS event stream uses): a 12-byte prelude (total length, headers length,
CRC32 of those 8 bytes, all big-endian), the headers (name length as one byte, the name, the value
type 7 for a string, a two-byte value length, the value), the payload, and a CRC32 of everything
before it. botocore has no encoder; tests/test_bedrock_standin.py checks these frames with botocore's
decoder, the one boto3 and the Anthropic SDK read Bedrock streams with.
"""

from __future__ import annotations

import struct
import zlib

_STRING = 7


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return bytes((len(raw_name),)) + raw_name + bytes((_STRING,)) + struct.pack(">H", len(raw_value)) + raw_value


def frame(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    encoded = b"".join(_header(name, value) for name, value in headers)
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(event_type: str, payload: bytes) -> bytes:
    """An event frame, headers in the order Bedrock sends them."""
    return frame(
        [(":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")], payload
    )


def exception(exception_type: str, payload: bytes) -> bytes:
    """An exception frame: a modeled error sent in place of the next event (the stream ends after it)."""
    return frame(
        [(":exception-type", exception_type), (":content-type", "application/json"), (":message-type", "exception")],
        payload,
    )
