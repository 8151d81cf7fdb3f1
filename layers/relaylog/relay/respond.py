"""Answering the client: the provider's response relayed (read whole, or streamed chunk by chunk),
relaylog's own JSON answers (its refusals, the echo route), and a cached answer replayed.

Each send is observed first (`Exchange.response_started`, `chunk_sent`): the record then says what
the client was sent, even when the send is the last thing that happens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson

from ..asgi import Receive, Send, SendNow
from ..gateway.cache import CachedResponse
from ..headers import response_headers
from ..observe import Exchange, Header
from ..record import ErrorType
from .client import DisconnectWatcher
from .http1 import Response, Whole
from .stream_usage import UsageStripper

_JSON = b"application/json"
# Non-streamed bodies up to this size are read whole and sent in one write.
_READ_WHOLE_MAX = 4 * 1024 * 1024


async def relay(
    exchange: Exchange,
    response: Response,
    send: Send,
    watcher: DisconnectWatcher,
    preread: Whole | None,
    send_now: SendNow | None = None,
) -> None:
    """Relay the provider's response: status, headers and bytes as they came. A failure reading it
    is raised after the client was sent every byte that arrived before it. With `send_now` (the
    server's relaylog.send_now), a body's bytes after its first are forwarded as each read brings
    them, from the provider connection's callback (`Response.forward`)."""
    content_type = response.header(b"content-type") or ""
    exchange.response_described(content_type, response.header(b"content-encoding"))
    event_stream = content_type.startswith("text/event-stream")
    stripper = UsageStripper(exchange.withheld) if exchange.usage_injected and event_stream else None
    headers = response_headers(response.headers, keep_length=stripper is None, connection=response.connection)
    if event_stream:
        _add_stream_headers(headers, response)
    headers.append((b"helicone-id", exchange.request_id.encode()))
    headers += exchange.extra_headers

    length = response.content_length
    if preread is not None or (not event_stream and length is not None and length <= _READ_WHOLE_MAX):
        whole = preread if preread is not None else await response.read()
        exchange.upstream_done()
        exchange.response_started(response.status, headers)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if whole.failure is None:
            return await _send_last(exchange, send, watcher, whole.data)
        # Cut (or silent) mid-body: the client gets the provider's status, headers and bytes,
        # then its connection is cut the same way, as it would be calling the provider directly.
        if whole.data and exchange.chunk_sent(whole.data):
            await send({"type": "http.response.body", "body": whole.data, "more_body": True})
        raise whole.failure

    exchange.response_started(response.status, headers)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    # The client gets every byte the provider sent before a cut, as it would directly: the
    # response hands out what arrived before it raises the failure.
    tail = b""
    forward = _forwarder(exchange, stripper, send_now) if send_now is not None else None
    async for chunk in response.chunks():
        out = stripper.feed(chunk) if stripper is not None else chunk
        if response.ended:  # the provider's last bytes: they go with the end of the body, one write
            tail = out
        elif out and exchange.chunk_sent(out):
            await send({"type": "http.response.body", "body": out, "more_body": True})
        response.forward = forward  # after the first read; again after a send that had to wait
    exchange.upstream_done()
    await _send_last(exchange, send, watcher, tail + stripper.finish() if stripper is not None else tail)


def _forwarder(exchange: Exchange, stripper: UsageStripper | None, send_now: SendNow) -> Callable[[bytes], bool]:
    """What the loop above does with a chunk, done at once: False when the next must go through
    `send` (the client's connection is backed up)."""

    def forward(chunk: bytes) -> bool:
        out = stripper.feed(chunk) if stripper is not None else chunk
        return not out or not exchange.chunk_sent(out) or send_now(out)

    return forward


async def _send_last(exchange: Exchange, send: Send, watcher: DisconnectWatcher | None, data: bytes) -> None:
    # From here on a disconnect notice only means the response is complete.
    if watcher is not None:
        watcher.stop()
    if exchange.last_chunk_sent(data):
        # The end is stamped as the last bytes are handed over: a client that reads them at once
        # must never find the call ending after its own clock says it had the answer.
        exchange.finish()
        await send({"type": "http.response.body", "body": data, "more_body": False})


async def refuse(
    exchange: Exchange, send: Send, status: int, error: ErrorType, message: str, headers: tuple[Header, ...] = ()
) -> None:
    """Answer with relaylog's own JSON error (never the provider's words)."""
    if headers:
        exchange.add_headers(*headers)
    body = orjson.dumps({"error": {"type": error, "message": message}})
    await answer(exchange, send, status, error, body)


async def answer(exchange: Exchange, send: Send, status: int, error: ErrorType | None, body: bytes) -> None:
    """relaylog answers for itself, with a JSON body."""
    exchange.relaylog_answered(status, error)
    headers = [
        (b"content-type", _JSON),
        (b"content-length", str(len(body)).encode()),
        (b"helicone-id", exchange.request_id.encode()),
        *exchange.extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    exchange.chunk_sent(body)
    exchange.finish()  # stamped as the bytes are handed over (see _send_last)
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def replay(
    exchange: Exchange, receive: Receive, send: Send, entry: CachedResponse, original_timing: bool
) -> None:
    """Answer from the cache with the stored chunks, one send per chunk as first received; with
    `original_timing` (Helicone-Cache-Stream-Timing: original), spaced out as they first were."""
    exchange.replaying(entry)
    headers = [*entry.headers, (b"helicone-id", exchange.request_id.encode()), *exchange.extra_headers]
    # Nothing to read on after the end: a client that leaves then stops the replay at once.
    watcher = DisconnectWatcher(receive, exchange, read_on_s=0.0) if original_timing else None
    try:
        exchange.response_started(entry.status, headers)
        await send({"type": "http.response.start", "status": entry.status, "headers": headers})
        began = time.perf_counter()
        for chunk, offset_ms in zip(entry.chunks, entry.offsets_ms, strict=True):
            if watcher is not None:
                delay = began + offset_ms / 1000.0 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            if exchange.chunk_sent(chunk):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await _send_last(exchange, send, watcher, b"")
    except asyncio.CancelledError:
        if watcher is None or not watcher.uncancel():
            raise
    finally:
        if watcher is not None:
            watcher.stop()


def _add_stream_headers(headers: list[Header], response: Response) -> None:
    """Proxies and browsers must not buffer or cache an event stream; keep the provider's own values."""
    if response.header(b"cache-control") is None:
        headers.append((b"cache-control", b"no-cache"))
    if response.header(b"x-accel-buffering") is None:
        headers.append((b"x-accel-buffering", b"no"))
