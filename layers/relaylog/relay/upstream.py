"""The one aiohttp session every call shares: a pooled, keep-alive connection to each provider."""

from __future__ import annotations

import aiohttp

from ..config import Settings

# Headers aiohttp would add on its own; the provider must see only what the client sent.
SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


def create_session(settings: Settings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0,  # no pool-wide cap: concurrency is the clients' to choose
        limit_per_host=0,
        ttl_dns_cache=300,
        keepalive_timeout=60,
    )
    timeout = aiohttp.ClientTimeout(
        total=None,  # a stream may last as long as the model keeps talking
        connect=settings.connect_timeout_s,
        sock_read=settings.read_timeout_s,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        # Bytes go to the client exactly as the provider sent them; relaylog decodes its own copy.
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=SKIP_AUTO_HEADERS,
        raise_for_status=False,
    )
