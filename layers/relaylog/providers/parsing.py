"""Reading requests and responses: sniffing and decoding the bytes, then dispatch to the provider
family's module (SSE framing itself is `sse.py`).

`parse_request` runs on the hot path for every call; `parse_response` runs after the response is
complete (off the hot path, but thousands per second). Neither raises: whatever cannot be read is
reported in `parse_error` with a short reason that never quotes the body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from relaylog.providers import anthropic, bedrock, bedrock_stream, gemini, openai
from relaylog.providers.eventstream import looks_like_event_stream
from relaylog.providers.outcome import Outcome, json_outcome, read_outcome, stream_outcome
from relaylog.providers.registry import Family, wire_family
from relaylog.providers.sse import SSEBody, complete_prefix, looks_like_sse
from relaylog.usage import Observed

__all__ = ["RequestInfo", "parse_request", "parse_response", "read_response", "stream_ended"]


@dataclass(frozen=True, slots=True)
class RequestInfo:
    model: str | None = None
    stream: bool = False
    user: str | None = None
    # The decoded JSON object, so the relay need not parse the body a second time.
    parsed: dict[str, Any] | None = None
    parse_error: str | None = None


# ---------------------------------------------------------------------------------------------
# JSON


# What parse_error says of a body orjson refused.
JsonError = Literal[
    "JSON too deeply nested", "invalid UTF-8", "number out of range", "truncated JSON", "empty body", "invalid JSON"
]


def _json_error(exc: orjson.JSONDecodeError) -> JsonError:
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

_BINARY_TYPES = ("audio/", "image/", "video/", "application/octet-stream", "application/zip")


def parse_response(family: Family, endpoint: str, body: bytes, content_type: str) -> Observed:
    """Usage and reported model from a complete response body, or from a prefix of one (cut).

    `body` is the decoded (decompressed) body; for a stream cut short, the usage seen so far is
    returned with parse_error "truncated stream". Error bodies give usage None without an error.
    """
    try:
        return _parse_response(family, endpoint, body, content_type)
    except Exception as exc:  # a parser bug must not lose the record
        return _parser_error(exc)


def read_response(
    family: Family, endpoint: str, body: bytes, content_type: str, withheld: bytes = b""
) -> tuple[Observed, Outcome]:
    """`parse_response` of `body + withheld` (what the client saw, then what relaylog kept from
    it) and `read_outcome` of `body`, reading the bytes once for both: a JSON object is decoded
    once (each decoding it cost ~2 us of a small answer's record), an event stream cut into events
    once."""
    wire = wire_family(family, endpoint)
    if wire != "bedrock" and type(body) is bytes:
        if body[:1] == b"{" and not withheld:
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError:
                pass  # the two readers say what they make of it
            else:
                try:
                    observed = _from_json(wire, obj)
                except Exception as exc:  # a parser bug must not lose the record
                    observed = _parser_error(exc)
                return observed, json_outcome(wire, obj)
        elif looks_like_sse(body):
            # Both readers would take it for a stream (sniffed as parse_response does; it begins
            # with no whitespace read_outcome would strip).
            events = SSEBody(body + withheld if withheld else body)
            if not withheld:
                return _guarded_sse(wire, events), stream_outcome(wire, body, events)
            if events.as_given:
                return _guarded_sse(wire, events), stream_outcome(wire, body, events.prefix(len(body)))
    readable = body + withheld if withheld else body
    return parse_response(family, endpoint, readable, content_type), read_outcome(family, endpoint, body)


def _guarded_sse(family: Family, events: SSEBody) -> Observed:
    try:
        return _from_events(family, events)
    except Exception as exc:  # a parser bug must not lose the record
        return _parser_error(exc)


def _parser_error(exc: Exception) -> Observed:
    return Observed(parse_error=f"parser error: {type(exc).__name__}")


def _parse_response(family: Family, endpoint: str, body: bytes, content_type: str) -> Observed:
    family = wire_family(family, endpoint)
    if type(body) is not bytes:
        body = bytes(body)  # bytearray / memoryview from the relay's buffers
    if family == "bedrock" and looks_like_event_stream(body):
        # The raw frames of a Bedrock stream (the recorder hands over their SSE transcript instead).
        text, problem = bedrock_stream.transcript(body)
        observed = _parse_sse(family, text) if text else Observed()
        return observed if problem is None else observed._replace(parse_error=problem)
    m = _LEADING_WS.match(body)
    first = m.end() if m else 0
    head = body[first : first + 1]
    if not head:
        return Observed(parse_error="empty body")
    if head == b"{" or head == b"[":
        return _parse_json(family, body, head == b"[")
    if looks_like_sse(body, first):
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
            return gemini.from_partial_array(body, "truncated stream" if error == "truncated JSON" else error)
        m = _MODEL_KEY.search(body) if family != "gemini" else None
        return Observed(response_model=_text(m.group(1) if m else None), parse_error=error)
    return _from_json(family, obj)


def _from_json(family: Family, obj: Any) -> Observed:
    if family == "openai":
        return openai.from_json(obj)
    if family == "anthropic":
        return anthropic.from_json(obj)
    if family == "bedrock":
        return bedrock.from_json(obj)
    return gemini.from_json(obj)


def _parse_sse(family: Family, body: bytes) -> Observed:
    return _from_events(family, SSEBody(body))


def _from_events(family: Family, events: SSEBody) -> Observed:
    if family == "openai":
        return openai.from_sse(events.backward())
    if family == "anthropic":
        return anthropic.from_sse(events.backward(), events.forward())
    if family == "bedrock":
        return bedrock_stream.from_sse(events.backward(), events.forward())
    return gemini.from_sse(events.backward())


# ---------------------------------------------------------------------------------------------
# Completeness

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
    events = SSEBody(complete_prefix(body)).backward()
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
