"""The HTTP/1.1 server: an asyncio Protocol fed by httptools, on uvloop when it is installed.

A raw protocol (rather than a framework) keeps a small chat completion at tens of microseconds
and gives the byte-level control the faults need: a response can stop after any chunk, the
connection can be closed with FIN or RST, or left open and silent.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import struct
import threading
from collections import deque
from http import HTTPStatus
from typing import Any, Self

import httptools

from .app import App
from .faults import Fault
from .wire import Reply, Request

try:  # uvloop roughly doubles throughput; plain asyncio still works without it
    import uvloop

    def new_loop() -> asyncio.AbstractEventLoop:
        return uvloop.new_event_loop()

except ImportError:  # pragma: no cover - depends on the platform

    def new_loop() -> asyncio.AbstractEventLoop:
        return asyncio.new_event_loop()


_REASONS = {s.value: s.phrase for s in HTTPStatus} | {529: "Site Overloaded"}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


def encode_head(reply: Reply, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in reply.headers]
    if reply.events is None:
        lines.append(f"content-length: {len(reply.body)}\r\n")
    else:
        lines.append("transfer-encoding: chunked\r\n")
    if not keep_alive:
        lines.append("connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def encode_whole(reply: Reply, keep_alive: bool) -> bytes:
    if reply.events is None:
        return encode_head(reply, keep_alive) + reply.body
    return encode_head(reply, keep_alive) + b"".join(map(frame, reply.events)) + _LAST_CHUNK


def frame(event: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(event), event)


class Shared:
    """State the connections of one server share."""

    def __init__(self, app: App, record: bool) -> None:
        self.app = app
        self.record = record
        self.requests: list[Request] = []
        self.conns: set[_Conn] = set()


class _Conn(asyncio.Protocol):
    """One client connection. Requests are answered strictly in order (HTTP/1.1 pipelining);
    replies without a timing fault are written synchronously in a single write."""

    def __init__(self, shared: Shared, loop: asyncio.AbstractEventLoop) -> None:
        self.shared = shared
        self.loop = loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.expect_continue = False
        self.pending: deque[tuple[Request, bool]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.writable: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] = loop.create_future()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.shared.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.shared.conns.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        if self.task is not None:
            self.task.cancel()

    def pause_writing(self) -> None:
        self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse()
        except httptools.HttpParserError:
            self._refuse()

    def _refuse(self) -> None:
        assert self.transport is not None
        self.transport.write(_BAD_REQUEST)
        self.transport.close()

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = []
        self.expect_continue = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1")
        self.headers.append((key, value.decode("latin-1")))
        if len(key) == 6 and key.lower() == "expect" and value.lower() == b"100-continue":
            self.expect_continue = True

    def on_headers_complete(self) -> None:
        if self.expect_continue and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        req = Request(method, self.url.decode("latin-1"), self.headers, b"".join(self.body))
        keep_alive = self.parser.should_keep_alive()
        if self.shared.record:
            self.shared.requests.append(req)
        if self.task is not None or self.pending:
            self.pending.append((req, keep_alive))
        else:
            self._dispatch(req, keep_alive)

    # -- answering --------------------------------------------------------------------------

    def _dispatch(self, req: Request, keep_alive: bool) -> None:
        transport = self.transport
        assert transport is not None
        reply, fault = self.shared.app.handle(req)
        if fault is None or not fault.needs_async:
            if keep_alive:
                if reply.encoded is None:
                    reply.encoded = encode_whole(reply, True)
                transport.write(reply.encoded)
            else:
                transport.write(encode_whole(reply, False))
                transport.close()
            return
        self.task = self.loop.create_task(self._send_with_fault(reply, fault, keep_alive))
        self.task.add_done_callback(self._task_done)

    def _task_done(self, _: asyncio.Task[None]) -> None:
        self.task = None
        while self.pending and self.task is None and not self.lost.done():
            req, keep_alive = self.pending.popleft()
            self._dispatch(req, keep_alive)

    async def _send_with_fault(self, reply: Reply, fault: Fault, keep_alive: bool) -> None:
        transport = self.transport
        assert transport is not None
        if fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if self.lost.done():
            return
        if fault.reset:
            _reset(transport)
            return
        cut = fault.drop_after if fault.drop_after is not None else fault.stall_after
        head = encode_head(reply, keep_alive)
        if reply.events is None:
            body = reply.body if cut is None else reply.body[:cut]
            last = body[-1:] if cut is None and fault.end_delay_ms else b""
            transport.write(head + body[: len(body) - len(last)])
            if last and await self._ends_late(fault):
                transport.write(last)
        else:
            events = reply.events if cut is None else reply.events[:cut]
            transport.write(head)
            for i, event in enumerate(events):
                if i and fault.chunk_delay_ms:
                    await asyncio.sleep(fault.chunk_delay_ms / 1000)
                if self.lost.done():
                    return
                transport.write(frame(event))
                if self.writable is not None:
                    await self.writable
            if cut is None and await self._ends_late(fault):
                transport.write(_LAST_CHUNK)
        if fault.drop_after is not None:
            transport.close()  # FIN once the buffered bytes are out: the body ends short
        elif fault.stall_after is not None and (reply.events is not None or fault.stall_after < len(reply.body)):
            await self.lost  # silent until the client gives up or the stand-in stops
        elif not keep_alive:
            transport.close()

    async def _ends_late(self, fault: Fault) -> bool:
        """Wait out `end-delay-ms` before the end of a body; False when the client left meanwhile."""
        if fault.end_delay_ms:
            await asyncio.sleep(fault.end_delay_ms / 1000)
        return not self.lost.done()


def _reset(transport: asyncio.Transport) -> None:
    """Close with RST instead of FIN: SO_LINGER with a zero timeout, then close."""
    sock: Any = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class StandIn:
    """A fake OpenAI / Anthropic / Gemini provider on a real loopback socket.

    `with StandIn() as s:` serves on 127.0.0.1 (a free port) from a background thread with its
    own event loop. `s.url` is the base URL, `s.requests` the requests received so far (when
    `record` is true) and `s.clear()` forgets them. `gzip=False` never compresses; `fault` is a
    default `x-standin-fault` value for requests without that header (it can be changed later
    through the attribute of the same name).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        record: bool = True,
        gzip: bool = True,
        fault: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        # Serve HTTPS with this context, as every real provider does.
        self.tls = tls
        self._app = App(gzip=gzip, fault=fault)
        self._shared = Shared(self._app, record)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def requests(self) -> list[Request]:
        return self._shared.requests

    @property
    def fault(self) -> str | None:
        return self._app.fault

    @fault.setter
    def fault(self, value: str | None) -> None:
        self._app.fault = value

    @property
    def gzip(self) -> bool:
        return self._app.gzip

    @gzip.setter
    def gzip(self, value: bool) -> None:
        self._app.gzip = value

    def clear(self) -> None:
        self._shared.requests.clear()

    async def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        self._server = await loop.create_server(
            lambda: _Conn(self._shared, loop), self.host, self.port, backlog=2048, reuse_address=True, ssl=self.tls
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> Self:
        """Serve from a background thread; returns once the socket is listening."""
        ready = threading.Event()
        failure: list[Exception] = []

        def run() -> None:
            loop = new_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._listen(loop))
            except Exception as exc:  # noqa: BLE001 - hand the bind error to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                self._close_loop(loop)

        self._thread = threading.Thread(target=run, name=f"standin-{self.port}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = None

    def _close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._shared.conns):
            if conn.transport is not None:
                conn.transport.abort()
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(asyncio.sleep(0))  # let aborted transports call connection_lost
        loop.close()

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (used by `python -m relaylog.standin`)."""
        loop = new_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        loop.run_until_complete(self._listen(loop))
        # Handlers on the loop itself: a loop blocked in epoll never runs Python's default
        # SIGINT handler, so Ctrl-C (or the SIGTERM a parent sends) would otherwise hang.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, loop.stop)
        print(f"standin listening on {self.url}", flush=True)
        try:
            loop.run_forever()
        finally:
            self._close_loop(loop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
