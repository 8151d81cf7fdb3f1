"""Running the ASGI app for one event into a `ResponseStream`: the seam between relay and transport.

Today the transport is the Runtime API's streamed response (`runtime_api.StreamedResponse`) or a
buffer (`buffered`); should AWS ship native Python response streaming, it becomes one more
`ResponseStream`, and neither the relay nor this driver changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import orjson

from ..asgi import ClientGone, Message, Scope

log = logging.getLogger("relaylog.runtime")

# Framing that belongs to the hop between relaylog and the Function URL, not to the response.
_HOP_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection", b"keep-alive"})


class Closed(asyncio.Event):
    """A stream's "the receiving end went away": an asyncio.Event that also calls back, so the
    relay can listen for it (the relaylog.disconnect extension) without a task per call waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.callback: Callable[[], None] | None = None

    def set(self) -> None:
        if not self.is_set():
            super().set()
            if self.callback is not None:
                asyncio.get_running_loop().call_soon(self.callback)

    def listen(self, callback: Callable[[], None] | None) -> None:
        """scope["extensions"]["relaylog.disconnect"]["listen"] (relay/client.py)."""
        self.callback = callback
        if callback is not None and self.is_set():
            asyncio.get_running_loop().call_soon(callback)


class ResponseStream(Protocol):
    @property
    def closed(self) -> Closed:
        """Set when the receiving end went away. On Lambda that is the Runtime API breaking, never
        the Function URL's client leaving: AWS documents that a streamed response runs on to its
        end when the client disconnects, so the runtime cannot see it."""

    async def start(self, status: int, headers: dict[str, str], cookies: list[str]) -> None: ...

    async def write(self, chunk: bytes) -> None: ...

    def write_now(self, chunk: bytes) -> bool:
        """Write `chunk` without waiting; False when the next write must wait (or the stream is
        closing, and nothing was written)."""

    async def finish(self, last: bytes = b"") -> None:
        """End the response, `last` its final bytes (sent with the end: one write, not two)."""

    async def fail(self, error_type: str, message: str) -> None:
        """End a started response as failed (the client sees it cut short)."""


def prelude_headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[dict[str, str], list[str]]:
    """ASGI headers as a Function URL response has them: one value per name, cookies apart."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name_raw, value_raw in raw:
        name = name_raw.lower()
        value = value_raw.decode("latin-1")
        if name == b"set-cookie":
            cookies.append(value)
        elif name not in _HOP_HEADERS:
            key = name.decode("latin-1")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers, cookies


def error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps({"error": {"type": error_type, "message": message}})


async def invoke(app: Any, scope: Scope, body: bytes, stream: ResponseStream) -> None:
    """Run `app` for one request; every outcome ends the stream one way or another."""
    request_sent = False
    started = False
    finished = False
    closed = stream.closed

    def send_now(chunk: bytes) -> bool:
        # Only between the start and the end, on a stream still open: `send` handles the rest.
        return started and not finished and not closed.is_set() and stream.write_now(chunk)

    scope["extensions"] = {
        "relaylog.disconnect": {"listen": closed.listen},
        "relaylog.send_now": {"send_now": send_now},
    }

    async def receive() -> Message:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await closed.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal started, finished
        if closed.is_set():
            # The relay hears it through receive() while it waits on the provider; the last body
            # message comes after it stopped listening, so it must hear it here too.
            raise ClientGone
        try:
            # Body messages first: a stream sends one per event, and one start per call.
            if message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if message.get("more_body"):
                    if chunk:
                        await stream.write(chunk)
                else:
                    await stream.finish(chunk)
                    finished = True
            elif message["type"] == "http.response.start":
                headers, cookies = prelude_headers(message.get("headers", ()))
                await stream.start(message["status"], headers, cookies)
                started = True
        except OSError:
            closed.set()
            raise ClientGone from None

    try:
        await app(scope, receive, send)
    except asyncio.CancelledError:
        # The invocation deadline: the relay has recorded the call as cancelled.
        await _end(stream, started, finished, 504, "function_timeout", "The Lambda invocation ran out of time")
        raise
    except Exception:
        log.exception("the relay failed on request %s", scope.get("path"))
        await _end(stream, started, finished, 500, "internal_error", "relaylog failed while handling the request")
        return
    # The relay returns without finishing when the provider cut the stream: cut the client's too.
    await _end(stream, started, finished, 502, "upstream_disconnect", "The provider ended the response early")


async def _end(stream: ResponseStream, started: bool, finished: bool, status: int, error_type: str, text: str) -> None:
    if finished or stream.closed.is_set():
        return
    try:
        if started:
            await stream.fail(f"Relay.{error_type}", text)
        else:
            body = error_body(error_type, text)
            await stream.start(status, {"content-type": "application/json"}, [])
            await stream.finish(body)
    except OSError:
        stream.closed.set()
