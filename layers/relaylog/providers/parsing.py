"""Reading requests and responses: byte-level work, then dispatch to the provider family.

`parse_request` runs on the hot path for every call; `parse_response` runs after the response is
complete (off the hot path, but thousands per second). Neither raises: whatever cannot be read is
reported in `parse_error` with a short reason that never quotes the body.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson

from relaylog.providers import anthropic, bedrock, bedrock_stream, gemini, openai
from relaylog.providers.eventstream import looks_like_event_stream
from relaylog.providers.registry import Family
from relaylog.usage import Observed

__all__ = [
    "RequestInfo",
    "SSEBody",
    "SSESplitter",
    "parse_request",
    "parse_response",
    "sse_events",
    "stream_ended",
    "wire_family",
]


@dataclass(frozen=True, slots=True)
class RequestInfo:
    model: str | None = None
    stream: bool = False
    user: str | None = None
    # The decoded JSON object, so the relay need not parse the body a second time.
    parsed: dict[str, Any] | None = None
    parse_error: str | None = None


# ---------------------------------------------------------------------------------------------
# SSE framing


# A blank line: two line terminators in a row, where "\r\n" is ONE terminator. The lookahead stops
# "\r\n" from being read as "\r" then "\n" (which would split an event at every line end).
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_CR = 13
_SPACE = 32


class SSESplitter:
    """Cuts a byte stream into raw SSE events as chunks arrive.

    Every returned event keeps its bytes exactly, terminating blank line included, so the relay can
    forward (or drop) whole events and `b"".join(all returned) + rest` is the input unchanged.
    """

    __slots__ = ("_buf", "_scan")

    def __init__(self) -> None:
        # The unfinished tail. A bytearray, so a big event arriving in many small chunks grows it
        # in place instead of being copied again on every chunk.
        self._buf = bytearray()
        # Where the next search starts: earlier bytes are known to hold no complete delimiter, so
        # a big event is not rescanned from its start on every chunk either.
        self._scan = 0

    @property
    def rest(self) -> bytes:
        """Bytes received after the last complete event (an unfinished event, or nothing)."""
        return bytes(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf
        if buf:
            buf += chunk
            data: bytes | bytearray = buf
        else:
            # Nothing pending (reads usually end on an event boundary): search the chunk itself.
            data = chunk if type(chunk) is bytes else bytes(chunk)
        n = len(data)
        events: list[bytes] = []
        start = 0
        pos = self._scan
        crs = data.count(b"\r", pos)
        if crs == 0 or crs == data.count(b"\r\n", pos) == data.count(b"\n", pos):
            # Fast paths for one line-end style: "\n" only (OpenAI, Anthropic) or "\r\n" only
            # (Gemini), where a blank line is always the same bytes.
            delimiter = b"\r\n\r\n" if crs else b"\n\n"
            find = data.find
            while (i := find(delimiter, pos)) >= 0:
                end = i + len(delimiter)
                events.append(
                    data if end == n and not start and data is chunk else bytes(data[start:end])
                )
                start = pos = end
        else:
            search = _BLANK_LINE.search
            while (m := search(data, pos)) is not None:
                end = m.end()
                if end == n and data[-1] == _CR:
                    break  # the final "\r" may be the first half of "\r\n": wait for more bytes
                events.append(bytes(data[start:end]))
                start = pos = end
        if data is buf:
            if start:
                del buf[:start]
        elif start < n:
            self._buf = buf = bytearray(data[start:])
        # A delimiter is at most 4 bytes ("\r\n\r\n"), so one that completes in the next chunk
        # starts in the last 3 bytes of this one.
        self._scan = max(0, len(buf) - 3)
        return events


_BOM = b"\xef\xbb\xbf"


class SSEBody:
    """A complete or cut SSE body, read lazily event by event from either end.

    Usage sits in the last events of a stream (and the model in the first), so a parser walking
    from the end decodes a few events, not one per token.
    """

    __slots__ = ("_body", "_end", "_start")

    def __init__(self, body: bytes) -> None:
        if _CR in body:
            # Every line-end style becomes "\n" (JSON payloads never hold raw CR/LF in strings).
            body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self._body = body
        self._start = 3 if body.startswith(_BOM) else 0
        # A last line without its terminator was cut: ignored, as the SSE spec says.
        self._end = body.rfind(b"\n") + 1

    def forward(self) -> Iterator[tuple[bytes, bytes]]:
        """(event name, data) of each event that has data, first to last."""
        body, end, pos = self._body, self._end, self._start
        while pos < end:
            i = body.find(b"\n\n", pos, end)
            stop = end if i < 0 else i
            if stop > pos and (event := _event(body, pos, stop)) is not None:
                yield event
            if i < 0:
                return
            pos = i + 2

    def backward(self) -> Iterator[tuple[bytes, bytes]]:
        """(event name, data) of each event that has data, last to first."""
        body, lo, end = self._body, self._start, self._end
        while end > lo:
            i = body.rfind(b"\n\n", lo, end)
            start = lo if i < 0 else i + 2
            if end > start and (event := _event(body, start, end)) is not None:
                yield event
            if i < 0:
                return
            end = i


def _event(body: bytes, start: int, end: int) -> tuple[bytes, bytes] | None:
    """(name, data) of the event in body[start:end]; multi-line data joined with "\n"; comments and
    `id:`/`retry:` fields dropped; None when it has no data."""
    if body.startswith(b"data:", start) and body.find(b"\n", start, end) < 0:
        # Fast path: the common one-line event.
        start += 5
        if start < end and body[start] == _SPACE:
            start += 1
        return b"", body[start:end]
    name = b""
    parts: list[bytes] = []
    for line in body[start:end].split(b"\n"):
        if line.startswith(b"data:"):
            parts.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[7:] if line[6:7] == b" " else line[6:]
    if not parts:
        return None
    return name, parts[0] if len(parts) == 1 else b"\n".join(parts)


def sse_events(body: bytes) -> list[tuple[bytes, bytes]]:
    """(event name, data) for each event of a complete or cut SSE body that has data."""
    return list(SSEBody(body).forward())


# ---------------------------------------------------------------------------------------------
# JSON


def _json_error(exc: orjson.JSONDecodeError) -> str:
    """A short reason for a body orjson refused; never any of the body itself."""
    msg = exc.msg
    if "depth limit" in msg or "recursion" in msg:
        return "JSON too deeply nested"
    if "UTF-8" in msg:
        return "invalid UTF-8"
    if "number" in msg:
        return "number out of range"
    if "unexpected end" in msg:
        return "truncated JSON"
    if "empty" in msg:
        return "empty body"
    return "invalid JSON"


_LEADING_WS = re.compile(rb"[ \t\r\n]*")

# Fallbacks for a body that is not valid JSON: a key match only, so quoted text inside messages
# (where quotes are escaped) cannot be mistaken for it.
_MODEL_KEY = re.compile(rb'"model"[ \t\r\n]*:[ \t\r\n]*"([^"\\\r\n]{1,256})"')
_STREAM_KEY = re.compile(rb'"stream"[ \t\r\n]*:[ \t\r\n]*true\b')
_FORM_MODEL = re.compile(rb'name="model"\r?\n(?:[^\r\n]+\r?\n)*\r?\n([^\r\n]{1,256})\r?\n')
_FORM_STREAM = re.compile(rb'name="stream"\r?\n(?:[^\r\n]+\r?\n)*\r?\ntrue\r?\n')


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode() or None
    except UnicodeDecodeError:
        return None


# ---------------------------------------------------------------------------------------------
# Requests


def parse_request(family: Family, endpoint: str, body: bytes) -> RequestInfo:
    """Model, stream flag and user of a request, plus the decoded body for the relay to reuse."""
    try:
        return _parse_request(family, endpoint, body)
    except Exception as exc:  # a parser bug must not break the relay
        return RequestInfo(parse_error=f"parser error: {type(exc).__name__}")


def wire_family(family: Family, endpoint: str) -> Family:
    """The format a call actually uses: Gemini and Anthropic also serve OpenAI-compatible
    endpoints (`/v1beta/openai/chat/completions`, `/v1/chat/completions`) with OpenAI bodies."""
    if family == "gemini" and "/openai/" in endpoint:
        return "openai"
    if family == "anthropic" and endpoint.split("?", 1)[0].endswith("/chat/completions"):
        return "openai"
    if family == "bedrock" and bedrock.is_openai(endpoint):
        return "openai"
    return family


def _parse_request(family: Family, endpoint: str, body: bytes) -> RequestInfo:
    family = wire_family(family, endpoint)
    if type(body) is not bytes:
        body = bytes(body)  # bytearray / memoryview from the server's buffers
    path_model: str | None = None
    path_stream = False
    if family == "gemini":
        # Gemini names the model and the streaming mode in the path, never in the body.
        path_model, action = gemini.model_from_path(endpoint)
        path_stream = action == "streamGenerateContent"
    elif family == "bedrock":
        # So does Bedrock (`/model/{modelId}/converse-stream`).
        path_model, path_stream, _ = bedrock.request_fields(endpoint, {})

    if not body:
        return RequestInfo(path_model, path_stream, parse_error="empty body")
    if body.startswith(b"--"):
        # multipart/form-data (audio transcription, file uploads): model is a form field.
        if family in ("gemini", "bedrock"):
            return RequestInfo(path_model, path_stream, parse_error="multipart body")
        m = _FORM_MODEL.search(body)
        return RequestInfo(
            _text(m.group(1) if m else None),
            _FORM_STREAM.search(body) is not None,
            parse_error="multipart body",
        )
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = _json_error(exc)
        if family in ("gemini", "bedrock"):
            return RequestInfo(path_model, path_stream, parse_error=error)
        # Still name the model when the body is broken (e.g. one absurd number in it).
        m = _MODEL_KEY.search(body)
        model = _text(m.group(1) if m else None) or (
            openai.request_fields({}, endpoint)[0] if family == "openai" else None
        )
        return RequestInfo(model, _STREAM_KEY.search(body) is not None, parse_error=error)
    if not isinstance(obj, dict):
        model = openai.request_fields({}, endpoint)[0] if family == "openai" else path_model
        return RequestInfo(model, path_stream, parse_error="not a JSON object")

    if family == "openai":
        model, stream, user = openai.request_fields(obj, endpoint)
    elif family == "anthropic":
        model, stream, user = anthropic.request_fields(obj)
    elif family == "bedrock":
        model, stream, user = bedrock.request_fields(endpoint, obj)
    else:
        model, stream, user = path_model, path_stream, None
    return RequestInfo(model, stream, user, obj)


# ---------------------------------------------------------------------------------------------
# Responses

_SSE_STARTS = (b"data:", b"event:", b":", b"id:", b"retry:")
_BINARY_TYPES = ("audio/", "image/", "video/", "application/octet-stream", "application/zip")


def parse_response(family: Family, endpoint: str, body: bytes, content_type: str) -> Observed:
    """Usage and reported model from a complete response body, or from a prefix of one (cut).

    `body` is the decoded (decompressed) body; for a stream cut short, the usage seen so far is
    returned with parse_error "truncated stream". Error bodies give usage None without an error.
    """
    try:
        return _parse_response(family, endpoint, body, content_type)
    except Exception as exc:  # a parser bug must not lose the record
        return Observed(parse_error=f"parser error: {type(exc).__name__}")


def _parse_response(family: Family, endpoint: str, body: bytes, content_type: str) -> Observed:
    family = wire_family(family, endpoint)
    if type(body) is not bytes:
        body = bytes(body)  # bytearray / memoryview from the relay's buffers
    if family == "bedrock" and looks_like_event_stream(body):
        # The raw frames of a Bedrock stream (the recorder hands over their SSE transcript instead).
        text, problem = bedrock_stream.transcript(body)
        observed = _parse_sse(family, text) if text else Observed()
        return observed if problem is None else replace(observed, parse_error=problem)
    m = _LEADING_WS.match(body)
    first = m.end() if m else 0
    head = body[first : first + 1]
    if not head:
        return Observed(parse_error="empty body")
    if head == b"{" or head == b"[":
        return _parse_json(family, body, head == b"[")
    if body.startswith(_SSE_STARTS, first) or body.startswith(_BOM, first):
        return _parse_sse(family, body)
    ctype = content_type.lower()
    if "event-stream" in ctype:
        return _parse_sse(family, body)
    if ctype.startswith(_BINARY_TYPES):
        return Observed()  # speech audio, images: nothing token-shaped to read
    return Observed(parse_error="not JSON")


def _parse_json(family: Family, body: bytes, is_array: bool) -> Observed:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = _json_error(exc)
        if family == "gemini" and is_array:
            # streamGenerateContent without alt=sse streams one JSON array progressively.
            return gemini.from_partial_array(
                body, "truncated stream" if error == "truncated JSON" else error
            )
        m = _MODEL_KEY.search(body) if family != "gemini" else None
        return Observed(response_model=_text(m.group(1) if m else None), parse_error=error)
    if family == "openai":
        return openai.from_json(obj)
    if family == "anthropic":
        return anthropic.from_json(obj)
    if family == "bedrock":
        return bedrock.from_json(obj)
    return gemini.from_json(obj)


def _parse_sse(family: Family, body: bytes) -> Observed:
    events = SSEBody(body)
    if family == "openai":
        return openai.from_sse(events.backward())
    if family == "anthropic":
        return anthropic.from_sse(events.backward(), events.forward())
    if family == "bedrock":
        return bedrock_stream.from_sse(events.backward(), events.forward())
    return gemini.from_sse(events.backward())


# ---------------------------------------------------------------------------------------------
# Completeness

# Blank lines in the SSE spec's three line-end styles (and their mixes), which end an event.
_BLANK_LINES = (b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r\n", b"\r\n\n")
# Events looked at from the end for the terminal one: a provider may send a little after it (a
# comment, a late usage chunk).
_TERMINAL_LOOKBACK = 4


def stream_ended(family: Family, endpoint: str, body: bytes) -> bool:
    """Whether `body`, a streamed response as far as it reached the client (decoded), holds the
    provider's terminal event: `[DONE]`, `message_stop`, a final Responses event, Gemini's chunk
    with a finish reason, an in-stream error, or the closing `]` of a Gemini JSON-array stream.

    The relay asks only when a connection ends before the body does (never per chunk), so it
    costs nothing on the hot path. Never raises."""
    try:
        return _stream_ended(wire_family(family, endpoint), body)
    except Exception:  # a parser bug must not turn into a failed call
        return False


def _stream_ended(family: Family, body: bytes) -> bool:
    if family == "bedrock":
        return bedrock_stream.ended(body)
    m = _LEADING_WS.match(body)
    if family == "gemini" and body.startswith(b"[", m.end() if m else 0):
        # streamGenerateContent without alt=sse: one JSON array, complete once it parses.
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        return True
    # An event has reached the client once its blank line has: later bytes are an unfinished one.
    end = max((i + len(blank) for blank in _BLANK_LINES if (i := body.rfind(blank)) >= 0), default=0)
    events = SSEBody(body[:end]).backward()
    for _, (name, data) in zip(range(_TERMINAL_LOOKBACK), events, strict=False):
        if family == "openai":
            found = openai.terminal(name, data)
        elif family == "anthropic":
            found = anthropic.terminal(name, data)
        else:
            found = gemini.terminal(data)
        if found:
            return True
    return False
