"""Where one request may be sent: its own route, or each Helicone-Fallbacks entry in turn."""

from __future__ import annotations

from dataclasses import dataclass, replace

from yarl import URL

from ..config import Settings
from ..gateway.fallbacks import Fallback, override_body
from ..providers.bedrock_auth import Signer, auth_mode
from ..providers.parsing import RequestInfo, parse_request
from ..providers.routing import Route, resolve_target
from .stream_usage import inject


@dataclass(frozen=True, slots=True)
class Target:
    route: Route
    url: URL
    headers: list[tuple[str, str]]
    # The body as the client meant it for this target (a fallback may override keys) ...
    body: bytes
    # ... and as sent, which may also ask for stream usage.
    upstream_body: bytes
    usage_injected: bool
    model: str | None
    # Index in Helicone-Fallbacks, and that entry (None for the request's own route).
    index: int | None = None
    fallback: Fallback | None = None
    # relaylog's AWS identity, when it signs the call (admission's `bedrock_signer`): each attempt
    # at this target is signed anew for its own host, region and date (the signer signs Bedrock
    # targets only; a fallback elsewhere never carries relaylog's identity).
    signer: Signer | None = None


def plan(
    route: Route,
    fallbacks: tuple[Fallback, ...],
    headers: list[tuple[str, str]],
    body: bytes,
    info: RequestInfo,
    query: bytes,
    model: str | None,
    settings: Settings,
    signer: Signer | None = None,
) -> list[Target]:
    """The targets in the order they are tried. Raises RouteError for a target off the allow-list,
    before anything is called."""
    suffix = "?" + query.decode("latin-1") if query else ""
    if not fallbacks:
        return [_target(route, headers, body, info, suffix, model, settings, signer)]
    targets = []
    for index, fallback in enumerate(fallbacks):
        where = f"Helicone-Fallbacks[{index}] target-url"
        routed = resolve_target(route.endpoint, fallback.target_url, settings, header=where, prefer=route.provider)
        replaced = {name for name, _ in fallback.headers}
        merged = [(name, value) for name, value in headers if name not in replaced] + list(fallback.headers)
        entry_body = override_body(body, fallback.body_override)
        entry_info = info if entry_body is body else parse_request(routed.provider.family, routed.endpoint, entry_body)
        entry_model = model if entry_body is body else entry_info.model or model
        target = _target(routed, merged, entry_body, entry_info, suffix, entry_model, settings, signer)
        targets.append(replace(target, index=index, fallback=fallback))
    return targets


def _target(
    route: Route,
    headers: list[tuple[str, str]],
    body: bytes,
    info: RequestInfo,
    suffix: str,
    model: str | None,
    settings: Settings,
    signer: Signer | None,
) -> Target:
    upstream_body, injected = body, False
    if (
        info.stream
        and info.parsed is not None
        and route.provider.family == "openai"
        and route.endpoint.split("?", 1)[0].endswith("/chat/completions")
        and settings.injects_stream_usage(route.provider.name)
    ):
        asked = inject(body, info.parsed)
        if asked is not None:
            upstream_body, injected = asked, True
    url = URL(route.origin + route.endpoint + suffix, encoded=True)
    if signer is not None and auth_mode(headers) == "api_key":
        signer = None  # a Helicone-Fallbacks entry that brings its own Bedrock API key uses it
    return Target(route, url, headers, body, upstream_body, injected, model, signer=signer)
