"""relaylog's own echo route, `/relaylog/verify`: answered by relaylog itself, never by a provider.

`relaylog verify` calls it to prove a deployment end to end without a provider key or provider
spend. The call goes through everything a relayed call goes through before a provider would be
called (routing, the relaylog key check, the body limits) and its record through the same sink, so
it travels the real path to the store. The record is marked by its provider name, `relaylog`: it is
grouped apart from real traffic in stats, rollups and Athena, has no usage (`usage_source` absent,
no cost) and `attempt_count` 0.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from ..exchange import Exchange
from ..providers.registry import Provider

PATH = "/relaylog/verify"
# The record's `endpoint`: what a provider's would be, its path after the prefix.
ENDPOINT = "/verify"
# Not in the provider registry: nothing is ever sent upstream, priced or routed by host for it.
PROVIDER = Provider("relaylog", "", "openai", False, "")

# ASGI's send callable (relay/app.py's Send; importing it from there would be an import cycle).
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def answer(exchange: Exchange, send: _Send) -> None:
    """200 with a JSON body that gives back the request body as text and says no provider was called."""
    body = orjson.dumps(
        {
            "object": "relaylog.echo",
            "request_id": exchange.request_id,
            "provider_called": False,
            "echo": exchange.request_body.decode("utf-8", errors="replace"),
        }
    )
    exchange.status = 200
    exchange.response_content_type = "application/json"
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"helicone-id", exchange.request_id.encode()),
        *exchange.extra_headers,
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    exchange.ttft = time.perf_counter()
    exchange.response_bytes = len(body)
    exchange.response_chunks.append(body)
    await send({"type": "http.response.body", "body": body, "more_body": False})
    exchange.finished = time.perf_counter()
