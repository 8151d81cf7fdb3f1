"""uvicorn's httptools protocol, with the request-head limits uvicorn does not have.

uvicorn with httptools (measured on uvicorn 0.54 / httptools 0.9) puts no bound on a request head:
a connection that sends nothing, or sends its headers a byte at a time, is held for ever (its
keep-alive timeout only runs between requests); a header may grow without limit inside the parser
and any number of headers is collected. Here a head must arrive within `header_timeout_s`, hold
at most `max_header_count` headers and `max_header_bytes` bytes (request line included), or the
client gets relaylog's JSON error (408 or 431) and the connection is closed. These refusals happen
before there is a request to record; they are logged without any header content.

It also tells the app when a client leaves without a task per request waiting on `receive()` for
it: `scope["extensions"]["relaylog.disconnect"]` (see `Disconnect`), an ASGI extension of its own;
and it sends a response's head together with the body that follows it at once (`HeadWithBody`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from .config import Settings

log = logging.getLogger("relaylog.http")


@dataclass(frozen=True, slots=True)
class HeadLimits:
    timeout_s: float
    max_bytes: int
    max_count: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadLimits:
        return cls(settings.header_timeout_s, settings.max_header_bytes, settings.max_header_count)


_PHRASES = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _error(error_type: str, message: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = orjson.dumps({"error": {"type": error_type, "message": message}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    return headers, body


_on_header = HttpToolsProtocol.on_header


class Disconnect:
    """`scope["extensions"]["relaylog.disconnect"]["listen"]` of one request: `listen(callback)` has
    `callback` called (soon, by the loop) when the client's connection is lost before the response
    completed, which is when uvicorn's `receive()` would return `http.disconnect`; `listen(None)`
    stops. What a task awaiting `receive()` would hear, for an attribute write per request."""

    __slots__ = ("_cycle", "_flow", "_loop", "callback")

    def __init__(self, loop: asyncio.AbstractEventLoop, flow: FlowControl, cycle: RequestResponseCycle) -> None:
        self._loop = loop
        self._flow = flow
        self._cycle = cycle
        self.callback: Callable[[], None] | None = None

    def listen(self, callback: Callable[[], None] | None) -> None:
        self.callback = callback
        if callback is None or self._cycle.response_complete:
            return
        if self._cycle.disconnected:  # gone already: `receive()` would say so at once
            self._loop.call_soon(callback)
        else:
            self._flow.resume_reading()  # as `receive()` does: a paused socket is not seen closing

    def lost(self) -> None:
        """The connection was lost (uvicorn has marked the request's cycle)."""
        if self.callback is not None and self._cycle.disconnected:
            self._loop.call_soon(self.callback)


class HeadWithBody(asyncio.Transport):
    """A request's transport as uvicorn's cycle writes to it: the response head is held until the
    end of the loop step that wrote it, and goes out with the body if that step wrote one. uvicorn
    writes each ASGI message on its own, so a relayed answer (head, then the whole body at once)
    cost two system calls, each a delivery to the peer; now one. A head whose body comes later (a
    stream) goes out by itself on the loop's next turn. Anything after the head is not held."""

    __slots__ = ("_head", "_loop", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._started = False
        self._head: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            data = head + data
        elif not self._started:  # the first write: the head (or a 100 Continue, likewise held)
            self._started = True
            self._head = bytes(data)
            self._loop.call_soon(self._flush)
            return
        self._transport.write(data)

    def _flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():  # else the client is gone: nobody to write to
                self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Pass as uvicorn's `http=`. A module-level class, so `--workers` can pickle the config."""

    # Read from the environment (RELAYLOG_HEADER_TIMEOUT, ...) on first use; a subclass may set them.
    limits: ClassVar[HeadLimits | None] = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = type(self).limits
        if limits is None:
            limits = type(self).limits = HeadLimits.from_settings(Settings.from_env())
        self._limits = limits
        # From a request's first byte to the end of its headers.
        self._in_head = False
        self._heads_done = 0
        self._raw_bytes = 0  # bytes fed while a head was unfinished (partial headers included)
        self._head_bytes = 0  # request line and headers as parsed
        self._head_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._disconnect: Disconnect | None = None  # the latest request's (uvicorn marks only that cycle)

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        if self._disconnect is not None:
            self._disconnect.lost()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        was_in_head, heads_done = self._in_head, self._heads_done
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._in_head:
            # Counted only when the whole chunk belonged to one unfinished head: a chunk in which
            # a head began leaves at most one read's worth uncounted.
            if was_in_head and heads_done == self._heads_done:
                self._raw_bytes += len(data)
                if self._raw_bytes > self._limits.max_bytes:
                    self._refuse(
                        431, "headers_too_large", f"Request headers are larger than {self._limits.max_bytes} bytes"
                    )
        elif self._head_timer is None and self._idle():
            # Bytes between requests that start none (llhttp skips blank lines): the keep-alive
            # timeout was just cancelled by them, so this connection needs a deadline again.
            self._arm()

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._raw_bytes = self._head_bytes = self._head_count = 0
        if self._head_timer is None:
            self._arm()

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        count = self._head_count = self._head_count + 1
        size = self._head_bytes = self._head_bytes + len(name) + len(value) + 4
        limits = self._limits
        if count <= limits.max_count and size <= limits.max_bytes:
            _on_header(self, name, value)  # not super(): that builds a proxy object per header
        # else dropped, so memory stays bounded: the request is answered 431 below

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        self._heads_done += 1
        limits = self._limits
        if self._head_count > limits.max_count:
            message = f"More than {limits.max_count} request headers"
        elif self._head_bytes > limits.max_bytes:
            message = f"Request headers are larger than {limits.max_bytes} bytes"
        else:
            super().on_headers_complete()
            if self.cycle is not None and self.cycle.scope is self.scope:  # not an upgrade
                self.cycle.transport = HeadWithBody(self.transport, self.loop)
                self._disconnect = Disconnect(self.loop, self.flow, self.cycle)
                self.scope["extensions"] = {"relaylog.disconnect": {"listen": self._disconnect.listen}}
            return
        log.warning("refused a request: %s", message)
        # uvicorn runs this request as usual, with an app that only answers the error.
        app: Any = self.app
        self.app = _answer(431, *_error("headers_too_large", message))
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    # -- refusing -----------------------------------------------------------------------------

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self._limits.timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(
                408, "request_timeout", f"The request headers did not arrive within {self._limits.timeout_s:g} s"
            )
        elif self._idle():
            self.transport.close()  # no request began: there is no one to answer

    def _refuse(self, status: int, error_type: str, message: str) -> None:
        """Answer a head that is not parsed to its end (no request exists yet), then close."""
        self._refused = True
        self._disarm()
        log.warning("refused a request: %s", message)
        if not self._idle():
            # A pipelined head behind a response still being written: end the connection after
            # that response rather than mix an error into its bytes.
            self.cycle.keep_alive = False
            return
        headers, body = _error(error_type, message)
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, _PHRASES[status])]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        self.transport.write(b"".join(lines) + b"\r\n" + body)
        self.transport.close()


def _answer(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return app
