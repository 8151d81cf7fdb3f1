"""Running a call's attempt plan (`targets.plan()`): the provider called, retried and fallen back
from until one answer is kept, then relayed.

Layered the way httpx's client sends (`send -> _send_handling_auth -> _send_handling_redirects ->
_send_single_request`), one concern per layer, each returning a typed outcome to the one above:

    send                        the client's side: hearing it leave, relaying the answer, a cut
    _send_handling_fallbacks    Helicone-Fallbacks: the next target while one falls through
    _send_handling_retries      Helicone-Retry-*: the same target again after a backoff
    _send_single_attempt        one call to the provider, its outcome `Answered` or `Unanswered`
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..asgi import Receive, Send, SendNow
from ..config import Settings
from ..gateway.retry import RetryPolicy, retry_after_s, retryable
from ..headers import narrow_accept_encoding
from ..observe import Attempt, Exchange
from ..record import ErrorType
from . import respond
from .client import DisconnectWatcher, Listen, ended
from .http1 import ForbiddenAddress, Response, Whole
from .targets import Target
from .upstream import Upstream

log = logging.getLogger("relaylog.relay")

# A client that hung up after the provider's terminal event has the whole response; the provider
# is read on this long at most for what it still sends (usage, the end of the body, which also
# lets the connection go back to the pool), then let go. The record waits for it, the client not.
_READ_ON_S = 5.0


@dataclass(slots=True)
class Answered:
    """The provider answered (any status); with its body when relaylog had to read it to decide."""

    response: Response
    preread: Whole | None
    attempt: Attempt


@dataclass(slots=True)
class Unanswered:
    """No answer: the connection failed or timed out, or the host is one relaylog will not call."""

    error: BaseException
    error_type: ErrorType
    attempt: Attempt


Outcome = Answered | Unanswered


class Attempts:
    """Calls the provider for the relay; one per app, shared by every call."""

    def __init__(self, upstream: Upstream, settings: Settings, idle: Callable[[], None] | None = None) -> None:
        self._upstream = upstream
        self._settings = settings
        self._idle = idle

    async def send(
        self,
        exchange: Exchange,
        receive: Receive,
        send: Send,
        targets: list[Target],
        retry: RetryPolicy | None,
        accept_encoding: bytes | None,
        listen: Listen | None = None,
        send_now: SendNow | None = None,
    ) -> None:
        """Run the plan and relay the answer kept. A provider that fails once its answer has begun
        cuts the client's response the same way (the app returns without completing it). `listen`
        is the server's way of saying the client left, if it has one (else `receive` is awaited);
        `send_now` its way of sending without waiting (respond.relay)."""
        read_on_s = min(_READ_ON_S, self._settings.read_timeout_s)
        watcher = DisconnectWatcher(receive, exchange, read_on_s, listen)
        response: Response | None = None
        # The loop's idle moment: a non-streamed call now waits for its provider's whole answer. A
        # stream's client waits for its first event, then reads each as it comes: no moment of a
        # stream is idle for its client (sinks/deferred.py).
        if self._idle is not None and not exchange.stream:
            self._idle()
        try:
            outcome = await self._send_handling_fallbacks(exchange, targets, retry, accept_encoding)
            if isinstance(outcome, Unanswered):
                exchange.upstream_done()
                return await _refuse_unanswered(exchange, send, outcome)
            response = outcome.response
            if outcome.attempt.target is not None:
                exchange.answered_by(outcome.attempt.target)
            await respond.relay(exchange, response, send, watcher, outcome.preread, send_now)
        except asyncio.CancelledError:
            if not watcher.uncancel():
                raise
        except TimeoutError:
            _cut(exchange, "upstream_timeout", "the provider went silent mid-response")
        except OSError:  # UpstreamDisconnected (a ConnectionError) and the socket's own errors
            _cut(exchange, "upstream_disconnect", "the provider closed the connection mid-response")
        finally:
            watcher.stop()
            exchange.upstream_done()  # stopped reading early
            if response is not None:
                # Closing (not releasing) drops a connection whose body was not read to the end.
                response.close()

    async def _send_handling_fallbacks(
        self, exchange: Exchange, targets: list[Target], retry: RetryPolicy | None, accept_encoding: bytes | None
    ) -> Outcome:
        """Each target in turn, until one's outcome is kept (the last one's always is)."""
        position = 0
        while True:
            target = targets[position]
            outcome = await self._send_handling_retries(exchange, target, retry, accept_encoding)
            position += 1
            if position == len(targets) or not _falls_through(target, outcome):
                return outcome
            if isinstance(outcome, Answered):
                outcome.response.close()

    async def _send_handling_retries(
        self, exchange: Exchange, target: Target, retry: RetryPolicy | None, accept_encoding: bytes | None
    ) -> Outcome:
        """One target, again after a backoff while the outcome is one worth retrying."""
        retries = 0
        while True:
            outcome = await self._send_single_attempt(exchange, target, accept_encoding)
            wait = _backoff(retry, retries, outcome)
            if wait is None:
                return outcome
            if isinstance(outcome, Answered):
                outcome.response.close()
            if wait:
                outcome.attempt.wait_ms = round(wait * 1000.0, 3)
                await asyncio.sleep(wait)
            retries += 1

    async def _send_single_attempt(self, exchange: Exchange, target: Target, accept_encoding: bytes | None) -> Outcome:
        """One call to the provider. A provider that turns out not to accept the stream usage
        relaylog asked for (400 naming stream_options) is asked again as the client asked, within
        the same attempt; that 400's body is read to decide, and kept if it is the answer."""
        began = exchange.attempt_started(target)
        client = self._upstream.client(target.route.guarded)
        headers = _headers(exchange, target, accept_encoding)
        preread = None
        try:
            response = await client.request(exchange.method, target.url, headers, target.upstream_body)
            if exchange.usage_injected and response.status == 400:
                preread = await response.read()
                if preread.failure is None and b"stream_options" in preread.data:
                    response.close()
                    exchange.usage_refused()
                    preread = None
                    response = await client.request(exchange.method, target.url, headers, target.body)
        except OSError as error:  # TimeoutError, ForbiddenAddress and every connection failure
            failure = _failure(error)
            return Unanswered(error, failure, exchange.attempt_ended(target.index, 0, failure, began))
        return Answered(response, preread, exchange.attempt_ended(target.index, response.status, None, began))


def _failure(error: BaseException) -> ErrorType:
    if isinstance(error, ForbiddenAddress):
        return "target_not_allowed"
    return "upstream_timeout" if isinstance(error, TimeoutError) else "upstream_unreachable"


def _headers(exchange: Exchange, target: Target, accept_encoding: bytes | None) -> list[tuple[str, str]]:
    headers = list(target.headers)
    if exchange.usage_injected:
        headers.append(("accept-encoding", "identity"))  # the stripper reads the stream as text
    elif accept_encoding is not None:
        headers.append(("accept-encoding", narrow_accept_encoding(accept_encoding) or "identity"))
    if target.signer is not None:
        # Signed per attempt: a retry gets a fresh date, a fallback its own host and region. Bedrock
        # is never asked for stream usage, so `upstream_body` is the one body sent to a signed target.
        headers += target.signer.headers(exchange.method, target.route, target.url, target.upstream_body)
    return headers


def _backoff(retry: RetryPolicy | None, retries: int, outcome: Outcome) -> float | None:
    """Seconds to wait before calling the same target again, or None to keep this outcome."""
    if retry is None or retries >= retry.num:
        return None
    if isinstance(outcome, Unanswered):
        return None if outcome.error_type == "target_not_allowed" else retry.delay_s(retries, None)
    if not retryable(outcome.response.status):
        return None
    return retry.delay_s(retries, retry_after_s(outcome.response.header))


def _falls_through(target: Target, outcome: Outcome) -> bool:
    """Whether the next Helicone-Fallbacks entry is called after this outcome."""
    if isinstance(outcome, Unanswered):
        # Not a failure to fall through: the client named a host relaylog will not connect to.
        return outcome.error_type != "target_not_allowed"
    return target.fallback is not None and target.fallback.falls_through(outcome.response.status)


async def _refuse_unanswered(exchange: Exchange, send: Send, outcome: Unanswered) -> None:
    """No provider answered: relaylog says why (its refusal of a forbidden host, 504 or 502)."""
    error = outcome.error
    if outcome.error_type == "target_not_allowed":
        await respond.refuse(exchange, send, 403, "target_not_allowed", str(error))
    elif outcome.error_type == "upstream_timeout":
        await respond.refuse(exchange, send, 504, "upstream_timeout", "The provider did not answer in time")
    else:
        await respond.refuse(exchange, send, 502, "upstream_unreachable", _describe(error))


def _cut(exchange: Exchange, error: ErrorType, what: str) -> None:
    """The provider failed after the answer began; the client's response is cut the same way. A
    stream that already ended for the client is a success."""
    exchange.upstream_done()
    if exchange.client_done or ended(exchange):
        return
    exchange.failed(error)
    # The server then closes the client's connection the same way (uvicorn's "returned without
    # completing response" line, which server.py replaces with this one).
    log.warning("request %s: %s; the client's response was cut the same way", exchange.request_id, what)


def _describe(error: BaseException) -> str:
    # The class name and the error's text name the failure; neither carries request headers or keys.
    text = str(error).strip()
    return f"Provider unreachable: {type(error).__name__}{': ' + text if text else ''}"[:500]
