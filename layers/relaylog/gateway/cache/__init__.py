"""The response cache's store: a cached response (what the client was sent, chunk by chunk), how
it is stored as bytes, and the `CacheStore` interface. One implementation per place entries live,
each beside it: `files.py` (one file per slot in the data dir, local) and `dynamo.py` (DynamoDB
items, large entries in S3, AWS). Which calls are cached and under what key is `cache_policy.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import orjson

FORMAT = 1
# Response headers that belong to the call that filled the cache, not to the call it serves.
_PER_CALL = frozenset(
    {
        b"helicone-id",
        b"helicone-cache",
        b"helicone-cache-bucket-idx",
        b"helicone-fallback-index",
        b"helicone-ratelimit-limit",
        b"helicone-ratelimit-remaining",
        b"helicone-ratelimit-policy",
        b"helicone-ratelimit-reset",
        b"date",
        b"set-cookie",
    }
)


@dataclass(slots=True)
class CachedResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    # Body bytes exactly as the client received them, one entry per chunk sent.
    chunks: list[bytes]
    # Milliseconds from the first chunk to each chunk, for replay at the original pace.
    offsets_ms: list[float]
    # Provider bytes the client never saw (a usage chunk relaylog asked for), kept for the record.
    withheld: list[bytes]
    usage_injected: bool
    content_type: str | None
    content_encoding: str | None
    expires_at: float

    @property
    def size(self) -> int:
        return sum(map(len, self.chunks)) + sum(map(len, self.withheld))


def storable_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name.lower() not in _PER_CALL]


def encode(entry: CachedResponse) -> bytes:
    head = {
        "format": FORMAT,
        "status": entry.status,
        "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in entry.headers],
        "chunks": [len(chunk) for chunk in entry.chunks],
        "offsets_ms": entry.offsets_ms,
        "withheld": [len(chunk) for chunk in entry.withheld],
        "usage_injected": entry.usage_injected,
        "content_type": entry.content_type,
        "content_encoding": entry.content_encoding,
        "expires_at": entry.expires_at,
    }
    return orjson.dumps(head) + b"\n" + b"".join(entry.chunks) + b"".join(entry.withheld)


def decode(data: bytes) -> CachedResponse:
    """Raises ValueError for bytes that are not a whole entry (a torn or foreign file)."""
    end = data.find(b"\n")
    if end < 0:
        raise ValueError("cache entry without a header line")
    try:
        head = orjson.loads(data[:end])
    except orjson.JSONDecodeError as error:
        raise ValueError(f"cache entry header: {error}") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise ValueError("cache entry of an unknown format")
    lengths = head["chunks"] + head["withheld"]
    if end + 1 + sum(lengths) != len(data):
        raise ValueError("cache entry is not whole")
    parts: list[bytes] = []
    at = end + 1
    for length in lengths:
        parts.append(data[at : at + length])
        at += length
    count = len(head["chunks"])
    return CachedResponse(
        status=head["status"],
        headers=[(name.encode("latin-1"), value.encode("latin-1")) for name, value in head["headers"]],
        chunks=parts[:count],
        offsets_ms=head["offsets_ms"],
        withheld=parts[count:],
        usage_injected=head["usage_injected"],
        content_type=head["content_type"],
        content_encoding=head["content_encoding"],
        expires_at=head["expires_at"],
    )


class CacheStore(Protocol):
    """Where entries live: slot `slot` of the bucket `key`, until `entry.expires_at`."""

    async def get(self, key: str, slot: int) -> CachedResponse | None:
        """The entry, or None when the slot is empty, expired or unreadable."""
        ...

    async def put(self, key: str, slot: int, entry: CachedResponse) -> None: ...
