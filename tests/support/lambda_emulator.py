"""A Lambda Runtime API emulator with a Function URL in front, on real loopback sockets.

The runtime side speaks what AWS's Runtime API speaks (GET next; streamed responses in chunked
encoding with a JSON prelude, 8 NUL bytes and optional error trailers; invocation and init error
reports), parsed with h11 so chunk boundaries and trailers are read exactly as sent. Events go out
framed as the real Runtime API (Go's net/http) frames them: with Content-Length up to 2 KiB, chunked
above. The front turns each HTTP request into a payload 2.0 event and streams the runtime's body back
as it arrives; error trailers cut the client's connection, as AWS does.

Use: `with LambdaEmulator() as emulator:` start a runtime with `AWS_LAMBDA_RUNTIME_API=
emulator.runtime_api`, then `emulator.invoke(event)` returns its `Outcome` (or call `emulator.url`
with any HTTP client).
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11
import orjson

PRELUDE_END = b"\0" * 8
_PATH = "/2018-06-01/runtime"
# Go's net/http buffers this much of a response before it must choose its framing: a body that
# fits goes out with Content-Length, a larger one chunked.
_GO_BUFFER = 2048


@dataclass
class Outcome:
    """What the runtime sent back for one invocation."""

    request_id: str
    event: Any
    deadline_ms: int
    trace_id: str
    headers: dict[str, str] = field(default_factory=dict)  # of the response POST
    prelude: dict[str, Any] | None = None
    chunks: list[bytes] = field(default_factory=list)  # body chunks after the prelude, as framed
    chunk_times: list[float] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None  # an /invocation/{id}/error report
    error_type: str | None = None
    buffered: bytes | None = None  # a non-streamed response body
    client_gone: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    # Internal: front ↔ runtime hand-over, used on the emulator's loop only.
    _updates: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    _runtime_writer: asyncio.StreamWriter | None = None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def error_trailer(self) -> dict[str, Any] | None:
        raw = self.trailers.get("lambda-runtime-function-error-body")
        return orjson.loads(base64.b64decode(raw)) if raw else None


class LambdaEmulator:
    def __init__(self, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self.outcomes: list[Outcome] = []
        self.init_errors: list[dict[str, Any]] = []
        self.next_calls = 0
        # What the runtime did, in order: ("next", None, p) when it asked for an event,
        # ("response", request_id, p) when a response body had fully arrived (before the runtime
        # is told it was accepted), ("error", request_id, p) for an invocation error report. p is
        # `probe()` called right then on the emulator's thread (None without a probe): what the
        # test wants to know about that moment (how many records were on disk, say).
        self.timeline: list[tuple[str, str | None, Any]] = []
        self.probe: Callable[[], Any] | None = None
        self._loop = asyncio.new_event_loop()
        self._pending: asyncio.Queue[Outcome] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lambda-emulator", daemon=True)
        self._servers: list[asyncio.base_events.Server] = []
        self.runtime_port = 0
        self.front_port = 0

    # -- test-facing ---------------------------------------------------------------------------

    def __enter__(self) -> LambdaEmulator:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def runtime_api(self) -> str:
        return f"127.0.0.1:{self.runtime_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.front_port}"

    def wait_polled(self, count: int, timeout_s: float = 15) -> None:
        """Wait until the runtime has asked for its `count`-th event: everything before is flushed."""
        deadline = time.monotonic() + timeout_s
        while self.next_calls < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the runtime asked for {self.next_calls} events, not {count}")
            time.sleep(0.005)

    def settle(self) -> None:
        """Wait until the runtime is back asking for work after every invocation so far."""
        self.wait_polled(len(self.outcomes) + 1)

    def invoke(self, event: Any, timeout_s: float | None = None, wait: bool = True) -> Outcome:
        """Queue one invocation directly (no Function URL) and wait for its outcome."""
        outcome = self._new_outcome(event, timeout_s)
        if wait and not outcome.done.wait(30):
            raise TimeoutError("the runtime did not answer the invocation")
        return outcome

    def _new_outcome(self, event: Any, timeout_s: float | None) -> Outcome:
        deadline_ms = int((time.time() + (timeout_s or self.timeout_s)) * 1000)
        trace_id = f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0"
        outcome = Outcome(str(uuid.uuid4()), event, deadline_ms, trace_id)
        self.outcomes.append(outcome)

        assert self._pending is not None
        self._loop.call_soon_threadsafe(self._pending.put_nowait, outcome)
        return outcome

    def _mark(self, kind: str, request_id: str | None) -> None:
        self.timeline.append((kind, request_id, self.probe() if self.probe is not None else None))

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._pending = asyncio.Queue()
        runtime = self._loop.run_until_complete(asyncio.start_server(self._serve_runtime, "127.0.0.1", 0))
        front = self._loop.run_until_complete(asyncio.start_server(self._serve_front, "127.0.0.1", 0))
        self._servers = [runtime, front]
        self.runtime_port = runtime.sockets[0].getsockname()[1]
        self.front_port = front.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    # -- Runtime API side ----------------------------------------------------------------------

    async def _serve_runtime(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                event = await _next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    return
                target = event.target.decode()
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                if event.method == b"GET" and target == f"{_PATH}/invocation/next":
                    await _drain_request(conn, reader)
                    await self._answer_next(conn, reader, writer)
                elif target.endswith("/response"):
                    outcome = self._find(target.split("/")[-2])
                    if outcome.client_gone:
                        self._settle(outcome, ("broken", None))
                        return  # the Function URL client left before the response began
                    outcome._runtime_writer = writer
                    await self._read_response(conn, reader, outcome, headers)
                    _send(writer, conn, h11.Response(status_code=202, headers=[("content-length", "16")]))
                    _send(writer, conn, h11.Data(data=b'{"status":"OK"}\n'), h11.EndOfMessage())
                elif target.endswith("/error"):
                    body = await _drain_request(conn, reader)
                    report = orjson.loads(body) if body else {}
                    if target == f"{_PATH}/init/error":
                        self.init_errors.append({"type": headers.get("lambda-runtime-function-error-type"), **report})
                    else:
                        outcome = self._find(target.split("/")[-2])
                        outcome.error, outcome.error_type = report, headers.get("lambda-runtime-function-error-type")
                        self._mark("error", outcome.request_id)
                        self._settle(outcome, ("error", report))
                    _send(writer, conn, h11.Response(status_code=202, headers=[("content-length", "2")]))
                    _send(writer, conn, h11.Data(data=b"{}"), h11.EndOfMessage())
                else:
                    await _drain_request(conn, reader)
                    _send(
                        writer,
                        conn,
                        h11.Response(status_code=404, headers=[("content-length", "0")]),
                        h11.EndOfMessage(),
                    )
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # cancelled: the emulator is shutting down
        finally:
            writer.close()

    async def _answer_next(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.next_calls += 1
        self._mark("next", None)
        assert self._pending is not None
        getter = asyncio.ensure_future(self._pending.get())
        # A runtime that stops hangs up while it waits: its event must go to the next runtime.
        hangup = asyncio.ensure_future(reader.read(1))
        await asyncio.wait({getter, hangup}, return_when=asyncio.FIRST_COMPLETED)
        if hangup.done():
            if getter.done():
                self._pending.put_nowait(getter.result())
            getter.cancel()
            raise ConnectionError("the runtime stopped waiting for an event")
        hangup.cancel()
        await asyncio.gather(hangup, return_exceptions=True)
        outcome = getter.result()
        body = outcome.event if isinstance(outcome.event, bytes) else orjson.dumps(outcome.event)
        # Without Content-Length h11 frames the body chunked, as Go does for a body this large.
        length = [("content-length", str(len(body)))] if len(body) <= _GO_BUFFER else []
        headers = [
            ("content-type", "application/json"),
            *length,
            ("lambda-runtime-aws-request-id", outcome.request_id),
            ("lambda-runtime-deadline-ms", str(outcome.deadline_ms)),
            ("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:relaylog-proxy"),
            ("lambda-runtime-trace-id", outcome.trace_id),
        ]
        _send(writer, conn, h11.Response(status_code=200, headers=headers), h11.Data(data=body), h11.EndOfMessage())

    async def _read_response(
        self, conn: h11.Connection, reader: asyncio.StreamReader, outcome: Outcome, headers: dict[str, str]
    ) -> None:
        outcome.headers = headers
        streaming = headers.get("lambda-runtime-function-response-mode") == "streaming"
        head = piece = b""
        buffered: list[bytes] = []
        while True:
            event = await _next_event(conn, reader)
            if isinstance(event, h11.Data):
                # h11 hands over what each read brought; the chunk_end flag marks the HTTP chunk's end.
                piece += bytes(event.data)
                if not event.chunk_end and streaming:
                    continue
                data, piece = piece, b""
                if not streaming:
                    buffered.append(data)
                elif outcome.prelude is None:
                    head += data
                    if PRELUDE_END in head:
                        prelude, _, rest = head.partition(PRELUDE_END)
                        outcome.prelude = orjson.loads(prelude)
                        self._update(outcome, ("prelude", outcome.prelude))
                        if rest:
                            self._chunk(outcome, rest)
                else:
                    self._chunk(outcome, data)
            elif isinstance(event, h11.EndOfMessage):
                outcome.trailers = {k.decode().lower(): v.decode() for k, v in event.headers}
                if not streaming:
                    outcome.buffered = b"".join(buffered)
                self._mark("response", outcome.request_id)
                self._settle(outcome, ("end", outcome.trailers))
                return
            else:
                self._settle(outcome, ("broken", None))
                raise ConnectionError("the runtime's response ended early")

    def _chunk(self, outcome: Outcome, data: bytes) -> None:
        outcome.chunks.append(data)
        outcome.chunk_times.append(time.perf_counter())
        self._update(outcome, ("chunk", data))

    def _update(self, outcome: Outcome, update: tuple[str, Any]) -> None:
        outcome._updates.put_nowait(update)

    def _settle(self, outcome: Outcome, update: tuple[str, Any]) -> None:
        self._update(outcome, update)
        outcome.done.set()

    def _find(self, request_id: str) -> Outcome:
        for outcome in self.outcomes:
            if outcome.request_id == request_id:
                return outcome
        raise KeyError(request_id)

    # -- Function URL side ---------------------------------------------------------------------

    async def _serve_front(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await _next_event(conn, reader)
                if not isinstance(request, h11.Request):
                    return
                body = await _drain_request(conn, reader)
                outcome = self._new_outcome(_function_url_event(request, body), None)
                kept = await self._relay_to_client(conn, reader, writer, outcome)
                if not kept or conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.RemoteProtocolError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # cancelled: the emulator is shutting down
        finally:
            writer.close()

    async def _relay_to_client(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, outcome: Outcome
    ) -> bool:
        # EOF on the client's side while its response is under way: the client went away.
        watch: asyncio.Future[bytes] | None = asyncio.ensure_future(reader.read(1))
        try:
            while True:
                getter = asyncio.ensure_future(outcome._updates.get())
                waiting: set[asyncio.Future[Any]] = {getter} if watch is None else {getter, watch}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if watch is not None and watch in done:
                    early = b"" if watch.exception() is not None else watch.result()
                    watch = None
                    if not early:
                        getter.cancel()
                        outcome.client_gone = True
                        if outcome._runtime_writer is not None:
                            outcome._runtime_writer.transport.abort()
                        return False
                    conn.receive_data(early)  # the client's next request, sent ahead: h11 keeps it
                if getter not in done:
                    getter.cancel()
                    continue
                kind, value = getter.result()
                if kind == "prelude":
                    headers = [(k, v) for k, v in (value.get("headers") or {}).items()]
                    headers += [("set-cookie", c) for c in value.get("cookies") or []]
                    _send(writer, conn, h11.Response(status_code=int(value.get("statusCode", 200)), headers=headers))
                elif kind == "chunk":
                    _send(writer, conn, h11.Data(data=value))
                elif kind == "end":
                    if "lambda-runtime-function-error-type" in value or outcome.prelude is None:
                        if outcome.prelude is None:
                            _internal_error(writer, conn)
                            await writer.drain()
                        writer.transport.abort()  # the client sees its response cut short
                        return False
                    _send(writer, conn, h11.EndOfMessage())
                    await writer.drain()
                    return True
                else:  # an invocation error report, or the runtime's connection broke
                    if outcome.prelude is None:
                        _internal_error(writer, conn)
                        await writer.drain()
                        return True
                    writer.transport.abort()
                    return False
                await writer.drain()
        finally:
            if watch is not None:
                # The reader allows one waiting read: this one must be gone before the next request.
                watch.cancel()
                (last,) = await asyncio.gather(watch, return_exceptions=True)
                if isinstance(last, bytes) and last:
                    conn.receive_data(last)  # it had read the next request's first byte


def _internal_error(writer: asyncio.StreamWriter, conn: h11.Connection) -> None:
    body = b'{"Message":"Internal Server Error"}'
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    _send(writer, conn, h11.Response(status_code=502, headers=headers), h11.Data(data=body), h11.EndOfMessage())


def _function_url_event(request: h11.Request, body: bytes) -> dict[str, Any]:
    target = urlsplit(request.target.decode("latin-1"))
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name_raw, value_raw in request.headers:
        name, value = name_raw.decode("latin-1").lower(), value_raw.decode("latin-1")
        if name == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
        else:
            headers[name] = f"{headers[name]},{value}" if name in headers else value
    text_body = headers.get("content-type", "").startswith(("application/json", "text/"))
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": target.path,
        "rawQueryString": target.query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "emulator",
            "domainName": "emulator.lambda-url.us-east-1.on.aws",
            "domainPrefix": "emulator",
            "http": {
                "method": request.method.decode(),
                "path": target.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": not text_body,
    }
    if cookies:
        event["cookies"] = cookies
    if body:
        event["body"] = body.decode("utf-8") if text_body else base64.b64encode(body).decode()
    return event


def _send(writer: asyncio.StreamWriter, conn: h11.Connection, *events: Any) -> None:
    for event in events:
        data = conn.send(event)
        if data:
            writer.write(data)


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))  # b"" at EOF: h11 then reports ConnectionClosed
            continue
        return event


async def _drain_request(conn: h11.Connection, reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.Data):
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(parts)
        else:
            raise ConnectionError("request ended early")
