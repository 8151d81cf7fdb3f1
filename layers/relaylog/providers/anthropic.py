"""Anthropic Messages wire format.

Anthropic reports input, cache-write and cache-read tokens as three disjoint numbers; the record
schema's input counts all three, so they are summed here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from relaylog.providers.fields import as_dict, count, text
from relaylog.usage import Observed, Usage, stream_observed


def request_fields(obj: dict[str, Any]) -> tuple[str | None, bool, str | None]:
    """(model, stream, user) from a Messages request body."""
    user = as_dict(obj.get("metadata")).get("user_id")
    if not isinstance(user, str) or not user:
        user = None
    return text(obj, "model"), obj.get("stream") is True, user


def usage_from(u: dict[str, Any]) -> Usage | None:
    it = count(u.get("input_tokens"))
    out = count(u.get("output_tokens"))
    if it is None and out is None:
        return None
    cache_write = count(u.get("cache_creation_input_tokens"))
    cache_read = count(u.get("cache_read_input_tokens"))
    inp = None if it is None else it + (cache_write or 0) + (cache_read or 0)
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        # Thinking tokens are billed inside output_tokens and normally not broken out; read the
        # breakdown only if the API sends one (genai-prices knows this field name).
        reasoning_tokens=count(as_dict(u.get("output_tokens_details")).get("thinking_tokens")),
        cache_write_1h_tokens=count(as_dict(u.get("cache_creation")).get("ephemeral_1h_input_tokens")),
    )


def from_json(obj: Any) -> Observed:
    """A complete (non-streamed) Messages response."""
    if not isinstance(obj, dict):
        return Observed(parse_error="not a JSON object")
    if obj.get("type") == "error":
        return Observed()
    u = obj.get("usage")
    usage = usage_from(u) if isinstance(u, dict) else None
    return Observed(usage=usage, response_model=text(obj, "model"))


def _loads(data: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _is(name: bytes, data: bytes, kind: bytes) -> bool:
    # Anthropic names every event; the data test covers a relay that dropped the `event:` lines.
    return name == kind if name else kind in data


def from_sse(newest_first: Iterable[tuple[bytes, bytes]], oldest_first: Iterable[tuple[bytes, bytes]]) -> Observed:
    """A Messages event stream, possibly cut short, as (event name, data) pairs in both orders.

    `message_start` carries the input side; each `message_delta` carries CUMULATIVE usage (output
    so far, and in newer API versions the input fields again), so the latest one wins over the
    start values field by field: nothing is added up.
    """
    delta: dict[str, Any] | None = None
    stopped = errored = bad = False
    # Backwards for the latest message_delta: it sits just before message_stop.
    for name, data in newest_first:
        if _is(name, data, b"message_stop"):
            stopped = True
        elif _is(name, data, b"error") and (name or b'"type":"error"' in data.replace(b" ", b"")):
            errored = True
        elif _is(name, data, b"message_delta"):
            obj = _loads(data)
            if obj is None:
                bad = True
            elif obj.get("type") == "message_delta" and isinstance(obj.get("usage"), dict):
                delta = obj["usage"]
                break
        elif _is(name, data, b"message_start"):
            break  # cut before any message_delta
    start: dict[str, Any] | None = None
    model: str | None = None
    # Forwards for message_start: the first event, maybe after a ping.
    for name, data in oldest_first:
        if _is(name, data, b"message_start"):
            obj = _loads(data)
            if obj is None:
                bad = True
            elif obj.get("type") == "message_start":
                message = as_dict(obj.get("message"))
                model = text(message, "model")
                u = message.get("usage")
                start = u if isinstance(u, dict) else None
            break
        if name.startswith(b"content_block"):
            break  # message_start would have come before any content

    merged: dict[str, Any] = dict(start or ())
    for key, value in (delta or {}).items():
        if value is not None:
            merged[key] = value
    usage = usage_from(merged) if merged else None
    return stream_observed(usage, model, ended=stopped, errored=errored, bad_event=bad)


def terminal(name: bytes, data: bytes) -> bool:
    """Whether one stream event ends the stream: `message_stop`, or an `error` event."""
    if name:
        return name == b"message_stop" or name == b"error"
    obj = _loads(data) if b"message_stop" in data or b"error" in data else None
    return obj is not None and obj.get("type") in ("message_stop", "error")
