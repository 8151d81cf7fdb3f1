"""Which provider a request goes to, and the upstream URL it is relayed to."""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from ..config import Settings
from ..relay import echo
from .registry import CUSTOM, PROVIDERS, Provider

# A path segment that becomes part of a host name ("{resource}" in the provider's origin), held to
# what the provider itself allows: an Azure resource name, an AWS region (`us-east-1`, `us-gov-west-1`).
_RESOURCES = {
    "azure": (re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?"), "Azure paths are /azure/{resource}/..."),
    "bedrock": (re.compile(r"[a-z]{2}(?:-[a-z]+){1,2}-[0-9]{1,2}"), "Bedrock paths are /bedrock/{region}/..."),
}

PREFIXES: tuple[str, ...] = ("/v1",) + tuple(f"/{name}" for name in PROVIDERS)


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    # Upstream scheme://host[:port], without a trailing slash.
    origin: str
    # Path as the provider sees it, still percent-encoded as the client sent it.
    endpoint: str
    # A host name the client chose (Helicone-Target-Url, Helicone-Fallbacks): it may only be
    # connected to at public addresses, checked when the connection is made (relay/upstream.py).
    guarded: bool = False
    # The "{resource}" of the provider's origin: Azure's resource, Bedrock's region (which signs).
    resource: str | None = None


# The record's error_type of each refusal (the README's error table).
RouteErrorType = Literal["unknown_provider", "target_not_allowed", "invalid_path"]


class RouteError(Exception):
    def __init__(self, status: int, error_type: RouteErrorType, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def resolve(path: str, target_url: str | None, settings: Settings) -> Route:
    if path == echo.PATH:  # relaylog's own answer (`relaylog verify`): no provider, no target
        return Route(echo.PROVIDER, "", echo.ENDPOINT)
    # Only a path that could hold a dot segment is decoded and looked at (hot path).
    if "/." in path or "%" in path or "\\" in path:
        _refuse_dot_segments(path)
    if target_url is not None:
        return resolve_target(path, target_url, settings)
    if path == "/v1" or path.startswith("/v1/"):
        return _route(PROVIDERS["openai"], path, settings)
    segments = path.split("/", 2)
    name = segments[1] if len(segments) > 1 else ""
    provider = PROVIDERS.get(name)
    if provider is None:
        raise RouteError(
            404,
            "unknown_provider",
            f"No provider for path {path[:200]!r}. Known prefixes: {', '.join(PREFIXES)}",
        )
    rest = "/" + segments[2] if len(segments) > 2 else "/"
    if provider.name in _RESOURCES:
        pattern, usage = _RESOURCES[provider.name]
        resource, _, tail = rest[1:].partition("/")
        if not pattern.fullmatch(resource):
            raise RouteError(404, "unknown_provider", usage)
        origin = settings.upstream_overrides.get(provider.name) or provider.origin.format(resource=resource)
        return Route(provider, origin, "/" + tail, resource=resource)
    return _route(provider, rest, settings)


def _route(provider: Provider, endpoint: str, settings: Settings) -> Route:
    return Route(provider, settings.upstream_overrides.get(provider.name, provider.origin), endpoint)


def resolve_target(
    path: str,
    target_url: str,
    settings: Settings,
    *,
    header: str = "Helicone-Target-Url",
    prefer: Provider | None = None,
) -> Route:
    """`path` appended to an allow-listed `target_url`. `prefer` names the provider a target at
    that provider's (possibly overridden) origin speaks, before guessing from the host.

    An IP address is allowed only when the allow-list names that address; a host name on the
    allow-list is allowed, but connected to only at public addresses (Route.guarded), unless its
    origin is one the operator set with RELAYLOG_UPSTREAM_<PROVIDER>."""
    text = target_url.strip()
    # Control characters, spaces and non-ASCII would end up in the request line sent upstream.
    if not _URL_CHARS.fullmatch(text):
        raise RouteError(403, "target_not_allowed", f"{header} must be an http(s) URL in plain ASCII")
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:  # an unclosed "[" (found by tests/test_fuzz.py: it was a 500), a bad port
        raise RouteError(403, "target_not_allowed", f"{header} must be an http(s) URL") from None
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        raise RouteError(403, "target_not_allowed", f"{header} must be an http(s) URL")
    address = _address(host)
    if address is None:
        raise RouteError(
            403, "target_not_allowed", f"{header} host {host[:100]!r} is not a plain host name or IP address"
        )
    if not _allowed(address, port, settings.target_allowlist):
        raise RouteError(
            403,
            "target_not_allowed",
            f"{header} host {host[:100]!r} is not on the allow-list (RELAYLOG_TARGET_ALLOWLIST)",
        )
    netloc = f"[{host}]" if ":" in host else host
    netloc = netloc if port is None else f"{netloc}:{port}"
    origin = f"{parts.scheme}://{netloc}"
    base = parts.path.rstrip("/")
    # An allow-listed IP address needs no DNS; an origin the operator configured is trusted as is.
    guarded = isinstance(address, str) and origin not in settings.upstream_overrides.values()
    if prefer is not None and origin == settings.upstream_overrides.get(prefer.name, prefer.origin):
        return Route(prefer, origin, base + path, guarded)
    provider, resource = _provider_for_host(host)
    return Route(provider, origin, base + path, guarded, resource)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 3986 characters, less the ones that never belong in a target URL (no spaces, no controls).
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
# Lower-cased LDH labels: what a public DNS name is made of. No "%", "_", empty labels or IDN text.
_HOST_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.?")


def _address(host: str) -> IPAddress | str | None:
    """The IP address `host` spells, or the host name itself; None for anything ambiguous.

    The C resolver also reads "2130706433", "0x7f.1" and "0177.0.0.1" as 127.0.0.1: those
    spellings are refused, so an address is only ever compared in its usual form."""
    if ":" in host:  # urlsplit took the brackets off an IPv6 literal
        try:
            return ipaddress.IPv6Address(host) if "%" not in host else None
        except ValueError:
            return None
    if not _HOST_NAME.fullmatch(host):
        return None
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
    except OSError:
        return host
    return None  # an IPv4 address in an unusual spelling


@dataclass(frozen=True, slots=True)
class _Entry:
    host: IPAddress | str
    port: int | None
    wildcard: bool


@functools.lru_cache(maxsize=8)
def _entries(allowlist: tuple[str, ...]) -> tuple[_Entry, ...]:
    """`host`, `host:port`, `*.domain`, `1.2.3.4[:port]`, `[::1][:port]` or `::1` entries."""
    parsed = []
    for raw in allowlist:
        entry = raw.strip().lower()
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port_text = rest[1:] if rest.startswith(":") else ""
        elif entry.count(":") > 1:
            host, port_text = entry, ""
        else:
            host, _, port_text = entry.partition(":")
        wildcard = host.startswith("*.")
        address = host if wildcard else _address(host)
        if address is None or (port_text and not port_text.isdecimal()):
            continue  # not an entry that could ever match; nothing to allow
        parsed.append(_Entry(address, int(port_text) if port_text else None, wildcard))
    return tuple(parsed)


def _allowed(address: IPAddress | str, port: int | None, allowlist: tuple[str, ...]) -> bool:
    for entry in _entries(allowlist):
        if entry.port is not None and port != entry.port:
            continue
        if entry.wildcard:
            suffix = str(entry.host)[1:]
            if isinstance(address, str) and address.endswith(suffix) and address != suffix[1:]:
                return True
        elif address == entry.host:
            return True
    return False


def _refuse_dot_segments(path: str) -> None:
    """Refuse "." and ".." segments, however encoded: they would let a path climb out of a
    provider's prefix (or an upstream override's base path) on servers that normalise it."""
    decoded = unquote(path).replace("\\", "/")
    if any(segment in (".", "..") for segment in decoded.split("/")):
        raise RouteError(400, "invalid_path", "Paths with '.' or '..' segments are not relayed")


def _provider_for_host(host: str) -> tuple[Provider, str | None]:
    """The provider whose origin `host` is, and the "{resource}" the host fills in."""
    for provider in PROVIDERS.values():
        origin_host = provider.origin.split("://", 1)[1]
        if origin_host == host:
            return provider, None
        before, marker, after = origin_host.partition("{resource}")
        if marker and host.startswith(before) and host.endswith(after):
            resource = host[len(before) : len(host) - len(after)]
            if _RESOURCES[provider.name][0].fullmatch(resource):
                return provider, resource
    return CUSTOM, None
