"""The gateway headers of one request, read into typed policies; a bad value is a PolicyError."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from ..headers import HeliconeMeta, truthy
from .cache_policy import CachePolicy, read_cache
from .fallbacks import Fallback, read_fallbacks
from .ratelimit import RatePolicy, parse_policy
from .retry import RetryPolicy, read_retry


class PolicyError(ValueError):
    """A gateway header the client sent cannot be honoured as written; the message says why."""


@dataclass(frozen=True, slots=True)
class Gateway:
    cache: CachePolicy | None = None
    rate_limit: RatePolicy | None = None
    retry: RetryPolicy | None = None
    fallbacks: tuple[Fallback, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.cache or self.rate_limit or self.retry or self.fallbacks)


NONE = Gateway()

# Clients send the same few policy strings on every call: parse each once.
rate_policy = functools.lru_cache(maxsize=256)(parse_policy)


def read_gateway(meta: HeliconeMeta, upstream_headers: list[tuple[str, str]]) -> Gateway:
    """The policies the headers ask for. `upstream_headers` supplies the client's Cache-Control."""
    raw = meta.gateway
    if not raw:
        return NONE
    try:
        cache = read_cache(raw, upstream_headers) if truthy(raw.get("cache-enabled", "")) else None
        policy_text = raw.get("ratelimit-policy")
        rate_limit = rate_policy(policy_text) if policy_text is not None else None
        retry = read_retry(raw) if truthy(raw.get("retry-enabled", "")) else None
        fallbacks_text = raw.get("fallbacks")
        fallbacks = read_fallbacks(fallbacks_text) if fallbacks_text is not None else ()
    except ValueError as error:
        raise PolicyError(str(error)) from error
    return Gateway(cache, rate_limit, retry, fallbacks)


# Headers that carry a provider credential; their hash tells tenants apart when no relaylog key does.
_CREDENTIALS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def _presented(headers: list[tuple[str, str]], query: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Each provider credential a call carries, as (name, value) in the bytes sent upstream."""
    for name, value in headers:
        if name in _CREDENTIALS:
            yield name.encode(), value.encode("utf-8", "surrogatepass")
    for pair in query.split(b"&"):
        if pair.startswith(b"key="):  # Gemini's API key in the query string
            yield b"key", pair[4:]


def tenant_of(key_id: str | None, headers: list[tuple[str, str]], query: bytes) -> str:
    """Who is calling, for cache entries and rate-limit counters: the relaylog key when there is
    one, else a hash of the provider credential (never the credential itself)."""
    if key_id is not None:
        return f"key:{key_id}"
    digest = hashlib.sha256()
    found = False
    for name, value in _presented(headers, query):
        digest.update(name + b"=" + value + b"\n")
        found = True
    return f"auth:{digest.hexdigest()[:32]}" if found else "anonymous"


def credentials(headers: list[tuple[str, str]], query: bytes) -> frozenset[bytes]:
    """The provider credentials a call carries (whole header values and bare tokens), so nothing
    that echoes one is kept anywhere: a cached response header repeating the key would otherwise
    be stored and replayed to every caller sharing the entry."""
    found: set[bytes] = set()
    for _, value in _presented(headers, query):
        found.add(value)
        scheme, _, token = value.partition(b" ")
        if token and scheme.lower() in (b"bearer", b"basic"):
            found.add(token.strip())
    # A value this short would match by chance; no real credential is.
    return frozenset(secret for secret in found if len(secret) >= 8)
