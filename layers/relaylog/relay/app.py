"""The relay as an ASGI app: a request in, admitted, relayed to the provider (or answered from the
cache), observed on its exchange, and the exchange handed to a sink to become a record.

The same app runs under uvicorn locally and under relaylog's own Lambda runtime loop. The steps
live beside it: `admission` (keys, body, rate limits), `attempts` (the plan run against the
provider), `respond` (what the client is sent), `caching` (the cache slot and its entry).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from ..asgi import ClientGone, Receive, Scope, Send, send_now_of
from ..config import Settings
from ..gateway.cache_policy import cache_key
from ..gateway.policy import credentials, read_gateway, tenant_of
from ..gateway.ratelimit import RateLimiter
from ..gateway.services import Services
from ..headers import narrow_accept_encoding, request_id, split_headers
from ..keys import KeyVerifier
from ..observe import Exchange
from ..providers.bedrock_auth import AwsIdentity
from ..providers.parsing import parse_request
from ..providers.routing import RouteError, resolve
from ..sinks import Sink
from . import echo, respond
from .admission import Refusal, admit, authenticate, bedrock_signer, charge, key_policy, read_body
from .attempts import Attempts
from .caching import CacheSlot, entry_from
from .client import disconnect_listener, ended
from .deadlines import Deadlines
from .targets import plan
from .upstream import Upstream


class RelayApp:
    def __init__(
        self,
        settings: Settings,
        keys: KeyVerifier,
        sink: Sink,
        services: Services | None = None,
        idle: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.sink = sink
        # Cache and rate-limit stores; without them those two features are refused (501).
        self.services = services
        self.limiter = RateLimiter(services.counters) if services is not None else None
        # The HTTP clients to the providers, made on first use (hosts may skip lifespan events).
        self.upstream = Upstream(settings)
        self.body_deadlines = Deadlines(tick_s=min(1.0, max(settings.body_timeout_s / 4, 0.01)))
        # `idle` is called as a call is about to wait on its provider (sinks/deferred.py's moment).
        self.attempts = Attempts(self.upstream, settings, idle)
        # relaylog's own AWS credentials, for the Bedrock calls it signs; resolved at the first one.
        self.aws_identity = AwsIdentity()

    async def startup(self) -> None:
        self.upstream.client(guarded=False)  # its TLS context (the system's CAs) loaded before the first call

    async def shutdown(self) -> None:
        self.body_deadlines.close()
        await self.upstream.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                self.sink.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One call, always one record: whatever happens, the exchange goes to the sink."""
        started = time.perf_counter()
        meta, upstream_headers, accept_encoding = split_headers(scope["headers"])
        raw_path = scope.get("raw_path")
        exchange = Exchange(
            request_id=request_id(meta.request_id),
            created_at=time.time(),
            started=started,
            method=scope["method"],
            path=raw_path.decode("latin-1") if raw_path else scope["path"],
            meta=meta,
            capture_limit=self.settings.max_capture_bytes,
        )
        try:
            await self._relay(exchange, scope, receive, send, upstream_headers, accept_encoding)
        except ClientGone:
            # A send found the client gone (the Lambda runtime says so there).
            if not ended(exchange):
                exchange.failed("client_disconnect")
        except asyncio.CancelledError:
            # Not the client leaving (that is handled inside): the server is stopping this call.
            exchange.interrupted()
            raise
        except Exception:
            exchange.failed("internal_error")
            raise
        finally:
            exchange.finish()
            record = self.sink.submit(exchange)
            if exchange.rate_decisions and record is not None and self.limiter is not None:
                charge(self.limiter, exchange, record)

    async def _relay(
        self,
        exchange: Exchange,
        scope: Scope,
        receive: Receive,
        send: Send,
        upstream_headers: list[tuple[str, str]],
        accept_encoding: bytes | None,
    ) -> None:
        meta = exchange.meta
        query: bytes = scope.get("query_string") or b""
        try:
            route = resolve(exchange.path, meta.target_url, self.settings)
            exchange.routed(route.provider, route.endpoint)
            authenticate(self.keys, exchange)
            signer = None
            if route.provider.name == "bedrock":  # relaylog signs, unless the client sends its Bedrock API key
                region = route.resource or ""
                signer = await bedrock_signer(self.keys, exchange, upstream_headers, self.aws_identity, region)
            body = await read_body(exchange, scope, receive, self.settings, self.body_deadlines)
            if route.provider is echo.PROVIDER:  # `relaylog verify`: relaylog answers, no provider is called
                return await respond.answer(exchange, send, 200, None, echo.body(exchange))
            info = parse_request(route.provider.family, route.endpoint, body)
            exchange.request_parsed(info)
            try:
                gateway = read_gateway(meta, upstream_headers)
                own_limit = key_policy(self.keys, exchange.key_id)
                targets = plan(
                    route, gateway.fallbacks, upstream_headers, body, info, query, exchange.model, self.settings, signer
                )
            except ValueError as error:  # PolicyError, or a fallback's body override that cannot apply
                raise Refusal(400, "invalid_request", str(error)) from None
            if gateway.retry is not None or gateway.fallbacks:
                exchange.list_attempts()
            tenant = ""
            if gateway.cache is not None or gateway.rate_limit is not None or own_limit is not None:
                if self.services is None or self.limiter is None:
                    raise Refusal(501, "gateway_unavailable", "Caching and rate limits are not set up here")
                tenant = tenant_of(exchange.key_id, upstream_headers, query)
                await admit(self.limiter, exchange, tenant, gateway.rate_limit, own_limit)
        except RouteError as error:
            return await respond.refuse(exchange, send, error.status, error.error_type, error.message)
        except Refusal as refusal:
            return await respond.refuse(
                exchange, send, refusal.status, refusal.error_type, refusal.message, refusal.headers
            )

        slot = None
        if gateway.cache is not None and self.services is not None:
            key = cache_key(
                gateway.cache,
                tenant=tenant,
                provider=route.provider.name,
                method=exchange.method,
                url=str(targets[0].url),
                accept_encoding=narrow_accept_encoding(accept_encoding),
                body=body,
            )
            index = random.randrange(gateway.cache.bucket_size)
            entry = await self.services.cache.get(key, index)
            exchange.cache_looked_up("HIT" if entry is not None else "MISS")
            exchange.add_headers(
                (b"helicone-cache", b"HIT" if entry is not None else b"MISS"),
                (b"helicone-cache-bucket-idx", str(index).encode()),
            )
            if entry is not None:
                return await respond.replay(exchange, receive, send, entry, gateway.cache.original_timing)
            secrets = credentials([pair for target in targets for pair in target.headers], query)
            slot = CacheSlot(gateway.cache, key, index, secrets)

        listen = disconnect_listener(scope)
        await self.attempts.send(
            exchange, receive, send, targets, gateway.retry, accept_encoding, listen, send_now_of(scope)
        )
        if slot is not None and self.services is not None:
            stored = entry_from(exchange, slot)
            if stored is not None:
                await self.services.cache.put(slot.key, slot.index, stored)
