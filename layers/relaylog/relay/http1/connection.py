"""One keep-alive HTTP/1.1 connection to a provider: writes a request, parses the response with
httptools and hands its body out as it arrives, exactly as received (no decoding, no re-chunking).

Why not aiohttp here: on the relay's hot path its client cost about a third of relaylog's CPU per
call (bench/relay.py --profile), most of it in machinery the relay does not use (cookie jars,
auto headers, multidicts, redirect and auth hooks, a StreamReader per response). This does the
one thing the relay needs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple

import httptools

# Buffered response bytes above which the socket stops being read until the relay catches up.
_HIGH_WATER = 256 * 1024


class UpstreamDisconnected(ConnectionError):
    """The provider closed the connection (or sent bytes that are not HTTP) before the response ended."""


class Whole(NamedTuple):
    """A body read whole, or what arrived of it before the provider cut it or went silent."""

    data: bytes
    failure: BaseException | None  # what ended the read early; None for a whole body


class Response:
    """The provider's answer. Body bytes that arrived before a failure are always handed out before
    the failure is raised, so a cut stream still relays (and records) its last chunk."""

    __slots__ = (
        "_chunks",
        "_connection",
        "_first",
        "_done",
        "_failure",
        "_head",
        "_named",
        "_size",
        "_waiter",
        "_whole",
        "forward",
        "keep_alive",
        "raw_headers",
        "status",
    )

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []  # as sent: names in their own case
        # The same with names in lower case, and lower-case name -> its first value: made once,
        # when first asked for (a loop over them all costs less than one callback's work).
        self._named: list[tuple[bytes, bytes]] | None = None
        self._first: dict[bytes, bytes] | None = None
        self.keep_alive = False
        self._head: asyncio.Future[None] = connection.loop.create_future()
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._failure: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._whole = False  # the reader wants the whole body: no wake-up per chunk
        # Set by a reader waiting in `chunks()`: body bytes go to it from the connection's
        # callback, not through a wake-up of the reader (see `_forward`).
        self.forward: Callable[[bytes], bool] | None = None

    # -- headers ---------------------------------------------------------------------------------

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Its headers in order, names in lower case, values as sent."""
        named = self._named
        if named is None:
            named = self._named = [(name.lower(), value) for name, value in self.raw_headers]
        return named

    def header(self, name: bytes) -> str | None:
        """The first value of a header (name in lower case), as text."""
        first = self._first
        if first is None:  # reversed: the first value of a repeated header is the one kept
            first = self._first = dict(reversed(self.headers))
        value = first.get(name)
        return value.decode("utf-8", "surrogateescape") if value is not None else None

    @property
    def connection(self) -> list[bytes]:
        """The values of its Connection headers."""
        return [value for name, value in self.headers if name == b"connection"] if self.header(b"connection") else []

    @property
    def ended(self) -> bool:
        """Every body byte has been handed out and the body ended as it should."""
        return self._done and not self._chunks and self._failure is None

    @property
    def content_length(self) -> int | None:
        value = self.header(b"content-length")
        return int(value) if value is not None and value.isdigit() else None

    # -- body ------------------------------------------------------------------------------------

    async def read(self) -> Whole:
        """The whole body; on a cut or a stall, what arrived before it and the error."""
        if not self._done and self._failure is None:
            self._whole = True
            await self._wait()
        return Whole(self._take(), self._failure)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (what is buffered comes out as one piece), then the failure if any."""
        while True:
            if self._chunks:
                yield self._take()
            elif self._failure is not None:
                raise self._failure
            elif self._done:
                return
            else:
                await self._wait()

    def close(self) -> None:
        """Done with the response: a connection whose body was read to its end goes back to the
        pool, any other is closed (its unread rest must not be taken for the next response)."""
        self._connection.finish(self._done and not self._chunks and self.keep_alive)

    async def _wait(self) -> None:
        self._waiter = self._connection.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _take(self) -> bytes:
        """Every buffered body byte, as one piece; the socket is read again if it was paused."""
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._size = 0
        self._connection.resume()
        return data

    # -- fed by the connection -------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > _HIGH_WATER:
            self._connection.pause()
        if not self._whole and self.forward is None:
            self._wake()

    def _forward(self) -> None:
        """After a read: what it brought goes to `forward` now, while the reader still waits in
        `chunks()` (a task wake-up per read costs more than the relaying). The reader takes over
        for the end and for a failure (both woke it, and the last bytes go with the end), for an
        error raised by `forward` (raised in the reader), and once `forward` returns False (the
        client's connection is backed up: the reader's `send` waits for it)."""
        waiter = self._waiter
        if not self._chunks or self._done or self._failure is not None or waiter is None or waiter.done():
            return
        forward = self.forward
        assert forward is not None
        data = self._take()
        try:
            if forward(data):
                return
        except Exception as error:
            waiter.set_exception(error)
        self.forward = None

    def _complete(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._done or self._failure is not None:
            return
        self._failure = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: a caller cancelled before the head is not an error
        self._wake()


class Connection(asyncio.Protocol):
    """The asyncio protocol of one connection; `pool.Pool` owns it between requests."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout_s: float) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False  # has carried a response before this one
        self._read_timeout_s = read_timeout_s
        self._parser = httptools.HttpResponseParser(self)
        self._response: Response | None = None
        self._interim = False  # a 1xx head, which is not the response
        self._head_only = False  # a HEAD request: the response has no body whatever it declares
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._drain: asyncio.Future[None] | None = None
        self.on_finish: Callable[[Connection, bool], None] | None = None

    # -- requests --------------------------------------------------------------------------------

    async def send(self, head: bytes, body: bytes, head_only: bool) -> Response:
        """Write one request and wait for the response's head (the body is read through it)."""
        assert self.transport is not None
        response = self._response = Response(self)
        self._head_only = head_only
        if self.closed:
            raise UpstreamDisconnected("the provider closed the connection")
        if len(body) <= 65536:
            self.transport.write(head + body)
        else:  # no copy of a large body
            self.transport.writelines((head, body))
        self._last_read = self.loop.time()
        if self._timer is None:  # else the one still pending from an earlier response moves on
            self._timer = self.loop.call_later(self._read_timeout_s, self._check_stall)
        if self._drain is not None:
            await self._drain
        await response._head
        return response

    def finish(self, reusable: bool) -> None:
        """The response is done with; `reusable` when the connection may carry another. Its stall
        timer is left to run out (it stops when it finds no response): the next response on this
        connection takes it over, which costs less than a new timer per response."""
        self._response = None
        if not reusable or self.closed:
            self.close()
        if self.on_finish is not None:
            self.on_finish(self, reusable and not self.closed)

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- flow control ----------------------------------------------------------------------------

    def pause(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self._last_read = self.loop.time()  # the stall clock runs only while we read
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None:
            drain, self._drain = self._drain, None
            if not drain.done():
                drain.set_result(None)

    # -- the read timeout: one timer per connection, moved on only when it fires ----------------

    def _check_stall(self) -> None:
        self._timer = None
        response = self._response
        if response is None or response._done:
            return
        now = self.loop.time()
        left = self._last_read + self._read_timeout_s - now
        if self._reading_paused or left > 0:
            self._timer = self.loop.call_later(left if left > 0 else self._read_timeout_s, self._check_stall)
            return
        response._fail(TimeoutError(f"the provider sent nothing for {self._read_timeout_s:g} s"))
        self.close()

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._response is None:  # bytes nobody asked for: this connection cannot be trusted again
            self.close()
            return
        self._last_read = self.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamDisconnected("the provider switched protocols"))
        except httptools.HttpParserError as error:
            self._fail(UpstreamDisconnected(f"the provider's response is not valid HTTP/1.1: {error}"))
        response = self._response
        if response is not None and response.forward is not None:
            response._forward()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()  # nothing more can arrive to be waited for
        response = self._response
        if response is not None and not response._done:
            if response._head.done() and self._until_close(response):
                response._complete()  # a body without a length ends where the connection does
            else:
                error = UpstreamDisconnected("the provider closed the connection mid-response")
                if exc is not None:
                    error.__cause__ = exc
                response._fail(error)
        self.resume_writing()

    def _fail(self, error: BaseException) -> None:
        if self._response is not None:
            self._response._fail(error)
        self.close()

    def _until_close(self, response: Response) -> bool:
        return response.content_length is None and response.header(b"transfer-encoding") is None

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self._response
        if response is not None:
            response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self._response
        if response is None:
            return
        status = self._parser.get_status_code()
        self._interim = 100 <= status < 200
        if self._interim:  # its headers are not the response's
            response.raw_headers.clear()
            response._named = response._first = None
            return
        response.status = status
        response.keep_alive = self._parser.should_keep_alive()
        response._head.set_result(None)
        if self._head_only:
            # The parser cannot be told the method; the connection is not reused after a HEAD.
            response.keep_alive = False
            response._complete()

    def on_body(self, body: bytes) -> None:
        if self._response is not None and not self._head_only:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self._response is not None:
            self._response._complete()
