"""Record schema v1: one flat JSON object per call, the same in every store."""

from __future__ import annotations

from typing import Literal, TypedDict

SCHEMA_VERSION = 1

# The closed sets of values a record holds. The README's error table and record section list the
# same values (tests/test_record.py checks both ways). Record's own fields stay `str`: the store's
# column types and the API's schema are derived from its annotations, and know no Literal yet.
ErrorType = Literal[
    # the provider's side
    "upstream_error",
    "upstream_unreachable",
    "upstream_timeout",
    "upstream_stream_error",
    "upstream_disconnect",
    # the client's side, the server's, relaylog's own failure
    "client_disconnect",
    "cancelled",
    "internal_error",
    # relaylog refused the call; the provider was not called
    "unauthorized",
    "unknown_provider",
    "target_not_allowed",
    "body_too_large",
    "keys_unavailable",
    "rate_limited",
    "invalid_request",
    "gateway_unavailable",
    "request_timeout",
    "invalid_path",
    "aws_credentials_unavailable",
]
# Where the tokens came from: the provider's usage, usage relaylog asked for on the client's behalf
# (and removed from what the client received), or none at all (tokens null, never 0).
UsageSource = Literal["provider", "provider_injected", "absent"]
CacheStatus = Literal["HIT", "MISS"]
# `cost_source` is one of these; a priced call's is "genai-prices@<version>", the price data used.
CostSourceKind = Literal["genai-prices", "unknown_model", "no_usage", "cache_hit"]


class Record(TypedDict):
    schema_version: int
    request_id: str
    created_at: str
    dt: str
    hour: str
    provider: str
    endpoint: str
    method: str
    model: str | None
    response_model: str | None
    status: int
    stream: bool
    latency_ms: float
    ttft_ms: float | None
    upstream_ms: float | None
    overhead_ms: float
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    audio_input_tokens: int | None
    audio_output_tokens: int | None
    usage_source: str  # a UsageSource
    cost_usd: float | None
    cost_source: str  # a CostSourceKind; "genai-prices" as "genai-prices@<version>"
    user_id: str | None
    session_id: str | None
    session_path: str | None
    session_name: str | None
    prompt_id: str | None
    properties: dict[str, str]
    key_id: str | None
    cache_status: str | None  # a CacheStatus
    # Provider calls made for this request: 0 when it never reached one (cache hit, refused).
    attempt_count: int
    # JSON array, one object per provider call: {"target", "status", "error_type", "ms", "wait_ms"};
    # set when retries or fallbacks were asked for, else null.
    attempts: str | None
    # Which Helicone-Fallbacks entry answered (0-based); null without fallbacks.
    fallback_index: int | None
    error_type: str | None  # an ErrorType
    # Why part of the call could not be understood (unparsable body, unknown usage), else None.
    parse_error: str | None
    request_body: str | None
    response_body: str | None
    request_body_ref: str | None
    response_body_ref: str | None
    request_bytes: int
    response_bytes: int
    # -- added within schema v1 (absent from older records: readers take missing as null) ------
    # The provider's id for the response (`chatcmpl-...`, `msg_...`, Gemini's responseId).
    response_id: str | None
    # JSON array of why each choice/candidate stopped, in the provider's words (["stop"]).
    finish_reasons: str | None
    # The caller's W3C trace context, when its request carried a valid one (never a malformed one).
    traceparent: str | None
    tracestate: str | None


FIELDS: tuple[str, ...] = tuple(Record.__annotations__)
BODY_FIELDS = ("request_body", "response_body")
# A record without its (possibly large) bodies: what lists and indexes carry.
SUMMARY_FIELDS: tuple[str, ...] = tuple(f for f in FIELDS if f not in BODY_FIELDS)
