"""Function URL events (payload format 2.0) as ASGI HTTP requests."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote

from ..relay.app import Scope


class EventError(ValueError):
    """The event is not a Function URL (payload 2.0) request."""


def to_asgi(event: dict[str, Any]) -> tuple[Scope, bytes]:
    try:
        http = event["requestContext"]["http"]
        method = str(http["method"]).upper()
        raw_path = str(event.get("rawPath") or http.get("path") or "/")
    except (KeyError, TypeError) as exc:
        raise EventError(f"not a Function URL event: missing {exc}") from exc
    headers: list[tuple[bytes, bytes]] = []
    # Lambda joins repeated request headers with commas; HTTP says that is the same header.
    for name, value in (event.get("headers") or {}).items():
        headers.append((name.lower().encode("latin-1"), str(value).encode("latin-1")))
    cookies = event.get("cookies")
    if cookies:
        headers.append((b"cookie", "; ".join(cookies).encode("latin-1")))
    body = event.get("body") or ""
    try:
        data = base64.b64decode(body, validate=True) if event.get("isBase64Encoded") else body.encode("utf-8")
    except ValueError as exc:
        raise EventError("isBase64Encoded is set but the body is not base64") from exc
    source_ip = http.get("sourceIp")
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode("latin-1"),
        "query_string": str(event.get("rawQueryString") or "").encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": (source_ip, 0) if source_ip else None,
        "server": (str((event.get("requestContext") or {}).get("domainName") or "lambda"), 443),
    }
    return scope, data
