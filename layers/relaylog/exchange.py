"""What the relay saw of one call: filled in on the hot path, turned into a record off it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .gateway.ratelimit import Decision
from .headers import HeliconeMeta
from .providers.registry import Provider

if TYPE_CHECKING:
    from .providers.bedrock_auth import Signer


@dataclass(slots=True)
class Attempt:
    """One call to a provider made for this request."""

    # Helicone-Fallbacks entry called (None without fallbacks).
    target: int | None
    status: int  # 0 when no answer came
    error_type: str | None
    # Time until the provider's response headers (or the failure).
    ms: float
    # Backoff waited after this attempt before the next one.
    wait_ms: float = 0.0


@dataclass(slots=True)
class Exchange:
    request_id: str
    # Wall clock (epoch seconds) when the request reached relaylog.
    created_at: float
    # perf_counter() at the same moment; every duration below is measured from it.
    started: float
    method: str
    path: str
    meta: HeliconeMeta
    provider: Provider | None = None
    endpoint: str | None = None
    model: str | None = None
    stream: bool = False
    user: str | None = None
    key_id: str | None = None
    request_body: bytes = b""
    request_content_type: str | None = None
    request_parse_error: str | None = None
    # Usage was asked for upstream and is removed from what the client receives.
    usage_injected: bool = False
    status: int = 0
    response_content_type: str | None = None
    response_content_encoding: str | None = None
    # Bytes as sent to the client, in order.
    response_chunks: list[bytes] = field(default_factory=list)
    response_bytes: int = 0
    # Provider bytes the client never saw (the usage chunk relaylog asked for); read for usage.
    withheld: list[bytes] = field(default_factory=list)
    ttft: float | None = None
    finished: float | None = None
    upstream_started: float | None = None
    upstream_finished: float | None = None
    error_type: str | None = None
    # The client hung up after the provider's terminal event reached it (the OpenAI SDK closes at
    # `[DONE]`): the response is complete, and what the provider still sends is read into
    # `withheld` for usage, never sent.
    client_done: bool = False
    # -- gateway (Helicone-Cache-*, -RateLimit-*, -Retry-*, -Fallbacks) ------------------------
    # Response headers relaylog adds (rate-limit state, cache status, fallback index).
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    cache_status: str | None = None
    # perf_counter() of each chunk sent, kept only while a response is being cached.
    chunk_times: list[float] | None = None
    # Headers sent to the client, kept only while a response is being cached.
    sent_headers: list[tuple[bytes, bytes]] | None = None
    attempts: list[Attempt] = field(default_factory=list)
    # Attempts are listed in the record when the client asked for retries or fallbacks.
    show_attempts: bool = False
    fallback_index: int | None = None
    # Cents rate limits the call passed, to be charged its cost afterwards.
    rate_decisions: list[Decision] = field(default_factory=list)
    # Signs each attempt with relaylog's AWS identity (a Bedrock call without the client's own key).
    aws_signer: Signer | None = None
