"""What a response says about itself besides usage: the provider's response id and why each
generation stopped, for the record's `response_id` and `finish_reasons`.

Runs once per record after the response is complete and never raises. A JSON body is decoded
once more (microseconds for a usual answer); a stream is searched for the keys with one scan of
its bytes and only the few events that hold them are decoded, never one per token. Reasons are the
provider's own words (`stop`, `end_turn`, `STOP`), one per choice or candidate in index order.
"""

from __future__ import annotations

from typing import Any

import orjson

from relaylog.providers import bedrock, bedrock_stream
from relaylog.providers.eventstream import looks_like_event_stream
from relaylog.providers.registry import Family, wire_family
from relaylog.providers.sse import SSEBody

Outcome = tuple[str | None, tuple[str, ...] | None]
_NOTHING: Outcome = (None, None)

# A key followed by a string value, compact (as every provider sends it) or spaced. Quotes inside
# JSON strings are escaped, so text a model wrote cannot match; a null value (every OpenAI content
# chunk has "finish_reason":null) does not either. Found with bytes.find, which skips through a
# long stream far faster than a regular expression that must try at every quote.
_FINISH_KEYS: dict[Family, tuple[bytes, bytes]] = {
    "openai": (b'"finish_reason":"', b'"finish_reason": "'),
    "anthropic": (b'"stop_reason":"', b'"stop_reason": "'),
    "gemini": (b'"finishReason":"', b'"finishReason": "'),
}
# The id is in the first events of a stream (after a ping at most): never looked for further.
_ID_EVENTS = 3


def read_outcome(family: Family, endpoint: str, body: bytes) -> Outcome:
    """(response id, finish reasons) of a decoded response body, each None when not stated."""
    try:
        family = wire_family(family, endpoint)
        if family == "bedrock" and looks_like_event_stream(body):
            body = bedrock_stream.transcript(body)[0]  # the raw frames of a Bedrock stream
        head = body.lstrip()[:1]
        if head in (b"{", b"["):
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError:
                return _NOTHING  # a cut JSON answer or array stream: nothing reliable to read
            return _from_json(family, obj)
        return _from_sse(family, body, SSEBody(body))
    except Exception:  # a reader bug must not lose the record
        return _NOTHING


def stream_outcome(family: Family, body: bytes, events: SSEBody) -> Outcome:
    """read_outcome of an event stream (not Bedrock's frames) whose events `events` already reads
    (`family` as wire_family gives it)."""
    try:
        return _from_sse(family, body, events)
    except Exception:  # a reader bug must not lose the record
        return _NOTHING


def json_outcome(family: Family, obj: Any) -> Outcome:
    """read_outcome of a JSON body already decoded (`family` as wire_family gives it)."""
    try:
        return _from_json(family, obj)
    except Exception:  # a reader bug must not lose the record
        return _NOTHING


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _reasons(by_index: dict[int, str]) -> tuple[str, ...] | None:
    if len(by_index) == 1:  # one choice, as nearly always: nothing to sort
        return tuple(by_index.values())
    return tuple([by_index[i] for i in sorted(by_index)]) or None  # a list: faster than a generator


def _choices(items: Any, key: str, by_index: dict[int, str]) -> None:
    """Collect `key` of each choice/candidate into by_index (a later one wins: streams repeat)."""
    if not isinstance(items, list):
        return
    for position, item in enumerate(items):
        if isinstance(item, dict) and (reason := _text(item.get(key))) is not None:
            index = item.get("index")
            by_index[index if isinstance(index, int) else position] = reason


def _from_json(family: Family, obj: Any) -> Outcome:
    if family == "gemini" and isinstance(obj, list):
        # streamGenerateContent without alt=sse: one array of chunks.
        by_index: dict[int, str] = {}
        response_id = None
        for chunk in obj:
            if isinstance(chunk, dict):
                response_id = response_id or _text(chunk.get("responseId"))
                _choices(chunk.get("candidates"), "finishReason", by_index)
        return response_id, _reasons(by_index)
    if not isinstance(obj, dict):
        return _NOTHING
    if family == "bedrock":  # Converse names no id; Anthropic's and OpenAI-shaped bodies do
        return _text(obj.get("id")), bedrock.finish_reasons(obj)
    if family == "anthropic":
        reason = _text(obj.get("stop_reason"))
        return _text(obj.get("id")), (reason,) if reason else None
    if family == "gemini":
        by_index = {}
        _choices(obj.get("candidates"), "finishReason", by_index)
        return _text(obj.get("responseId")), _reasons(by_index)
    if obj.get("object") == "response":
        return _responses_api(obj)
    by_index = {}
    _choices(obj.get("choices"), "finish_reason", by_index)
    return _text(obj.get("id")), _reasons(by_index)


def _responses_api(response: dict[str, Any]) -> Outcome:
    # The Responses API names no finish reason; an incomplete answer says why it stopped.
    details = response.get("incomplete_details")
    reason = _text(details.get("reason")) if isinstance(details, dict) else None
    return _text(response.get("id")), (reason,) if reason else None


def _from_sse(family: Family, body: bytes, events: SSEBody) -> Outcome:
    if family == "bedrock":
        return bedrock_stream.outcome(events.forward())
    first = _first_object(events)
    if family == "openai" and isinstance(first.get("response"), dict):
        # A Responses stream: its last event carries the whole final response object.
        for _name, data in events.backward():
            last = _loads(data)
            if isinstance(last, dict) and isinstance(last.get("response"), dict):
                return _responses_api(last["response"])
            break
        return _text(first["response"].get("id")), None
    if family == "anthropic":
        message = first.get("message")
        response_id = _text(message.get("id")) if isinstance(message, dict) else None
    else:
        response_id = _text(first.get("responseId" if family == "gemini" else "id"))
    return response_id, _stream_reasons(family, body)


def _first_object(events: SSEBody) -> dict[str, Any]:
    """The first event that is a JSON object (after a ping at most), or {}."""
    for seen, (_name, data) in enumerate(events.forward()):
        if seen == _ID_EVENTS:
            break
        obj = _loads(data)
        if isinstance(obj, dict) and obj.get("type") != "ping":
            return obj
    return {}


def _stream_reasons(family: Family, body: bytes) -> tuple[str, ...] | None:
    by_index: dict[int, str] = {}
    decoded: set[int] = set()
    for key in _FINISH_KEYS[family]:
        at = body.find(key)
        while at >= 0:
            start = body.rfind(b"\n", 0, at) + 1
            end = body.find(b"\n", at)
            at = body.find(key, end) if end >= 0 else -1
            if start in decoded:
                continue
            decoded.add(start)
            line = body[start : end if end >= 0 else len(body)].rstrip(b"\r")
            if line.startswith(b"data:"):
                _reasons_of(family, _loads(line[5:]), by_index)
        if by_index:
            break  # a provider writes one way: the spaced form is looked for only when needed
    return _reasons(by_index)


def _reasons_of(family: Family, obj: Any, by_index: dict[int, str]) -> None:
    if not isinstance(obj, dict):
        return
    if family == "anthropic":
        delta = obj.get("delta")
        if isinstance(delta, dict) and (reason := _text(delta.get("stop_reason"))):
            by_index[0] = reason
    elif family == "gemini":
        _choices(obj.get("candidates"), "finishReason", by_index)
    else:
        _choices(obj.get("choices"), "finish_reason", by_index)


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
