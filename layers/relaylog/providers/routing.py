"""Which provider a request goes to, and the upstream URL it is relayed to."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..config import Settings
from .registry import CUSTOM, PROVIDERS, Provider

# A resource name becomes part of a host name, so it is held to what Azure itself allows.
_AZURE_RESOURCE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")

PREFIXES: tuple[str, ...] = ("/v1",) + tuple(f"/{name}" for name in PROVIDERS)


@dataclass(frozen=True, slots=True)
class Route:
    provider: Provider
    # Upstream scheme://host[:port], without a trailing slash.
    origin: str
    # Path as the provider sees it, still percent-encoded as the client sent it.
    endpoint: str


class RouteError(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def resolve(path: str, target_url: str | None, settings: Settings) -> Route:
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
    if provider.name == "azure":
        resource, _, tail = rest[1:].partition("/")
        if not _AZURE_RESOURCE.fullmatch(resource):
            raise RouteError(404, "unknown_provider", "Azure paths are /azure/{resource}/...")
        origin = settings.upstream_overrides.get("azure") or provider.origin.format(resource=resource)
        return Route(provider, origin, "/" + tail)
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
    that provider's (possibly overridden) origin speaks, before guessing from the host."""
    parts = urlsplit(target_url.strip())
    try:
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:  # a port that is not a number
        host, port = "", None
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        raise RouteError(403, "target_not_allowed", f"{header} must be an http(s) URL")
    if not _allowed(host, port, settings.target_allowlist):
        raise RouteError(
            403,
            "target_not_allowed",
            f"{header} host {host!r} is not on the allow-list (RELAYLOG_TARGET_ALLOWLIST)",
        )
    netloc = host if port is None else f"{host}:{port}"
    origin = f"{parts.scheme}://{netloc}"
    base = parts.path.rstrip("/")
    if prefer is not None and origin == settings.upstream_overrides.get(prefer.name, prefer.origin):
        return Route(prefer, origin, base + path)
    return Route(_provider_for_host(host), origin, base + path)


def _allowed(host: str, port: int | None, allowlist: tuple[str, ...]) -> bool:
    for entry in allowlist:
        entry_host, _, entry_port = entry.partition(":")
        if entry_port and (port is None or str(port) != entry_port):
            continue
        if entry_host.startswith("*."):
            if host.endswith(entry_host[1:]) and host != entry_host[2:]:
                return True
        elif host == entry_host:
            return True
    return False


def _provider_for_host(host: str) -> Provider:
    for provider in PROVIDERS.values():
        origin_host = provider.origin.split("://", 1)[1]
        if origin_host == host or (
            "{resource}" in origin_host and host.endswith(origin_host.split("}", 1)[1])
        ):
            return provider
    return CUSTOM
