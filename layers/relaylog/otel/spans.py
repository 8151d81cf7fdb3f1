"""One record as one GenAI client span: name, ids, real start and end, attributes, events.

Attribute names follow the OpenTelemetry semantic conventions for generative AI as registered in
semantic conventions v1.44.0, taken from the opentelemetry-semantic-conventions constants (the
GenAI group there is marked as moved to the semantic-conventions-genai repository, where the same
names continue). Everything relaylog adds is under `relaylog.`, named as the record's field.
This module builds plain data; only `export` touches the SDK.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes

from ..providers.registry import PROVIDERS
from ..record import Record
from .context import parse_traceparent
from .messages import content_attributes

SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
FIRST_CHUNK_EVENT = "relaylog.first_chunk"

# relaylog's provider name -> gen_ai.provider.name's well-known value; others keep their own name.
_PROVIDER_NAMES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "azure": "azure.ai.openai",
    "groq": "groq",
    "mistral": "mistral_ai",
    "deepseek": "deepseek",
    "xai": "x_ai",
    "perplexity": "perplexity",
    "bedrock": "aws.bedrock",
}
# Endpoint path ending -> gen_ai.operation.name (well-known values where one applies).
_OPERATIONS = (
    ("/chat/completions", "chat"),
    ("/completions", "text_completion"),
    ("/embeddings", "embeddings"),
    ("/responses", "chat"),
    ("/messages", "chat"),
    ("/converse", "chat"),  # Bedrock
    ("/converse-stream", "chat"),
    (":generateContent", "generate_content"),
    (":streamGenerateContent", "generate_content"),
    (":embedContent", "embeddings"),
    (":batchEmbedContents", "embeddings"),
)
# Record fields copied as relaylog.<field> when set. The rest have gen_ai.* names, are the span's
# own times (latency, time to first chunk), or are bodies. The SDK's OTLP encoder spends most of
# an export's CPU attribute by attribute (on the relay's process), so none is sent twice.
_OWN_FIELDS = (
    "request_id",
    "endpoint",
    "upstream_ms",
    "overhead_ms",
    "usage_source",
    "cost_usd",
    "cost_source",
    "user_id",
    "session_id",
    "session_path",
    "session_name",
    "prompt_id",
    "key_id",
    "cache_status",
    "attempt_count",
    "fallback_index",
    "parse_error",
    "audio_input_tokens",
    "audio_output_tokens",
)


@dataclass(frozen=True, slots=True)
class SpanData:
    name: str
    trace_id: int
    span_id: int
    # The caller's span, when its request carried a valid traceparent.
    parent_span_id: int | None
    sampled: bool
    tracestate: str | None
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    # (name, time, attributes)
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    error: str | None = None


def operation_name(endpoint: str) -> str:
    path = endpoint.split("?", 1)[0].rstrip("/")
    for suffix, name in _OPERATIONS:
        if path.endswith(suffix):
            return name
    # No well-known value fits (models, audio, images, files): the path's last segment says what it was.
    return path.rsplit("/", 1)[-1].split(":")[-1] or "request"


def server_of(provider: str, overrides: dict[str, str]) -> tuple[str, int] | None:
    """(host, port) relaylog calls for this provider; None when the host depends on the call."""
    known = PROVIDERS.get(provider)
    origin = overrides.get(provider) or (known.origin if known is not None else "")
    if not origin or "{" in origin:
        return None
    parts = urlsplit(origin)
    if not parts.hostname:
        return None
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def span_data(record: Record, overrides: dict[str, str], capture_content: bool) -> SpanData:
    start_ns = _epoch_ns(record["created_at"])
    end_ns = start_ns + round(record["latency_ms"] * 1_000_000)
    operation = operation_name(record["endpoint"])
    model = record["model"]
    attributes: dict[str, Any] = {
        gen_ai.GEN_AI_OPERATION_NAME: operation,
        gen_ai.GEN_AI_PROVIDER_NAME: _PROVIDER_NAMES.get(record["provider"], record["provider"]),
    }
    _set(attributes, gen_ai.GEN_AI_REQUEST_MODEL, model)
    _set(attributes, gen_ai.GEN_AI_RESPONSE_MODEL, record["response_model"])
    _set(attributes, gen_ai.GEN_AI_RESPONSE_ID, record.get("response_id"))
    reasons = record.get("finish_reasons")
    if reasons:
        attributes[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = orjson.loads(reasons)
    _set(attributes, gen_ai.GEN_AI_USAGE_INPUT_TOKENS, record["input_tokens"])
    _set(attributes, gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, record["output_tokens"])
    _set(attributes, gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, record["cache_read_tokens"])
    _set(attributes, gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS, record["cache_write_tokens"])
    _set(attributes, gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, record["reasoning_tokens"])
    _set(attributes, gen_ai.GEN_AI_CONVERSATION_ID, record["session_id"])
    _set(attributes, gen_ai.GEN_AI_PROMPT_NAME, record["prompt_id"])
    events: list[tuple[str, int, dict[str, Any]]] = []
    ttft = record["ttft_ms"]
    if record["stream"]:
        attributes[gen_ai.GEN_AI_REQUEST_STREAM] = True
        if ttft is not None:
            attributes[gen_ai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = ttft / 1000.0
    if ttft is not None:
        events.append((FIRST_CHUNK_EVENT, start_ns + round(ttft * 1_000_000), {}))
    if (server := server_of(record["provider"], overrides)) is not None:
        attributes[server_attributes.SERVER_ADDRESS], attributes[server_attributes.SERVER_PORT] = server
    if record["status"]:
        attributes[http_attributes.HTTP_RESPONSE_STATUS_CODE] = record["status"]
    error = record["error_type"] or (str(record["status"]) if record["status"] >= 400 else None)
    _set(attributes, error_attributes.ERROR_TYPE, error)
    for name in _OWN_FIELDS:
        _set(attributes, f"relaylog.{name}", record.get(name))
    for key, value in record["properties"].items():
        attributes[f"relaylog.properties.{key}"] = value
    if capture_content:
        attributes.update(content_attributes(record))

    trace_id, span_id = _ids(record["request_id"])
    parent = parse_traceparent(record.get("traceparent"))
    parent_span_id, sampled = None, True
    if parent is not None:
        trace_id, parent_span_id = int(parent[3:35], 16), int(parent[36:52], 16)
        sampled = int(parent[53:55], 16) & 1 == 1
    return SpanData(
        name=f"{operation} {model}" if model else operation,
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        sampled=sampled,
        tracestate=record.get("tracestate") if parent is not None else None,
        start_ns=start_ns,
        end_ns=end_ns,
        attributes=attributes,
        events=events,
        error=error,
    )


def _set(attributes: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        attributes[name] = value


def _epoch_ns(created_at: str) -> int:
    """RFC 3339 UTC with microseconds (the record's form) to integer nanoseconds, exactly."""
    moment = datetime.fromisoformat(created_at)
    whole = int(moment.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + moment.microsecond * 1000


def _ids(request_id: str) -> tuple[int, int]:
    """(trace id, span id) derived from the record id: the same record always gives the same span
    (an export repeated after a redelivery is the same span, not a second one), and a root span's
    trace id is the Helicone-Id's hex, so one finds the other."""
    digest = hashlib.sha256(request_id.encode()).digest()
    span_id = int.from_bytes(digest[:8], "big") or 1
    hexed = request_id.replace("-", "")
    try:
        trace_id = int(hexed, 16) if len(hexed) == 32 else 0
    except ValueError:
        trace_id = 0
    return trace_id or int.from_bytes(digest[8:24], "big") or 1, span_id
