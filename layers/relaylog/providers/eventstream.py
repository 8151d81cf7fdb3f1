"""AWS event streams (`application/vnd.amazon.eventstream`), decoded with botocore's own decoder.

A stream is a run of binary frames: a prelude (total length, headers length, CRC32 of the two),
typed headers (`:message-type`, `:event-type` or `:exception-type`, `:content-type`), a payload
and a CRC32 of the whole frame. The relay passes the frames on as they arrive and never looks at
them; this module reads a finished (or cut) stream for the record, off the hot path, and never
raises.

Decoder choice, measured on this 2-core machine under the usual load of other work (249-byte
Bedrock `chunk` frames, 5,000 of them): botocore's `EventStreamBuffer` fed one frame at a time
took 20-30 µs a frame (CRCs, header parsing, slicing), a hand-written decoder 10-14 µs. Off the
hot path that difference is a few milliseconds for a long stream, so botocore's maintained decoder
is used. It is fed one frame at a time because its buffer copies everything behind a frame after
each one: given a whole body it grows quadratic (24-60 µs a frame at 500 frames, 90 at 5,000). The
frame length is read from the prelude only to cut the body; botocore checks both CRCs itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

# The prelude is 12 bytes; the smallest frame adds the 4-byte message CRC.
_PRELUDE = 12
_MIN_FRAME = _PRELUDE + 4


@dataclass(frozen=True, slots=True)
class Frame:
    headers: dict[str, Any]
    payload: bytes

    @property
    def message_type(self) -> str:
        value = self.headers.get(":message-type")
        return value if isinstance(value, str) else ""

    @property
    def name(self) -> str:
        """The event's `:event-type`, an exception's `:exception-type`, or "error" for an error frame."""
        if self.message_type == "exception":
            key = ":exception-type"
        elif self.message_type == "error":
            return "error"
        else:
            key = ":event-type"
        value = self.headers.get(key)
        return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Decoded:
    frames: list[Frame]
    # Why decoding stopped before the end of the body: a cut frame or a damaged one.
    problem: str | None = None


TRUNCATED = "truncated stream"
DAMAGED = "damaged event stream frame"


def looks_like_event_stream(body: bytes) -> bool:
    """Whether `body` starts with a plausible prelude (a JSON or SSE body never does: its first
    bytes would read as a length of hundreds of megabytes)."""
    if len(body) < _MIN_FRAME:
        return False
    total = int.from_bytes(body[:4], "big")
    headers = int.from_bytes(body[4:8], "big")
    return _MIN_FRAME <= total <= 16 * 1024 * 1024 and headers <= total - _MIN_FRAME


def decode(body: bytes) -> Decoded:
    """Every whole frame of `body`, in order, and what stopped the decoding early (if anything)."""
    from botocore.eventstream import EventStreamBuffer, ParserError  # imported at the first stream only

    frames: list[Frame] = []
    buffer = EventStreamBuffer()
    pos, end = 0, len(body)
    while pos < end:
        if end - pos < _MIN_FRAME:
            return Decoded(frames, TRUNCATED)
        total = int.from_bytes(body[pos : pos + 4], "big")
        if total < _MIN_FRAME:
            return Decoded(frames, DAMAGED)
        buffer.add_data(body[pos : pos + total])
        try:
            message = next(buffer, None)
        except ParserError:  # a CRC that does not match, headers or a payload too long
            return Decoded(frames, DAMAGED)
        except Exception:  # noqa: BLE001 - botocore's header parser on garbage (a bad type byte)
            return Decoded(frames, DAMAGED)
        if message is None:
            return Decoded(frames, TRUNCATED)
        # botocore-stubs types `headers` as an int; botocore parses them into a dict.
        frames.append(Frame(cast(dict[str, Any], message.headers), bytes(message.payload)))
        pos += total
    return Decoded(frames)
