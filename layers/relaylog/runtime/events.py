"""Function URL events (payload format 2.0) as ASGI HTTP requests: the client's request, without
what the Function URL itself added to it."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

from ..asgi import Scope

# Headers the Function URL adds for its own hop (AWS's sample events show them on every request):
# the provider must see the client's request, not relaylog's front door, nor the client's address.
_ADDED_BY_FUNCTION_URL = frozenset(
    {
        "x-amzn-trace-id",
        "x-amzn-tls-version",
        "x-amzn-tls-cipher-suite",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-port",
    }
)


class EventError(ValueError):
    """The event is not a Function URL (payload 2.0) request."""


def to_asgi(event: dict[str, Any]) -> tuple[Scope, bytes]:
    try:
        context = event["requestContext"]
        http = context["http"]
        method = str(http["method"]).upper()
        raw_path = str(event.get("rawPath") or http.get("path") or "/")
        cookies = event.get("cookies")
        # Lambda joins repeated request headers with commas; HTTP says that is the same header.
        # The cookies come as their own array; whether a `cookie` header stays beside it is not
        # documented, so the array is the one copy used.
        headers = [
            (_wire(name.lower()), _wire(value))
            for name, value in (event.get("headers") or {}).items()
            if name.lower() not in _ADDED_BY_FUNCTION_URL and not (cookies and name.lower() == "cookie")
        ]
        if cookies:
            headers.append((b"cookie", _wire("; ".join(cookies))))
        body = event.get("body") or ""
        data = base64.b64decode(body, validate=True) if event.get("isBase64Encoded") else body.encode("utf-8")
        query = _wire(event.get("rawQueryString") or "")
    except binascii.Error as exc:
        raise EventError("isBase64Encoded is set but the body is not base64") from exc
    except (KeyError, TypeError, AttributeError, UnicodeError) as exc:
        raise EventError(f"not a Function URL event: {type(exc).__name__} {exc}") from exc
    source_ip = http.get("sourceIp")
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": unquote(raw_path),
        "raw_path": _wire(raw_path),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": (source_ip, 0) if source_ip else None,
        "server": (str(context.get("domainName") or "lambda"), 443),
    }
    return scope, data


def _wire(text: object) -> bytes:
    """Text as HTTP bytes. Lambda hands over str; a character beyond latin-1 can only have come
    as UTF-8 on the wire, and must not make the runtime fail the whole request."""
    value = str(text)
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")
