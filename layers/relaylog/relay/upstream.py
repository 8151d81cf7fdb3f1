"""The aiohttp sessions every call shares (pooled, keep-alive connections to each upstream), and
reading a body through them.

Calls on the provider routes (the path prefix, or RELAYLOG_UPSTREAM_<PROVIDER>) use one session
with no checks added. Hosts a client chose (Helicone-Target-Url, Helicone-Fallbacks) go through a
second session whose resolver refuses any name that resolves to an address that is not public:
the check sits where the connection is made, on the very addresses it is made to, so a DNS answer
that changes between a check and the connection (rebinding) has no gap to slip through.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, NamedTuple

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ..config import Settings
from ..providers.routing import IPAddress

# Headers aiohttp would add on its own; the provider must see only what the client sent.
SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


class ForbiddenAddress(OSError):
    """A client-chosen host name resolved to a loopback, private, link-local or other non-public
    address. An OSError, so aiohttp wraps it like any resolver failure (ClientConnectorDNSError)."""


def public(address: IPAddress) -> bool:
    """Whether an address is one the open internet routes to, looking through the IPv6 forms that
    carry an IPv4 address (mapped, 6to4, Teredo, NAT64) at the address they stand for."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not public(embedded):
            return False
        if address.is_site_local:
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    )


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class PublicOnlyResolver(AbstractResolver):
    """Resolves with `inner` and refuses the name when any answer is not a public address (one bad
    answer among good ones is refused too: which one the connection would use is not ours to say)."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            try:
                address = ipaddress.ip_address(answer["host"].split("%", 1)[0])
            except ValueError:
                address = None
            if address is None or not public(address):
                # The address is not named: the message reaches the client, who chose the name.
                raise ForbiddenAddress(f"{host[:100]} does not resolve to a public address")
        return answers

    async def close(self) -> None:
        await self._inner.close()


def create_session(
    settings: Settings, *, public_only: bool = False, resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    """The provider session, or with `public_only` the session for client-chosen hosts (`resolver`
    replaces the system resolver underneath the public-address check, for tests)."""
    options: dict[str, Any] = {}
    if public_only:
        options["resolver"] = PublicOnlyResolver(resolver)
    connector = aiohttp.TCPConnector(
        limit=0,  # no pool-wide cap: concurrency is the clients' to choose
        limit_per_host=0,
        # Only answers that passed the resolver are cached, so the cache cannot hold a bad address.
        ttl_dns_cache=300,
        keepalive_timeout=60,
        **options,
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
        # Never route through HTTP(S)_PROXY from the environment: that would move the connection,
        # and with it the address check, somewhere else.
        trust_env=False,
    )


def forbidden(error: BaseException) -> ForbiddenAddress | None:
    """The ForbiddenAddress behind an aiohttp connection error, if that is what it was."""
    seen: BaseException | None = error
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, ForbiddenAddress):
            return seen
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return None


class Whole(NamedTuple):
    """A body read whole, or what arrived of it before the provider cut it or went silent."""

    data: bytes
    failure: BaseException | None  # what ended the read early; None for a whole body


async def read_whole(response: aiohttp.ClientResponse) -> Whole:
    """Like `response.read()`, keeping the bytes that arrived before a failure (read() drops them).
    At the end of the body aiohttp hands the connection back to the pool by itself. Measured side by
    side on a small chat completion: 13-15 us a call, as read() (waiting for the release as well,
    as read() does, cost 6 us more)."""
    content = response.content
    blocks: list[bytes] = []
    try:
        while block := await content.readany():
            blocks.append(block)
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        blocks.append(received_before_the_cut(content))
        return Whole(b"".join(blocks), error)
    return Whole(blocks[0] if len(blocks) == 1 else b"".join(blocks), None)


def received_before_the_cut(content: aiohttp.StreamReader) -> bytes:
    """Bytes aiohttp had buffered when the connection broke. Its public reads raise the stored
    error before handing them out (aiohttp 3.x `readany`), which would drop the provider's last
    chunk, often the one carrying usage. The one use of a private aiohttp API in relaylog, kept
    here alone (tests/test_relay.py fails if aiohttp changes it, or if another module uses it)."""
    read = getattr(content, "_read_nowait", None)
    if read is None:
        return b""
    try:
        data = read(-1)
    except Exception:  # noqa: BLE001 - a private method of another version: relay what we can
        return b""
    return data if isinstance(data, bytes) else b""
