"""relaylog's own echo route, `/relaylog/verify`: answered by relaylog itself, never by a provider.

`relaylog verify` calls it to prove a deployment end to end without a provider key or provider
spend. The call goes through everything a relayed call goes through before a provider would be
called (routing, the relaylog key check, the body limits) and its record through the same sink, so
it travels the real path to the store. The record is marked by its provider name, `relaylog`: it is
grouped apart from real traffic in stats, rollups and Athena, has no usage (`usage_source` absent,
no cost) and `attempt_count` 0.
"""

from __future__ import annotations

import orjson

from ..observe import Exchange
from ..providers.registry import Provider

PATH = "/relaylog/verify"
# The record's `endpoint`: what a provider's would be, its path after the prefix.
ENDPOINT = "/verify"
# Not in the provider registry: nothing is ever sent upstream, priced or routed by host for it.
PROVIDER = Provider("relaylog", "", "openai", False, "")


def body(exchange: Exchange) -> bytes:
    """The JSON answer (sent with 200): the request body given back as text, and that no provider
    was called."""
    return orjson.dumps(
        {
            "object": "relaylog.echo",
            "request_id": exchange.request_id,
            "provider_called": False,
            "echo": exchange.request_body.decode("utf-8", errors="replace"),
        }
    )
