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
