"""One client connection: parsing its requests, running each in turn, its deadlines and head limits.

A request head must arrive within `HeadLimits.timeout_s` of its first byte, hold at most
`max_count` headers and `max_bytes` bytes (request line included), or the client gets relaylog's
JSON error (408 or 431) and the connection is closed; these refusals are logged without any
header content. Between requests a connection may sit idle for uvicorn's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import httptools
from uvicorn.config import Config
from uvicorn.server import ServerState

from ..asgi import ASGIApp, Scope
from ..config import Settings
from . import wire
from .request import Request

log = logging.getLogger("relaylog.http")

# Request body bytes buffered before the client's connection stops being read (uvicorn's figure).
HIGH_WATER = 65536
_ASGI = {"version": "3.0", "spec_version": "2.3"}

# What the connection's one timer enforces: a request head's arrival, or an idle keep-alive.
Deadline = Literal["head", "idle"]


@dataclass(frozen=True, slots=True)
class HeadLimits:
    timeout_s: float
    max_bytes: int
    max_count: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadLimits:
        return cls(settings.header_timeout_s, settings.max_header_bytes, settings.max_header_count)


class HttpProtocol(asyncio.Protocol):
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
        if not config.loaded:
            config.load()
        limits = type(self).limits
        if limits is None:
            limits = type(self).limits = HeadLimits.from_settings(Settings.from_env())
        self.head_timeout_s = limits.timeout_s
        self.max_head_bytes = limits.max_bytes
        self.max_head_count = limits.max_count
        self.keep_alive_s = float(config.timeout_keep_alive)
        self.loop = _loop or asyncio.get_running_loop()
        self.app: ASGIApp = config.loaded_app
        self.root_path = config.root_path
        self.app_state = app_state
        self.server_state = server_state
        self.default_headers = [(name.lower(), value) for name, value in server_state.default_headers]
        self.parser = httptools.HttpRequestParser(self)
        # A request that says `Connection: close` is answered even when bytes follow it.
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport | None = None
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.request: Request | None = None  # the request being answered
        self.queued: deque[Request] = deque()  # pipelined requests behind it
        self.reading_paused = False
        self.writable: asyncio.Future[None] | None = None  # set while the transport's buffer is full
        # One timer per connection, made only when none runs: it wakes at most a keep-alive period
        # ahead and checks the deadline then due, so a request never makes or cancels one.
        self.deadline: Deadline | None = None
        self.deadline_at = 0.0
        self.timer: asyncio.TimerHandle | None = None
        # The request whose head is being parsed.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.dropped = 0  # headers past a limit, not kept
        self.expect_continue = False
        self.in_head = False
        self.head_bytes = 0  # request line and headers as parsed
        self.raw_bytes = 0  # bytes fed while a head was unfinished (partial headers included)
        self.heads_done = 0
        self.refused = False

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, so no isinstance).
        self.transport = transport = cast(asyncio.Transport, transport)
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        self._expect("head", self.head_timeout_s)  # a connection that never sends a request is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        self.deadline = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for request in (self.request, *self.queued):
            if request is not None:
                request.gone()
        self.queued.clear()
        self.resume_writing()
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> None:
        return None  # the client is done sending: close (as uvicorn does)

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None:
            writable, self.writable = self.writable, None
            if not writable.done():
                writable.set_result(None)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close now if idle, else after the response under way."""
        if self.request is None:
            if self.transport is not None:
                self.transport.close()
        else:
            self.request.keep_alive = False

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.deadline == "idle":
            # Bytes from an idle client start a head's clock, even bytes that begin no request
            # (llhttp skips blank lines between requests).
            self._expect("head", self.head_timeout_s)
        was_in_head, heads_done = self.in_head, self.heads_done
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol to switch to: the request is served as plain HTTP
        except httptools.HttpParserError:
            log.warning("refused a request: not valid HTTP/1.1")
            self._write_and_close(wire.BAD_REQUEST)
            return
        # Counted only when the whole chunk belonged to one unfinished head: a chunk in which a
        # head began leaves at most one read's worth uncounted.
        if self.in_head and was_in_head and heads_done == self.heads_done:
            self.raw_bytes += len(data)
            if self.raw_bytes > self.max_head_bytes:
                self._refuse(431, "headers_too_large", f"Request headers are larger than {self.max_head_bytes} bytes")

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.dropped = 0
        self.expect_continue = False
        self.in_head = True
        self.raw_bytes = self.head_bytes = 0
        self._expect("head", self.head_timeout_s)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self.head_bytes = self.head_bytes + len(name) + len(value) + 4
        headers = self.headers
        if len(headers) < self.max_head_count and size <= self.max_head_bytes:
            name = name.lower()
            # llhttp keeps trailing whitespace, which RFC 9110 section 5.5 excludes from the value.
            value = value.rstrip(b" \t")
            if name == b"expect" and value.lower() == b"100-continue":
                self.expect_continue = True
            headers.append((name, value))
        else:
            self.dropped += 1  # so memory stays bounded: the request is answered 431 below

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.heads_done += 1
        if self.deadline == "head":
            self.deadline = None
        parser = self.parser
        version = parser.get_http_version()
        try:
            url = httptools.parse_url(self.url)
            raw_path: bytes = url.path
            path = raw_path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            raise httptools.HttpParserError("invalid request target") from None
        if "%" in path:
            path = urllib.parse.unquote(path)
        if self.root_path:
            path = self.root_path + path
            raw_path = self.root_path.encode("ascii") + raw_path
        scope: Scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": "http",
            "method": parser.get_method().decode("ascii"),
            "root_path": self.root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "headers": self.headers,
            "state": self.app_state.copy(),
        }
        request = Request(self, scope, version != "1.0" and parser.should_keep_alive(), self.expect_continue)
        scope["extensions"] = {
            "relaylog.disconnect": {"listen": request.listen},
            "relaylog.send_now": {"send_now": request.send_now},
        }
        if self.dropped or self.head_bytes > self.max_head_bytes:
            if len(self.headers) + self.dropped > self.max_head_count:
                message = f"More than {self.max_head_count} request headers"
            else:
                message = f"Request headers are larger than {self.max_head_bytes} bytes"
            log.warning("refused a request: %s", message)
            request.refusal = wire.json_error(431, "headers_too_large", message)
        if self.request is None:
            self._start(request)
        else:  # pipelined behind a response still under way: answered after it
            self.queued.append(request)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        request = self.queued[-1] if self.queued else self.request
        if request is not None and not request.complete:
            request.body += body
            if len(request.body) > HIGH_WATER:
                self.pause_reading()
            request.wake()

    def on_message_complete(self) -> None:
        request = self.queued[-1] if self.queued else self.request
        if request is not None:
            request.more_body = False
            request.wake()

    # -- requests -----------------------------------------------------------------------------

    def _start(self, request: Request) -> None:
        self.request = request
        task = self.loop.create_task(request.run(self.app))
        tasks = self.server_state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def finished(self, request: Request) -> None:
        """The response to `request` is complete: the next pipelined one, or wait for one."""
        self.server_state.total_requests += 1
        if request is not self.request:
            return
        self.request = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not request.keep_alive:
            transport.close()
            return
        self.resume_reading()
        if self.queued:
            self._start(self.queued.popleft())
        elif not self.in_head:  # (a head under way already has its deadline)
            self._expect("idle", self.keep_alive_s)

    async def drain(self) -> None:
        if self.writable is not None:
            await self.writable

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    # -- deadlines and refusals ---------------------------------------------------------------

    def _expect(self, kind: Deadline, seconds: float) -> None:
        now = self.loop.time()
        self.deadline, self.deadline_at = kind, now + seconds
        wake = now + min(seconds, self.keep_alive_s)
        timer = self.timer
        if timer is None:
            self.timer = self.loop.call_at(wake, self._on_timer)
        elif timer.when() > wake:  # only when a deadline is shorter than the keep-alive's
            timer.cancel()
            self.timer = self.loop.call_at(wake, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        kind = self.deadline
        if kind is None or self.transport is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if now < self.deadline_at:
            self.timer = self.loop.call_at(min(self.deadline_at, now + self.keep_alive_s), self._on_timer)
            return
        self.deadline = None
        if kind == "head" and self.in_head:
            self._refuse(408, "request_timeout", f"The request headers did not arrive within {self.head_timeout_s:g} s")
        elif self.request is None:
            self.transport.close()  # idle, or no request began: there is no one to answer

    def _refuse(self, status: int, error_type: str, message: str) -> None:
        """Answer a head that is not parsed to its end (no request exists yet), then close."""
        self.refused = True
        self.deadline = None
        log.warning("refused a request: %s", message)
        if self.request is not None:
            # A pipelined head behind a response still being written: end the connection after
            # that response rather than mix an error into its bytes.
            self.request.keep_alive = False
            return
        self._write_and_close(wire.json_error(status, error_type, message))

    def _write_and_close(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.transport.close()


def _address(info: Any) -> tuple[str, int] | None:
    return (str(info[0]), int(info[1])) if isinstance(info, tuple) and len(info) >= 2 else None
