"""A Lambda Runtime API emulator with a Function URL in front, on real loopback sockets, doing
what AWS documents rather than what is convenient. Each behaviour names its page:

- Runtime API (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html): `GET next` answers
  the event with `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms` (when the function
  times out, Unix milliseconds: counted from the moment the runtime receives the event),
  `Lambda-Runtime-Invoked-Function-Arn` and `Lambda-Runtime-Trace-Id` (`Root=...;Parent=...;Sampled=`,
  the same Root the Function URL put in `x-amzn-trace-id`). `Lambda-Runtime-Client-Context` and
  `-Cognito-Identity` are documented for AWS Mobile SDK invocations only, so a Function URL event
  has neither. Invocation and init errors are `POST .../error` reports. Events go out framed as the
  real Runtime API (Go's net/http) frames them: with Content-Length up to 2 KiB, chunked above.
- Streamed responses (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-custom.html#runtimes-custom-response-streaming):
  `Lambda-Runtime-Function-Response-Mode: streaming`, chunked, a JSON prelude, 8 NUL bytes, the
  body; a failure after the first byte in the trailers `Lambda-Runtime-Function-Error-Type` and
  `-Body`. Parsed with h11, so chunk boundaries and trailers are read exactly as sent. The front
  cuts the client's connection when the trailers report an error.
- The client leaving (https://docs.aws.amazon.com/lambda/latest/dg/configuration-response-streaming.html):
  "streamed responses are not interrupted or stopped when the invoking client connection is
  broken", and the function is billed for its full duration. So when the Function URL's client
  goes away the runtime is told nothing: its response connection stays open and every byte is
  accepted to the end (`Outcome.client_gone` says it happened).
- Bandwidth (same page): the first 6 MB of a streamed response are uncapped, the rest reaches the
  client at most 2 MB/s. The front paces its writes to the client that way. Streamed responses
  are limited in size (200 MB today, 20 MB when streaming launched); what a client sees beyond the
  limit is not documented, and nothing here sends that much: not emulated.
- The deadline (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html): the
  function timeout bounds the Invoke phase; a function that times out gets its execution
  environment reset, the runtime shut down. At the deadline the emulator drops the runtime's
  response connection, answers nothing more for that invocation, and calls `on_reset` (a runtime
  process is then killed and started again by its owner, `lambda_runtime.LambdaRuntime`). What
  the Function URL's client sees then is not documented: the same as for a runtime that broke (a
  502 before the prelude, a cut connection after it). 900 s is the longest timeout
  (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
- The event, the headers the Function URL adds and the 6 MB request limit: `function_url.py`.
- Lambda Managed Instances (`max_concurrency` above 1, which the runtime is told in
  `AWS_LAMBDA_MAX_CONCURRENCY`): the same Runtime API, except that it "can accept concurrent /next
  and /response requests up to the configured AWS_LAMBDA_MAX_CONCURRENCY limit"
  (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html). At most that many invocations
  are handed out and not yet answered; a `GET next` beyond them waits for one to end (AWS's own
  Node.js client in that mode asks again as soon as it has dispatched an invocation, so the limit
  is the Runtime API's to keep). The environment is never frozen, each invocation has its own
  timeout, and one that times out is failed alone: no other is interrupted and the environment is
  not reset (https://docs.aws.amazon.com/lambda/latest/dg/lambda-managed-instances-execution-environment.html).
  What the runtime's response connection sees then is not documented: it is dropped here, as in
  the default mode, and `on_reset` is not called.
- Extensions (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-extensions-api.html): `POST
  /2020-01-01/extension/register` during Init (before the runtime's first `GET next`) answers a
  `Lambda-Extension-Identifier`; `GET .../event/next` is held open, since no event is emulated
  (an extension registered for none, as an internal one asking only for SIGTERM is, gets none
  before shutdown). A registration after Init is refused; how is not documented: 403 here.

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

import h11
import orjson

from tests.support.function_url import PAYLOAD_LIMIT, Front, event_for, payload_size, too_large_body, trace_root

PRELUDE_END = b"\0" * 8
_PATH = "/2018-06-01/runtime"
_EXTENSION_PATH = "/2020-01-01/extension"
# Go's net/http buffers this much of a response before it must choose its framing: a body that
# fits goes out with Content-Length, a larger one chunked.
_GO_BUFFER = 2048
# Streamed response bandwidth: this much uncapped, then at most this many bytes a second.
UNCAPPED_BYTES = 6 * 1024 * 1024
CAPPED_RATE = 2 * 1024 * 1024


@dataclass
class Outcome:
    """What the runtime sent back for one invocation."""

    request_id: str
    event: Any
    timeout_s: float
    trace_id: str
    deadline_ms: int = 0  # set when the runtime receives the event
    headers: dict[str, str] = field(default_factory=dict)  # of the response POST
    prelude: dict[str, Any] | None = None
    chunks: list[bytes] = field(default_factory=list)  # body chunks after the prelude, as framed
    chunk_times: list[float] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)
    error: dict[str, Any] | None = None  # an /invocation/{id}/error report
    error_type: str | None = None
    buffered: bytes | None = None  # a non-streamed response body
    client_gone: bool = False  # the Function URL's client left (the runtime is not told)
    timed_out: bool = False  # the deadline came first: the environment was reset
    acknowledge: bool = True  # False: the Runtime API breaks after the body, before its 202
    done: threading.Event = field(default_factory=threading.Event)
    # Internal: front ↔ runtime hand-over, used on the emulator's loop only.
    _updates: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    _runtime_writer: asyncio.StreamWriter | None = None
    _holds_slot: bool = False  # handed out under Managed Instances' limit

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def error_trailer(self) -> dict[str, Any] | None:
        raw = self.trailers.get("lambda-runtime-function-error-body")
        return orjson.loads(base64.b64decode(raw)) if raw else None


class LambdaEmulator:
    def __init__(self, timeout_s: float = 30.0, front: Front | None = None, max_concurrency: int = 1) -> None:
        self.timeout_s = timeout_s
        self.front = front or Front()
        self.max_concurrency = max_concurrency
        self.outcomes: list[Outcome] = []
        self.init_errors: list[dict[str, Any]] = []
        self.refused = 0  # Function URL requests refused as too large (never invoked)
        self.next_calls = 0
        self.in_flight = 0  # invocations handed out and not yet answered
        self.runtime_connections = 0  # connections the runtime opened to the Runtime API
        # This many times, a `GET next` on a kept connection is met by closing it unanswered (an
        # idle connection the server closes just as the request goes out).
        self.close_kept_at_next = 0
        self.peak_in_flight = 0
        self.extensions: list[tuple[str, list[str]]] = []  # (name, events) registered
        # Managed Instances: slots taken by a `GET next` waiting for an event or by an invocation
        # under way; set when one is given back.
        self._slots_taken = 0
        self._slot_freed: asyncio.Event | None = None
        # What the runtime did, in order: ("next", None, p) when it asked for an event,
        # ("response", request_id, p) when a response body had fully arrived (before the runtime
        # is told it was accepted), ("error", request_id, p) for an invocation error report. p is
        # `probe()` called right then on the emulator's thread (None without a probe): what the
        # test wants to know about that moment (how many records were on disk, say).
        self.timeline: list[tuple[str, str | None, Any]] = []
        self.probe: Callable[[], Any] | None = None
        # Called (on the emulator's thread) when an invocation's deadline passed: Lambda resets
        # the execution environment, shutting the runtime down.
        self.on_reset: Callable[[Outcome], None] | None = None
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

    def runtime_env(self) -> dict[str, str]:
        """What Lambda tells a runtime about this Runtime API, in its environment."""
        env = {"AWS_LAMBDA_RUNTIME_API": self.runtime_api}
        if self.max_concurrency > 1:
            env["AWS_LAMBDA_MAX_CONCURRENCY"] = str(self.max_concurrency)
        return env

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

    def invoke(
        self, event: Any, timeout_s: float | None = None, wait: bool = True, acknowledge: bool = True
    ) -> Outcome:
        """Queue one invocation directly (no Function URL) and wait for its outcome."""
        outcome = self._new_outcome(event, timeout_s, acknowledge=acknowledge)
        if wait and not outcome.done.wait(30):
            raise TimeoutError("the runtime did not answer the invocation")
        return outcome

    def break_runtime(self, outcome: Outcome) -> None:
        """The Runtime API itself fails: the runtime's response connection drops mid-response."""

        def drop() -> None:
            if outcome._runtime_writer is not None:
                outcome._runtime_writer.transport.abort()

        self._loop.call_soon_threadsafe(drop)

    def _new_outcome(
        self, event: Any, timeout_s: float | None, root: str | None = None, acknowledge: bool = True
    ) -> Outcome:
        trace_id = f"{root or trace_root()};Parent={uuid.uuid4().hex[:16]};Sampled=0"
        outcome = Outcome(str(uuid.uuid4()), event, timeout_s or self.timeout_s, trace_id, acknowledge=acknowledge)
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
        self._slot_freed = asyncio.Event()
        runtime = self._loop.run_until_complete(asyncio.start_server(self._serve_runtime, "127.0.0.1", 0))
        front = self._loop.run_until_complete(asyncio.start_server(self._serve_front, "127.0.0.1", 0))
        self._servers = [runtime, front]
        self.runtime_port = runtime.sockets[0].getsockname()[1]
        self.front_port = front.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    # -- Runtime API side ----------------------------------------------------------------------

    async def _serve_runtime(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.runtime_connections += 1
        conn = h11.Connection(h11.SERVER)
        kept = False  # the connection has carried a request before this one
        try:
            while True:
                event = await _next_event(conn, reader)
                if not isinstance(event, h11.Request):
                    return
                target = event.target.decode()
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                next_call = event.method == b"GET" and target == f"{_PATH}/invocation/next"
                if next_call and kept and self.close_kept_at_next:
                    self.close_kept_at_next -= 1
                    return
                if next_call:
                    await _drain_request(conn, reader)
                    await self._answer_next(conn, reader, writer)
                elif target.startswith(_EXTENSION_PATH):
                    await self._serve_extension(conn, reader, writer, target, headers)
                    return
                elif target.endswith("/response"):
                    outcome = self._find(target.split("/")[-2])
                    if outcome.timed_out:
                        return  # the environment was reset: nothing answers any more
                    outcome._runtime_writer = writer
                    await self._read_response(conn, reader, outcome, headers)
                    if not outcome.acknowledge:
                        return
                    _send(writer, conn, h11.Response(status_code=202, headers=[("content-length", "16")]))
                    _send(writer, conn, h11.Data(data=b'{"status":"OK"}\n'), h11.EndOfMessage())
                elif target.endswith("/error"):
                    body = await _drain_request(conn, reader)
                    report = orjson.loads(body) if body else {}
                    if target == f"{_PATH}/init/error":
                        self.init_errors.append({"type": headers.get("lambda-runtime-function-error-type"), **report})
                    else:
                        outcome = self._find(target.split("/")[-2])
                        if outcome.timed_out:
                            return
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
                kept = True
        except (ConnectionError, h11.RemoteProtocolError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # cancelled: the emulator is shutting down
        finally:
            writer.close()

    async def _answer_next(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Marked first, counted second: wait_polled() returns on the count, and the timeline entry
        # (with its probe) must already be there when it does.
        self._mark("next", None)
        self.next_calls += 1
        assert self._pending is not None
        # A runtime that stops hangs up while it waits: its event must go to the next runtime.
        hangup = asyncio.ensure_future(reader.read(1))
        concurrent = self.max_concurrency > 1
        if concurrent:
            await self._take_slot(hangup)
        getter = asyncio.ensure_future(self._pending.get())
        await asyncio.wait({getter, hangup}, return_when=asyncio.FIRST_COMPLETED)
        if hangup.done():
            if getter.done():
                self._pending.put_nowait(getter.result())
            getter.cancel()
            if concurrent:
                self._give_slot_back()
            raise ConnectionError("the runtime stopped waiting for an event")
        hangup.cancel()
        await asyncio.gather(hangup, return_exceptions=True)
        outcome = getter.result()
        # The invocation starts now: its timeout runs from here.
        outcome.deadline_ms = int((time.time() + outcome.timeout_s) * 1000)
        outcome._holds_slot = concurrent
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        asyncio.get_running_loop().call_later(outcome.timeout_s, self._expire, outcome)
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

    async def _take_slot(self, hangup: asyncio.Future[bytes]) -> None:
        assert self._slot_freed is not None
        while self._slots_taken >= self.max_concurrency:
            freed = asyncio.ensure_future(self._slot_freed.wait())
            waiters: set[asyncio.Future[Any]] = {freed, hangup}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            freed.cancel()
            if hangup.done():
                raise ConnectionError("the runtime stopped waiting for an event")
        self._slots_taken += 1

    def _give_slot_back(self) -> None:
        assert self._slot_freed is not None
        self._slots_taken -= 1
        self._slot_freed.set()  # wakes every waiter; each checks again
        self._slot_freed = asyncio.Event()

    def _expire(self, outcome: Outcome) -> None:
        if outcome.done.is_set():
            return
        outcome.timed_out = True
        if outcome._runtime_writer is not None:
            outcome._runtime_writer.transport.abort()
        self._settle(outcome, ("timeout", None))
        # Managed Instances fails the one invocation and leaves the environment running.
        if self.on_reset is not None and self.max_concurrency == 1:
            self.on_reset(outcome)

    async def _serve_extension(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        target: str,
        headers: dict[str, str],
    ) -> None:
        body = await _drain_request(conn, reader)
        if target == f"{_EXTENSION_PATH}/register":
            if self.next_calls:
                _json_answer(writer, conn, 403, b'{"errorMessage":"registration is only allowed during Init"}')
                await writer.drain()
                return
            name = headers.get("lambda-extension-name", "")
            self.extensions.append((name, list((orjson.loads(body) if body else {}).get("events", []))))
            self._mark("register", None)
            answer = orjson.dumps({"functionName": "relaylog-proxy", "functionVersion": "$LATEST", "handler": ""})
            response_headers = [
                ("content-type", "application/json"),
                ("content-length", str(len(answer))),
                ("lambda-extension-identifier", str(uuid.uuid4())),
            ]
            _send(writer, conn, h11.Response(status_code=200, headers=response_headers), h11.Data(data=answer))
            _send(writer, conn, h11.EndOfMessage())
            await writer.drain()
        elif target == f"{_EXTENSION_PATH}/event/next":
            await reader.read(1)  # no event ever comes: held until the extension hangs up

    async def _read_response(
        self, conn: h11.Connection, reader: asyncio.StreamReader, outcome: Outcome, headers: dict[str, str]
    ) -> None:
        outcome.headers = headers
        streaming = headers.get("lambda-runtime-function-response-mode") == "streaming"
        head = piece = b""
        buffered: list[bytes] = []
        while True:
            try:
                event = await _next_event(conn, reader)
            except (ConnectionError, h11.RemoteProtocolError):
                self._settle(outcome, ("broken", None))  # the runtime died, or its connection was dropped
                raise
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
        if not outcome.client_gone:  # else nobody is reading them
            outcome._updates.put_nowait(update)

    def _settle(self, outcome: Outcome, update: tuple[str, Any]) -> None:
        if not outcome.done.is_set():
            self._update(outcome, update)
            outcome.done.set()
            self.in_flight -= 1
            if outcome._holds_slot:
                self._give_slot_back()

    def _find(self, request_id: str) -> Outcome:
        for outcome in self.outcomes:
            if outcome.request_id == request_id:
                return outcome
        raise KeyError(request_id)

    # -- Function URL side ---------------------------------------------------------------------

    async def _serve_front(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        peer = writer.get_extra_info("peername")[0]
        try:
            while True:
                request = await _next_event(conn, reader)
                if not isinstance(request, h11.Request):
                    return
                body = await _drain_request(conn, reader)
                root = trace_root()
                event = event_for(request, body, root, self.front, peer)
                if payload_size(event) > PAYLOAD_LIMIT:
                    self.refused += 1
                    _json_answer(writer, conn, 413, too_large_body())
                    await writer.drain()
                    kept = True
                else:
                    outcome = self._new_outcome(event, None, root)
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
        sent = 0
        try:
            while True:
                getter = asyncio.ensure_future(outcome._updates.get())
                waiting: set[asyncio.Future[Any]] = {getter} if watch is None else {getter, watch}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if watch is not None and watch in done:
                    early = b"" if watch.exception() is not None else watch.result()
                    watch = None
                    if not early:
                        # Documented: the stream is not interrupted. The runtime goes on writing
                        # into a response nobody reads, to its end.
                        getter.cancel()
                        outcome.client_gone = True
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
                    sent += len(value)
                    capped = min(len(value), sent - UNCAPPED_BYTES)
                    if capped > 0:  # the bytes past the first 6 MB take their time to arrive
                        await asyncio.sleep(capped / CAPPED_RATE)
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
                else:  # an invocation error report, the runtime's connection broke, the deadline
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
    _json_answer(writer, conn, 502, b'{"Message":"Internal Server Error"}')


def _json_answer(writer: asyncio.StreamWriter, conn: h11.Connection, status: int, body: bytes) -> None:
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    _send(writer, conn, h11.Response(status_code=status, headers=headers), h11.Data(data=body), h11.EndOfMessage())


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
