"""What a response says about itself besides usage: the provider's response id and why each
generation stopped, for the record's `response_id` and `finish_reasons`.

Runs once per record after the response is complete and never raises. A JSON body is decoded
once more (microseconds for a usual answer); a stream is searched for the keys with one scan of
its bytes and only the few events that hold them are decoded, never one per token. Reasons are the
provider's own words (`stop`, `end_turn`, `STOP`), one per choice or candidate in index order.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from relaylog.providers.parsing import SSEBody, wire_family
from relaylog.providers.registry import Family

Outcome = tuple[str | None, tuple[str, ...] | None]
_NOTHING: Outcome = (None, None)

# A key followed by a string value. Quotes inside JSON strings are escaped, so text a model wrote
# cannot match; a null value (every OpenAI content chunk has "finish_reason":null) does not either.
_FINISH_KEYS: dict[Family, re.Pattern[bytes]] = {
    "openai": re.compile(rb'"finish_reason"[ \t]*:[ \t]*"'),
    "anthropic": re.compile(rb'"stop_reason"[ \t]*:[ \t]*"'),
    "gemini": re.compile(rb'"finishReason"[ \t]*:[ \t]*"'),
}
# The id is in the first events of a stream (after a ping at most): never looked for further.
_ID_EVENTS = 3


def read_outcome(family: Family, endpoint: str, body: bytes) -> Outcome:
    """(response id, finish reasons) of a decoded response body, each None when not stated."""
    try:
        family = wire_family(family, endpoint)
        head = body.lstrip()[:1]
        if head in (b"{", b"["):
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError:
                return _NOTHING  # a cut JSON answer or array stream: nothing reliable to read
            return _from_json(family, obj)
        return _from_sse(family, body)
    except Exception:  # a reader bug must not lose the record
        return _NOTHING


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _reasons(by_index: dict[int, str]) -> tuple[str, ...] | None:
    return tuple(by_index[i] for i in sorted(by_index)) or None


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


def _from_sse(family: Family, body: bytes) -> Outcome:
    events = SSEBody(body)
    if family == "openai":
        for _name, data in events.backward():
            obj = _loads(data)
            # A Responses stream ends with the whole response object; chat streams do not.
            if isinstance(obj, dict) and isinstance(obj.get("response"), dict):
                return _responses_api(obj["response"])
            break
    return _stream_id(family, events), _stream_reasons(family, body)


def _stream_id(family: Family, events: SSEBody) -> str | None:
    for seen, (_name, data) in enumerate(events.forward()):
        if seen == _ID_EVENTS:
            break
        obj = _loads(data)
        if not isinstance(obj, dict):
            continue
        if family == "anthropic":
            message = obj.get("message")
            if isinstance(message, dict) and (found := _text(message.get("id"))):
                return found
        elif found := _text(obj.get("responseId" if family == "gemini" else "id")):
            return found
    return None


def _stream_reasons(family: Family, body: bytes) -> tuple[str, ...] | None:
    by_index: dict[int, str] = {}
    decoded: set[int] = set()
    for match in _FINISH_KEYS[family].finditer(body):
        start = body.rfind(b"\n", 0, match.start()) + 1
        if start in decoded:
            continue
        decoded.add(start)
        end = body.find(b"\n", match.end())
        line = body[start : end if end >= 0 else len(body)].rstrip(b"\r")
        if not line.startswith(b"data:"):
            continue
        obj = _loads(line[5:])
        if not isinstance(obj, dict):
            continue
        if family == "anthropic":
            delta = obj.get("delta")
            if isinstance(delta, dict) and (reason := _text(delta.get("stop_reason"))):
                by_index[0] = reason
        elif family == "gemini":
            _choices(obj.get("candidates"), "finishReason", by_index)
        else:
            _choices(obj.get("choices"), "finish_reason", by_index)
    return _reasons(by_index)


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
