"""The relay as an ASGI app: request in, relay to the provider, observe, hand the exchange to a sink.

The same app runs under uvicorn locally and under relaylog's own Lambda runtime loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver

from ..config import Settings
from ..exchange import Attempt, Exchange
from ..gateway.cache import CachedResponse
from ..gateway.cache_policy import CachePolicy, cache_key
from ..gateway.policy import Gateway, PolicyError, credentials, rate_policy, read_gateway, tenant_of
from ..gateway.ratelimit import RateLimiter, RatePolicy, segment_value
from ..gateway.retry import RetryPolicy, retry_after_s, retryable
from ..gateway.services import Services
from ..headers import bearer, narrow_accept_encoding, request_id, response_headers, split_headers
from ..keys import KeysUnavailable, KeyVerifier
from ..providers import bedrock_auth
from ..providers.parsing import parse_request
from ..providers.routing import RouteError, resolve
from ..record import Record
from ..sinks import Sink
from . import echo
from .caching import entry_from
from .client import DisconnectWatcher, ended
from .deadlines import Deadlines
from .stream_usage import UsageStripper
from .targets import Target, plan
from .upstream import Whole, create_session, forbidden, read_whole, received_before_the_cut

log = logging.getLogger("relaylog.relay")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = b"application/json"
# Non-streamed bodies up to this size are read whole and sent in one write.
_READ_WHOLE_MAX = 4 * 1024 * 1024
# A client that hung up after the provider's terminal event has the whole response; the provider
# is read on this long at most for what it still sends (usage, the end of the body, which also
# lets the connection go back to the pool), then let go. The record waits for it, the client not.
_READ_ON_S = 5.0


class ClientGone(Exception):
    """The client closed the connection before relaylog finished answering."""


class RelayApp:
    def __init__(self, settings: Settings, keys: KeyVerifier, sink: Sink, services: Services | None = None) -> None:
        self.settings = settings
        self.keys = keys
        self.sink = sink
        # Cache and rate-limit stores; without them those two features are refused (501).
        self.services = services
        self.limiter = RateLimiter(services.counters) if services is not None else None
        self._session: aiohttp.ClientSession | None = None
        # For hosts the client chose; made on first use, as most deployments never see one.
        self._target_session: aiohttp.ClientSession | None = None
        # The system resolver under the public-address check, unless a test replaces it.
        self.target_resolver: AbstractResolver | None = None
        self.body_deadlines = Deadlines(tick_s=min(1.0, max(settings.body_timeout_s / 4, 0.01)))
        # relaylog's own AWS credentials, for the Bedrock calls it signs; resolved at the first one.
        self.aws_identity = bedrock_auth.AwsIdentity()

    async def startup(self) -> None:
        self._session = create_session(self.settings)

    async def shutdown(self) -> None:
        self.body_deadlines.close()
        for session in (self._session, self._target_session):
            if session is not None:
                await session.close()
        self._session = self._target_session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Started lazily for hosts that skip ASGI lifespan events.
            self._session = create_session(self.settings)
        return self._session

    @property
    def target_session(self) -> aiohttp.ClientSession:
        if self._target_session is None:
            self._target_session = create_session(self.settings, public_only=True, resolver=self.target_resolver)
        return self._target_session

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
        started = time.perf_counter()
        meta, upstream_headers, accept_encoding = split_headers(scope["headers"])
        raw_path = scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else scope["path"]
        exchange = Exchange(
            request_id=request_id(meta.request_id),
            created_at=time.time(),
            started=started,
            method=scope["method"],
            path=path,
            meta=meta,
        )
        try:
            await self._relay(exchange, scope, receive, send, upstream_headers, accept_encoding)
        except ClientGone:
            # A send found the client gone (the Lambda runtime says so there).
            if not ended(exchange):
                exchange.error_type = "client_disconnect"
        except asyncio.CancelledError:
            # Not the client leaving (that is handled inside): the server is stopping this call.
            if not exchange.client_done:
                exchange.error_type = exchange.error_type or "cancelled"
            raise
        except Exception:
            exchange.error_type = "internal_error"
            raise
        finally:
            if exchange.finished is None:
                exchange.finished = time.perf_counter()
            record = self.sink.submit(exchange)
            if exchange.rate_decisions and record is not None:
                self._charge(exchange, record)

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
        try:
            route = resolve(exchange.path, meta.target_url, self.settings)
        except RouteError as error:
            return await self._refuse(exchange, send, error.status, error.error_type, error.message)
        exchange.provider = route.provider
        exchange.endpoint = route.endpoint

        try:
            required = self.keys.active_count() > 0
        except KeysUnavailable:
            return await self._refuse(
                exchange, send, 503, "keys_unavailable", "relaylog cannot read its keys yet; try again shortly"
            )
        if required:
            exchange.key_id = self.keys.verify(bearer(meta.auth) or "")
            if exchange.key_id is None:
                return await self._refuse(
                    exchange, send, 401, "unauthorized", "Missing or invalid Helicone-Auth: Bearer <relaylog key>"
                )
        if route.provider.name == "bedrock":  # relaylog signs, unless the client sends its Bedrock API key
            refusal = await bedrock_auth.admit(exchange, route, upstream_headers, self.keys, self.aws_identity)
            if refusal is not None:
                return await self._refuse(exchange, send, *refusal)

        try:
            body = await _read_body(
                scope,
                receive,
                self.settings.max_request_bytes,
                self.body_deadlines,
                exchange.started + self.settings.body_timeout_s,
            )
        except TimeoutError:
            # The rest of the body may never come: answer, and close the connection behind it.
            exchange.extra_headers.append((b"connection", b"close"))
            return await self._refuse(
                exchange,
                send,
                408,
                "request_timeout",
                f"The request body did not arrive within {self.settings.body_timeout_s:g} s",
            )
        if body is None:
            limit = self.settings.max_request_bytes
            exchange.extra_headers.append((b"connection", b"close"))  # not read to its end
            return await self._refuse(
                exchange, send, 413, "body_too_large", f"Request body is larger than {limit} bytes"
            )
        exchange.request_body = body
        exchange.request_content_type = _header(scope, b"content-type")
        if route.provider is echo.PROVIDER:  # `relaylog verify`: relaylog answers, no provider is called
            return await echo.answer(exchange, send)
        info = parse_request(route.provider.family, route.endpoint, body)
        exchange.model = meta.model_override or info.model
        exchange.stream = info.stream
        exchange.user = meta.user_id or info.user
        exchange.request_parse_error = info.parse_error if body else None

        query = scope.get("query_string") or b""
        try:
            gateway = read_gateway(meta, upstream_headers)
            key_policy = self._key_policy(exchange.key_id)
            targets = plan(
                route, gateway.fallbacks, upstream_headers, body, info, query, exchange.model, self.settings
            )
        except RouteError as error:
            return await self._refuse(exchange, send, error.status, error.error_type, error.message)
        except ValueError as error:  # PolicyError, or a fallback's body override that cannot apply
            return await self._refuse(exchange, send, 400, "invalid_request", str(error))
        exchange.show_attempts = gateway.retry is not None or bool(gateway.fallbacks)

        cache: tuple[CachePolicy, str, int, frozenset[bytes]] | None = None
        if gateway.cache is not None or gateway.rate_limit is not None or key_policy is not None:
            if self.services is None or self.limiter is None:
                return await self._refuse(
                    exchange, send, 501, "gateway_unavailable", "Caching and rate limits are not set up here"
                )
            tenant = tenant_of(exchange.key_id, upstream_headers, query)
            if not await self._admit(exchange, send, tenant, gateway, key_policy):
                return
            if gateway.cache is not None:
                key = cache_key(
                    gateway.cache,
                    tenant=tenant,
                    provider=route.provider.name,
                    method=exchange.method,
                    url=str(targets[0].url),
                    accept_encoding=narrow_accept_encoding(accept_encoding),
                    body=body,
                )
                slot = random.randrange(gateway.cache.bucket_size)
                entry = await self.services.cache.get(key, slot)
                exchange.cache_status = "HIT" if entry is not None else "MISS"
                exchange.extra_headers += [
                    (b"helicone-cache", exchange.cache_status.encode()),
                    (b"helicone-cache-bucket-idx", str(slot).encode()),
                ]
                if entry is not None:
                    return await self._replay(exchange, receive, send, entry, gateway.cache.original_timing)
                secrets = credentials([pair for target in targets for pair in target.headers], query)
                cache = (gateway.cache, key, slot, secrets)
                exchange.chunk_times = []

        await self._call_upstream(exchange, receive, send, targets, gateway.retry, accept_encoding)
        if cache is not None:
            policy, key, slot, secrets = cache
            stored = entry_from(exchange, policy.ttl_s, secrets)
            if stored is not None and self.services is not None:
                await self.services.cache.put(key, slot, stored)

    def _key_policy(self, key_id: str | None) -> RatePolicy | None:
        text = self.keys.limit(key_id) if key_id is not None else None
        if text is None:
            return None
        try:
            return rate_policy(text)
        except ValueError as error:  # checked at `keys create`; a hand-edited file can still be wrong
            raise PolicyError(f"the relaylog key's own limit is invalid: {error}") from None

    async def _admit(
        self, exchange: Exchange, send: Send, tenant: str, gateway: Gateway, key_policy: RatePolicy | None
    ) -> bool:
        """Count the call against the key's limit, then the header's; refuse with 429 when over."""
        assert self.limiter is not None
        meta = exchange.meta
        checks = []
        if key_policy is not None:
            checks.append((key_policy, f"key-limit:{exchange.key_id}"))
        if gateway.rate_limit is not None:
            checks.append((gateway.rate_limit, tenant))
        shown = None
        for policy, scope in checks:
            decision = await self.limiter.check(policy, scope, segment_value(policy, exchange.user, meta.properties))
            if not decision.allowed:
                exchange.extra_headers += decision.headers() + [(b"retry-after", str(decision.reset_s).encode())]
                unit = "requests" if policy.unit == "request" else "cents"
                await self._refuse(
                    exchange,
                    send,
                    429,
                    "rate_limited",
                    f"Rate limit reached: {policy.quota:g} {unit} per {policy.window_s} s "
                    f"(policy {policy.text}); retry in {decision.reset_s} s",
                )
                return False
            if decision.counter is not None:  # a cents policy, charged after the call
                exchange.rate_decisions.append(decision)
            if shown is None or decision.remaining / decision.policy.quota < shown.remaining / shown.policy.quota:
                shown = decision
        if shown is not None:
            exchange.extra_headers += shown.headers()
        return True

    def _charge(self, exchange: Exchange, record: Record) -> None:
        """Deduct the call's real cost from the cents policies it passed."""
        assert self.limiter is not None
        for decision in exchange.rate_decisions:
            try:
                self.limiter.deduct(decision, record["cost_usd"])
            except Exception:  # the call is over; a counter store failure must not surface here
                log.exception("request %s: could not charge its cost to a rate limit", exchange.request_id)

    async def _replay(
        self, exchange: Exchange, receive: Receive, send: Send, entry: CachedResponse, original_timing: bool
    ) -> None:
        """Answer from the cache with the stored chunks, one send per chunk as first received."""
        exchange.response_content_type = entry.content_type
        exchange.response_content_encoding = entry.content_encoding
        exchange.usage_injected = entry.usage_injected
        exchange.withheld = list(entry.withheld)  # the entry's own list stays as stored
        headers = [*entry.headers, (b"helicone-id", exchange.request_id.encode()), *exchange.extra_headers]
        # Nothing to read on after the end: a client that leaves then stops the replay at once.
        watcher = DisconnectWatcher(receive, exchange, read_on_s=0.0) if original_timing else None
        try:
            await self._start(exchange, send, entry.status, headers)
            began = time.perf_counter()
            capture_limit = self.settings.max_request_bytes
            for chunk, offset_ms in zip(entry.chunks, entry.offsets_ms, strict=True):
                if watcher is not None:
                    delay = began + offset_ms / 1000.0 - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await self._send_chunk(exchange, send, chunk, capture_limit)
            await self._send_last(exchange, send, watcher, b"")
        except asyncio.CancelledError:
            if watcher is None or not watcher.stopped_us():
                raise
            _uncancel()
        finally:
            if watcher is not None:
                watcher.stop()

    async def _call_upstream(
        self,
        exchange: Exchange,
        receive: Receive,
        send: Send,
        targets: list[Target],
        retry: RetryPolicy | None,
        accept_encoding: bytes | None,
    ) -> None:
        watcher = DisconnectWatcher(receive, exchange, read_on_s=min(_READ_ON_S, self.settings.read_timeout_s))
        response: aiohttp.ClientResponse | None = None
        try:
            exchange.upstream_started = time.perf_counter()
            tries = retry.num + 1 if retry is not None else 1
            for position, target in enumerate(targets):
                last_target = position == len(targets) - 1
                _aim(exchange, target)
                for attempt_no in range(tries):
                    last_try = attempt_no == tries - 1
                    began = time.perf_counter()
                    try:
                        response, preread = await self._open(exchange, target, accept_encoding)
                    except (TimeoutError, aiohttp.ClientError, OSError) as error:
                        if (refused := forbidden(error)) is not None:
                            # Not a failure to retry or fall through: the client named a host
                            # relaylog will not connect to.
                            _note(exchange, target, 0, "target_not_allowed", began)
                            exchange.upstream_finished = time.perf_counter()
                            return await self._refuse(exchange, send, 403, "target_not_allowed", str(refused))
                        timed_out = isinstance(error, TimeoutError)
                        failure = "upstream_timeout" if timed_out else "upstream_unreachable"
                        attempt = _note(exchange, target, 0, failure, began)
                        if retry is not None and not last_try:
                            await _wait(attempt, retry.delay_s(attempt_no, None))
                            continue
                        if not last_target:
                            break
                        raise  # nothing left to try: answered below, like any failure before the answer
                    status = response.status
                    attempt = _note(exchange, target, status, None, began)
                    if retry is not None and not last_try and retryable(status):
                        wait = retry.delay_s(attempt_no, retry_after_s(response.headers))
                        if wait is not None:
                            response.close()
                            response = None
                            await _wait(attempt, wait)
                            continue
                    if not last_target and target.fallback is not None and target.fallback.falls_through(status):
                        response.close()
                        response = None
                        break
                    if target.index is not None:
                        exchange.fallback_index = target.index
                        exchange.extra_headers.append((b"helicone-fallback-index", str(target.index).encode()))
                    await self._respond(exchange, response, send, watcher, preread)
                    return
        except asyncio.CancelledError:
            if not watcher.stopped_us():
                raise
            _uncancel()
        except TimeoutError:
            if exchange.status == 0:
                exchange.upstream_finished = time.perf_counter()
                await self._refuse(exchange, send, 504, "upstream_timeout", "The provider did not answer in time")
            else:
                _cut(exchange, "upstream_timeout", "the provider went silent mid-response")
        except (aiohttp.ClientError, OSError) as error:
            if exchange.status == 0:
                exchange.upstream_finished = time.perf_counter()
                await self._refuse(exchange, send, 502, "upstream_unreachable", _describe(error))
            else:
                _cut(exchange, "upstream_disconnect", "the provider closed the connection mid-response")
        finally:
            watcher.stop()
            if exchange.upstream_finished is None:
                exchange.upstream_finished = time.perf_counter()  # stopped reading early
            if response is not None:
                # Closing (not releasing) drops a connection whose body was not read to the end.
                response.close()

    async def _open(
        self, exchange: Exchange, target: Target, accept_encoding: bytes | None
    ) -> tuple[aiohttp.ClientResponse, Whole | None]:
        """The provider's response to one attempt, with its body already read when relaylog had to
        look at it (a 400 that may be about the stream usage it asked for)."""
        exchange.usage_injected = target.usage_injected
        response = await self._request(exchange, target, accept_encoding, target.upstream_body)
        if exchange.usage_injected and response.status == 400:
            # A provider that turned out not to accept stream_options: ask again as the client did.
            preread = await read_whole(response)
            if preread.failure is not None or b"stream_options" not in preread.data:
                return response, preread
            response.release()
            exchange.usage_injected = False
            response = await self._request(exchange, target, accept_encoding, target.body)
        return response, None

    async def _request(
        self, exchange: Exchange, target: Target, accept_encoding: bytes | None, body: bytes
    ) -> aiohttp.ClientResponse:
        headers = list(target.headers)
        if exchange.usage_injected:
            headers.append(("accept-encoding", "identity"))  # the stripper reads the stream as text
        elif accept_encoding is not None:
            headers.append(("accept-encoding", narrow_accept_encoding(accept_encoding) or "identity"))
        if exchange.aws_signer is not None:
            headers += exchange.aws_signer.headers(exchange.method, target.route, target.url, body)
        session = self.target_session if target.route.guarded else self.session
        return await session.request(
            exchange.method,
            target.url,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
        )

    async def _respond(
        self,
        exchange: Exchange,
        response: aiohttp.ClientResponse,
        send: Send,
        watcher: DisconnectWatcher,
        preread: Whole | None,
    ) -> None:
        content_type = response.headers.get("Content-Type", "")
        exchange.response_content_type = content_type
        exchange.response_content_encoding = response.headers.get("Content-Encoding")
        event_stream = content_type.startswith("text/event-stream")
        stripper = UsageStripper() if exchange.usage_injected and event_stream else None
        if stripper is not None:
            # The same list, filled as the stream goes: usage withheld before a cut is still read.
            exchange.withheld = stripper.withheld
        headers = response_headers(tuple(response.raw_headers), keep_length=stripper is None)
        if event_stream:
            _add_stream_headers(headers)
        headers.append((b"helicone-id", exchange.request_id.encode()))
        headers += exchange.extra_headers

        length = response.content_length
        capture_limit = self.settings.max_request_bytes
        if preread is not None or (not event_stream and length is not None and length <= _READ_WHOLE_MAX):
            whole = preread if preread is not None else await read_whole(response)
            exchange.upstream_finished = time.perf_counter()
            await self._start(exchange, send, response.status, headers)
            if whole.failure is None:
                return await self._send_last(exchange, send, watcher, whole.data)
            # Cut (or silent) mid-body: the client gets the provider's status, headers and bytes,
            # then its connection is cut the same way, as it would be calling the provider directly.
            if whole.data:
                await self._send_chunk(exchange, send, whole.data, capture_limit)
            raise whole.failure

        await self._start(exchange, send, response.status, headers)
        try:
            async for chunk in response.content.iter_any():
                out = stripper.feed(chunk) if stripper is not None else chunk
                if out:
                    await self._send_chunk(exchange, send, out, capture_limit)
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, ConnectionError):
            # The client gets every byte the provider sent before it hung up, as it would directly.
            tail = received_before_the_cut(response.content)
            out = stripper.feed(tail) if stripper is not None and tail else tail
            if out:
                await self._send_chunk(exchange, send, out, capture_limit)
            raise
        if not exchange.client_done:
            exchange.upstream_finished = time.perf_counter()
        tail = stripper.finish() if stripper is not None else b""
        await self._send_last(exchange, send, watcher, tail)

    async def _start(self, exchange: Exchange, send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        exchange.status = status
        if exchange.chunk_times is not None:
            exchange.sent_headers = headers
        if status >= 400:
            exchange.error_type = "upstream_error"
        await send({"type": "http.response.start", "status": status, "headers": headers})

    async def _send_chunk(self, exchange: Exchange, send: Send, data: bytes, capture_limit: int) -> None:
        if exchange.client_done:
            exchange.withheld.append(data)  # read on for usage; the client has all it wanted
            return
        _count_sent(exchange, data)
        if exchange.response_bytes <= capture_limit:
            exchange.response_chunks.append(data)
        await send({"type": "http.response.body", "body": data, "more_body": True})

    async def _send_last(
        self, exchange: Exchange, send: Send, watcher: DisconnectWatcher | None, data: bytes
    ) -> None:
        # From here on a disconnect notice only means the response is complete.
        if watcher is not None:
            watcher.stop()
        if exchange.client_done:
            if data:
                exchange.withheld.append(data)
            return
        if data:
            _count_sent(exchange, data)
            exchange.response_chunks.append(data)
        await send({"type": "http.response.body", "body": data, "more_body": False})
        exchange.finished = time.perf_counter()

    async def _refuse(self, exchange: Exchange, send: Send, status: int, error_type: str, message: str) -> None:
        """Answer with relaylog's own JSON error (never the provider's words)."""
        body = orjson.dumps({"error": {"type": error_type, "message": message}})
        exchange.status = status
        exchange.error_type = error_type
        exchange.response_content_type = "application/json"
        exchange.response_content_encoding = None  # a provider answer dropped midway had its own
        headers = [
            (b"content-type", _JSON),
            (b"content-length", str(len(body)).encode()),
            (b"helicone-id", exchange.request_id.encode()),
            *exchange.extra_headers,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        exchange.ttft = time.perf_counter()
        exchange.response_bytes = len(body)
        exchange.response_chunks.append(body)
        await send({"type": "http.response.body", "body": body, "more_body": False})
        exchange.finished = time.perf_counter()


def _cut(exchange: Exchange, error_type: str, what: str) -> None:
    """The provider failed after the answer began; the client's response is cut the same way (the
    app returns without completing it). A stream that already ended for the client is a success."""
    if exchange.upstream_finished is None:
        exchange.upstream_finished = time.perf_counter()
    if exchange.client_done or ended(exchange):
        return
    exchange.error_type = error_type
    _log_cut(exchange, what)


def _count_sent(exchange: Exchange, data: bytes) -> None:
    """Time and size of body bytes on their way to the client (which bytes are kept is the caller's)."""
    now = time.perf_counter()
    if exchange.ttft is None:
        exchange.ttft = now
    if exchange.chunk_times is not None:
        exchange.chunk_times.append(now)
    exchange.response_bytes += len(data)


def _aim(exchange: Exchange, target: Target) -> None:
    """The record describes the target that is being called (and, in the end, the one that answered)."""
    exchange.provider = target.route.provider
    exchange.endpoint = target.route.endpoint
    exchange.model = target.model


def _note(exchange: Exchange, target: Target, status: int, error_type: str | None, began: float) -> Attempt:
    attempt = Attempt(target.index, status, error_type, round((time.perf_counter() - began) * 1000.0, 3))
    exchange.attempts.append(attempt)
    return attempt


async def _wait(attempt: Attempt, seconds: float | None) -> None:
    if seconds:
        attempt.wait_ms = round(seconds * 1000.0, 3)
        await asyncio.sleep(seconds)


def _log_cut(exchange: Exchange, what: str) -> None:
    # The server then closes the client's connection the same way (uvicorn's "returned without
    # completing response" line, which server.py replaces with this one).
    log.warning("request %s: %s; the client's response was cut the same way", exchange.request_id, what)


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


async def _read_body(
    scope: Scope, receive: Receive, limit: int, deadlines: Deadlines, deadline: float
) -> bytes | None:
    """The whole request body, or None when it is larger than `limit`. TimeoutError when it has
    not all arrived by `deadline` (perf_counter time): uvicorn has no body timeout of its own, so a
    client trickling a body (slowloris) would hold the call open for ever."""
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    task = deadlines.enter(deadline)
    try:
        return await _receive_body(receive, limit)
    except asyncio.CancelledError:
        if deadlines.expired(task):
            raise TimeoutError from None
        raise
    finally:
        deadlines.leave(task)


async def _receive_body(receive: Receive, limit: int) -> bytes | None:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else None
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _header(scope: Scope, name: bytes) -> str | None:
    key: bytes
    value: bytes
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _add_stream_headers(headers: list[tuple[bytes, bytes]]) -> None:
    """Proxies and browsers must not buffer or cache an event stream; keep the provider's own values."""
    names = {name.lower() for name, _ in headers}
    if b"cache-control" not in names:
        headers.append((b"cache-control", b"no-cache"))
    if b"x-accel-buffering" not in names:
        headers.append((b"x-accel-buffering", b"no"))


def _describe(error: BaseException) -> str:
    # The class name and aiohttp's text name the failure; neither carries request headers or keys.
    text = str(error).strip()
    return f"Provider unreachable: {type(error).__name__}{': ' + text if text else ''}"[:500]

