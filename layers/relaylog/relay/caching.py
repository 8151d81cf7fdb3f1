"""The cache slot a call's answer is looked up in, and turning a finished exchange into an entry
for it, when it is one worth keeping."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..gateway.cache import CachedResponse, storable_headers
from ..gateway.cache_policy import CachePolicy
from ..observe import Exchange


@dataclass(frozen=True, slots=True)
class CacheSlot:
    """Where a missed answer is stored: the call's cache key and the bucket slot it drew."""

    policy: CachePolicy
    key: str
    index: int
    # The caller's credentials (header values, query parameters): no stored header may repeat one.
    secrets: frozenset[bytes]


def entry_from(exchange: Exchange, slot: CacheSlot) -> CachedResponse | None:
    """Only a complete 2xx response whose every byte was captured is cached, without any header
    that repeats one of the caller's secrets."""
    if not 200 <= exchange.status <= 299 or exchange.error_type is not None or exchange.finished is None:
        return None
    if exchange.sent_headers is None or exchange.chunk_times is None:
        return None
    chunks = [chunk for chunk in exchange.response_chunks if chunk]
    if sum(map(len, chunks)) != exchange.response_bytes or len(chunks) != len(exchange.chunk_times):
        return None  # larger than the capture limit
    first = exchange.chunk_times[0] if exchange.chunk_times else 0.0
    return CachedResponse(
        status=exchange.status,
        headers=[
            (name, value)
            for name, value in storable_headers(exchange.sent_headers)
            if not any(secret in value for secret in slot.secrets)
        ],
        chunks=chunks,
        offsets_ms=[round((at - first) * 1000.0, 3) for at in exchange.chunk_times],
        withheld=list(exchange.withheld),
        usage_injected=exchange.usage_injected,
        content_type=exchange.response_content_type,
        content_encoding=exchange.response_content_encoding,
        expires_at=time.time() + slot.policy.ttl_s,
    )
