"""Turning an exchange into a schema-v1 record: decode, read usage, price, place bodies."""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import orjson

from .config import Settings
from .observe import Attempt, Exchange
from .otel.context import trace_context
from .providers.bedrock_stream import CONTENT_TYPE, as_recorded
from .providers.eventstream import DAMAGED
from .providers.outcome import read_outcome
from .providers.parsing import parse_response, read_response
from .providers.registry import Provider
from .providers.sse import complete_prefix, complete_suffix
from .record import SCHEMA_VERSION, ErrorType, Record, UsageSource
from .usage import EMPTY_FIELDS, Observed, Usage

# cost.price: (usage, model, provider) -> (cost_usd, cost_source).
_Price = Callable[[Usage, str | None, Provider], tuple[float | None, str]]

# Content types stored as text in the record; anything else (audio, images, multipart) is binary.
_TEXT_TYPES = (
    "application/json",
    "text/",
    "application/x-ndjson",
    "application/xml",
    "application/x-www-form-urlencoded",
)


# What the record says of a response nothing read (no provider, or never answered).
_UNREAD = Observed()


class BodyStore(Protocol):
    def put(self, request_id: str, dt: str, kind: str, data: bytes) -> str:
        """Store a body kept out of the record; returns the reference saved in *_body_ref."""


def build_record(exchange: Exchange, settings: Settings, bodies: BodyStore) -> Record:
    created_at = utc_text(exchange.created_at)
    dt = created_at[:10]  # YYYY-MM-DD
    provider = exchange.provider
    meta = exchange.meta
    problems: list[str] = []
    if exchange.request_parse_error:
        problems.append(f"request: {exchange.request_parse_error}")

    response_raw = b"".join(exchange.response_chunks)
    truncated = exchange.response_bytes > len(response_raw)
    if truncated:
        problems.append("response: body larger than the capture limit, stored truncated")
    response_plain = _decode(response_raw, exchange.response_content_encoding, problems)

    content_type = exchange.response_content_type or ""
    # What is read for usage is the body plus what the client never saw (usage relaylog asked for).
    withheld = b"".join(exchange.withheld) if exchange.withheld else b""
    readable: bytes | None = None  # set where that is not response_plain + withheld
    bedrock_stream = provider is not None and provider.family == "bedrock" and content_type.startswith(CONTENT_TYPE)
    if response_plain and bedrock_stream:
        # A Bedrock event stream is kept as SSE text, one event per binary frame.
        response_plain, readable, problem = as_recorded(response_plain, exchange.withheld)
        content_type = "text/event-stream"
        if problem == DAMAGED:
            problems.append(f"response: {problem}")

    # What usage and the outcome are read from: the body kept, or past the capture limit that and
    # the end kept after it (usage, finish reasons and a stream's last events come last).
    read = response_plain
    if truncated and exchange.response_tail and not bedrock_stream:  # (its binary frames: as kept)
        read = _with_tail(response_raw, exchange, content_type) or response_plain

    observed = _UNREAD
    response_id: str | None = None
    finish_reasons: tuple[str, ...] | None = None
    hit = exchange.cache_status == "HIT"
    answered = exchange.upstream_started is not None or hit
    if provider is not None and answered and response_plain is not None:
        endpoint = exchange.endpoint or exchange.path
        if read and (readable is None or readable is response_plain):
            observed, (response_id, finish_reasons) = read_response(
                provider.family, endpoint, read, content_type, withheld
            )
        else:
            if readable is None:
                readable = response_plain + withheld
            observed = parse_response(provider.family, endpoint, readable, content_type)
            if response_plain:
                response_id, finish_reasons = read_outcome(provider.family, endpoint, response_plain)
        if observed.parse_error and exchange.status < 400:
            problems.append(f"response: {observed.parse_error}")
    error_type: ErrorType | None = exchange.error_type
    if error_type is None and observed.stream_error:
        error_type = "upstream_stream_error"

    usage = observed.usage
    usage_source: UsageSource
    if usage is None:
        usage_source = "absent"
        cost_usd, cost_source = None, "no_usage"
    else:
        usage_source = "provider_injected" if exchange.usage_injected else "provider"
        priced_model = meta.model_override or observed.response_model or exchange.model
        if provider is None:
            cost_usd, cost_source = None, "unknown_model"
        else:
            cost_usd, cost_source = _pricer()(usage, priced_model, provider)
    properties = meta.properties
    if hit:
        # A hit costs nothing; what the provider would have charged is kept as a property.
        if cost_usd is not None:
            properties = {**properties, "cache_saved_usd": repr(cost_usd)}
        cost_usd, cost_source = 0.0, "cache_hit"

    latency_ms = _ms(exchange.started, exchange.finished)
    upstream_ms = (
        _ms(exchange.upstream_started, exchange.upstream_finished)
        if exchange.upstream_started is not None and exchange.upstream_finished is not None
        else None
    )
    request_body, request_ref = _place_body(
        exchange.request_body,
        exchange.request_content_type,
        meta.omit_request,
        exchange,
        dt,
        "request",
        settings,
        bodies,
    )
    response_body, response_ref = _place_body(
        response_plain if response_plain is not None else response_raw,
        content_type,
        meta.omit_response,
        exchange,
        dt,
        "response",
        settings,
        bodies,
    )
    traceparent, tracestate = trace_context(meta.traceparent, meta.tracestate)
    record: Record = {
        "schema_version": SCHEMA_VERSION,
        "request_id": exchange.request_id,
        "created_at": created_at + "Z",
        "dt": dt,
        "hour": created_at[11:13],
        "provider": provider.name if provider is not None else "unknown",
        "endpoint": exchange.endpoint or exchange.path,
        "method": exchange.method,
        "model": exchange.model,
        "response_model": observed.response_model,
        "status": exchange.status,
        "stream": exchange.stream,
        "latency_ms": latency_ms,
        "ttft_ms": _ms(exchange.started, exchange.ttft) if exchange.ttft is not None else None,
        "upstream_ms": upstream_ms,
        "overhead_ms": round(max(latency_ms - (upstream_ms or 0.0), 0.0), 3),
        **(usage.as_fields() if usage is not None else EMPTY_FIELDS),  # type: ignore[typeddict-item]
        "usage_source": usage_source,
        "cost_usd": cost_usd,
        "cost_source": cost_source,
        "user_id": exchange.user,
        "session_id": meta.session_id,
        "session_path": meta.session_path,
        "session_name": meta.session_name,
        "prompt_id": meta.prompt_id,
        "properties": properties,
        "key_id": exchange.key_id,
        "cache_status": exchange.cache_status,
        "attempt_count": len(exchange.attempts),
        "attempts": _attempts(exchange.attempts) if exchange.show_attempts else None,
        "fallback_index": exchange.fallback_index,
        "error_type": error_type,
        "parse_error": "; ".join(problems) or None,
        "request_body": request_body,
        "response_body": response_body,
        "request_body_ref": request_ref,
        "response_body_ref": response_ref,
        "request_bytes": len(exchange.request_body),
        "response_bytes": exchange.response_bytes,
        "response_id": response_id,
        "finish_reasons": orjson.dumps(finish_reasons).decode() if finish_reasons else None,
        "traceparent": traceparent,
        "tracestate": tracestate,
    }
    return record


def _with_tail(head: bytes, exchange: Exchange, content_type: str) -> bytes | None:
    """A response cut at the capture limit, read with the end kept after it: the whole body when
    nothing was dropped between them; else, for an event stream as sent (not compressed), the
    whole events of each side (those in the gap are lost); else None."""
    tail = b"".join(exchange.response_tail or ())
    encoding = exchange.response_content_encoding
    if exchange.response_bytes - len(head) == len(tail):
        return decode(head + tail, encoding)[0]
    if encoding is None and content_type.startswith("text/event-stream"):
        return complete_prefix(head) + complete_suffix(tail)
    return None


@functools.cache
def _pricer() -> _Price:
    """cost.price, imported on first use: genai-prices brings pydantic, ~160 ms of imports that a
    Lambda cold start would otherwise pay before its first response. Records are built after the
    response, so the first caller never waits for it. (An import statement in build_record itself
    cost ~3 us per record: it resolves the relative name every time.)"""
    from .cost import price

    return price


def utc_text(timestamp: float) -> str:
    """`datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds")` without its
    "+00:00", in half the time: the microseconds are rounded exactly as datetime rounds them
    (half to even, of the fraction modf leaves), and the rest is formatted once per second."""
    fraction, whole = math.modf(timestamp)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole += 1.0
        micros -= 1_000_000
    elif micros < 0:
        whole -= 1.0
        micros += 1_000_000
    return f"{_utc_second(int(whole))}.{micros:06d}"


# A second's text serves every record created in it; records of a long stream finish some
# seconds after they began, so a few dozen seconds are kept.
@functools.lru_cache(maxsize=64)
def _utc_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat()[:19]


def _attempts(attempts: list[Attempt]) -> str:
    return orjson.dumps(
        [
            {"target": a.target, "status": a.status, "error_type": a.error_type, "ms": a.ms, "wait_ms": a.wait_ms}
            for a in attempts
        ]
    ).decode()


def _ms(start: float, end: float | None) -> float:
    return round(((end if end is not None else start) - start) * 1000.0, 3)


def _decode(raw: bytes, encoding: str | None, problems: list[str]) -> bytes | None:
    """The response as the client's SDK reads it, or None when relaylog cannot decode it."""
    plain, problem = decode(raw, encoding)
    if problem is not None:
        problems.append(f"response: {problem}")
    return plain


def decode(raw: bytes, encoding: str | None) -> tuple[bytes | None, str | None]:
    """(the body as the client's SDK reads it, None), or (None, why relaylog cannot decode it)."""
    if not encoding or not raw:
        return raw, None
    name = encoding.strip().lower()
    try:
        if name == "gzip":
            return zlib.decompressobj(wbits=47).decompress(raw), None
        if name == "deflate":
            return zlib.decompress(raw), None
        if name == "identity":
            return raw, None
    except zlib.error:
        return None, f"could not decode {name} body"
    return None, f"unsupported content-encoding {name}"


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return True
    lowered = content_type.lower()
    for kind in _TEXT_TYPES:  # a loop, not any(<generator>): a third of the cost
        if kind in lowered:
            return True
    return False


def _place_body(
    data: bytes,
    content_type: str | None,
    omitted: bool,
    exchange: Exchange,
    dt: str,
    kind: str,
    settings: Settings,
    bodies: BodyStore,
) -> tuple[str | None, str | None]:
    """(inline text, reference): small text bodies stay in the record, the rest go to the body store."""
    if omitted or not data:
        return None, None
    if len(data) <= settings.body_inline_max and _is_text(content_type):
        return data.decode("utf-8", errors="replace"), None
    return None, bodies.put(exchange.request_id, dt, kind, data)
