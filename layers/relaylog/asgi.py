"""The ASGI types relaylog's apps and servers speak, defined once (https://asgi.readthedocs.io/)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientGone(Exception):
    """Raised by a server's `send` when the client has closed the connection (relaylog's Lambda
    runtime does; uvicorn drops such sends silently and says so through `receive`)."""


# `scope["extensions"]["relaylog.send_now"]["send_now"]`, where the server offers it (relaylog
# serve, the Lambda runtime): `send_now(body)` sends a body chunk with more to come at once, as
# `send` would but never waiting, so the relay can forward a stream's bytes from the provider
# connection's callback without a task wake-up per read. It returns False when the next chunk
# must go through `send` instead: the client's connection is backed up (`send` waits for it to
# drain) or the client left (nothing was written then; `send` or `receive` says so).
SendNow = Callable[[bytes], bool]


def send_now_of(scope: Scope) -> SendNow | None:
    extension = scope.get("extensions", {}).get("relaylog.send_now")
    return extension.get("send_now") if extension is not None else None
