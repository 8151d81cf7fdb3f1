"""The Lambda Runtime API over asyncio: next invocation, streamed responses, error reports, and
the one call of the Extensions API the runtime makes (an internal extension, for SIGTERM).

A streamed response is `POST .../invocation/{id}/response` in chunked encoding: a JSON prelude
(status, headers, cookies), 8 NUL bytes, then the body as it comes. A failure after the first byte
is reported in the trailers, which is why this writes HTTP itself: `http.client` cannot send them.
Any number of requests can be under way at once, each on a connection of its own. Serving many
invocations at once, connections are kept alive and reused (`Connections`), as AWS's own runtime
clients do; one at a time, each request has a new one, as it always had here.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Any

import orjson

from .invoke import Closed

API_PATH = "/2018-06-01/runtime"
# https://docs.aws.amazon.com/lambda/latest/dg/runtimes-extensions-api.html
EXTENSION_PATH = "/2020-01-01/extension"
PRELUDE_END = b"\0" * 8
_LAST_CHUNK = b"0\r\n\r\n"
_ERROR_TRAILERS = "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body"


class RuntimeAPIError(Exception):
    """The Runtime API answered something this client cannot go on with."""


@dataclass(frozen=True, slots=True)
class Invocation:
    request_id: str
    deadline: float  # epoch seconds
    event: Any
    trace_id: str | None

    def remaining(self) -> float:
        return self.deadline - time.time()


def error_payload(error_type: str, message: str) -> bytes:
    return orjson.dumps({"errorMessage": message, "errorType": error_type, "stackTrace": []})


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Connections:
    """Connections to the Runtime API, one request at a time on each; with `keep_alive`, kept and
    reused. Opening and closing one cost about 0.4 ms of CPU (0.8 with the server's side, against
    0.15 for a request on a kept one) on the 2-core VM this was measured on, and an invocation
    makes two requests (its event, its response)."""

    def __init__(self, host: str, port: int, keep_alive: bool) -> None:
        self._address = (host, port)
        self.keep_alive = keep_alive
        self._idle: list[Stream] = []

    async def take(self, fresh: bool = False) -> tuple[Stream, bool]:
        """A connection, and whether it was kept from an earlier request; `fresh`: a new one."""
        while self._idle and not fresh:
            reader, writer = self._idle.pop()
            if _open(reader, writer):
                return (reader, writer), True
            writer.close()  # the Runtime API closed it while it was idle
        return await asyncio.open_connection(*self._address), False

    def give_back(self, stream: Stream, reusable: bool) -> None:
        reader, writer = stream
        if reusable and self.keep_alive and _open(reader, writer):
            self._idle.append(stream)
        else:
            writer.close()

    def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def _open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    return not writer.is_closing() and not reader.at_eof()


class _Unanswered(Exception):
    """The connection ended before a byte of the answer came back (`original` says how)."""

    def __init__(self, original: ConnectionError | asyncio.IncompleteReadError) -> None:
        super().__init__(str(original))
        self.original = original


class RuntimeAPI:
    def __init__(self, address: str, keep_alive: bool = False) -> None:
        host, _, port = address.rpartition(":")
        self._host_header = address
        self.connections = Connections(host, int(port), keep_alive)

    async def next(self) -> Invocation:
        status, headers, body = await self._call("GET", f"{API_PATH}/invocation/next")
        if status != 200:
            raise RuntimeAPIError(f"GET next answered {status}")
        request_id = headers.get("lambda-runtime-aws-request-id")
        if not request_id:
            raise RuntimeAPIError("GET next answered without Lambda-Runtime-Aws-Request-Id")
        deadline_ms = headers.get("lambda-runtime-deadline-ms", "")
        deadline = int(deadline_ms) / 1000 if deadline_ms.isdigit() else time.time() + 900
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            event = None  # answered with an invocation error by the loop
        return Invocation(request_id, deadline, event, headers.get("lambda-runtime-trace-id"))

    def respond(self, request_id: str) -> StreamedResponse:
        return StreamedResponse(self.connections, self._host_header, request_id)

    async def invocation_error(self, request_id: str, error_type: str, message: str) -> None:
        await self._report(f"{API_PATH}/invocation/{request_id}/error", error_type, message)

    async def init_error(self, error_type: str, message: str) -> None:
        await self._report(f"{API_PATH}/init/error", error_type, message)

    async def register_extension(self, name: str) -> str:
        """Register an extension for no events (only during init); its identifier."""
        headers = {"Lambda-Extension-Name": name, "Content-Type": "application/json"}
        status, answer, _ = await self._call("POST", f"{EXTENSION_PATH}/register", headers, b'{"events":[]}')
        extension_id = answer.get("lambda-extension-identifier")
        if status != 200 or not extension_id:
            raise RuntimeAPIError(f"extension registration answered {status}")
        return extension_id

    async def next_extension_event(self, extension_id: str) -> None:
        headers = {"Lambda-Extension-Identifier": extension_id}
        await self._call("GET", f"{EXTENSION_PATH}/event/next", headers)

    async def _report(self, path: str, error_type: str, message: str) -> None:
        headers = {"Lambda-Runtime-Function-Error-Type": error_type, "Content-Type": "application/json"}
        status, _, _ = await self._call("POST", path, headers, error_payload(error_type, message))
        if status >= 300:
            raise RuntimeAPIError(f"POST {path.rsplit('/', 1)[-1]} answered {status}")

    async def _call(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        stream, kept = await self.connections.take()
        try:
            return await self._request(stream, method, path, headers, body)
        except _Unanswered as exc:
            if not kept:
                raise exc.original from None
        # A kept connection the Runtime API closed as the request went out, before a byte of an
        # answer: nothing was handed out on it, so the request goes again on a new one (as Go's
        # net/http client does on a reused connection that broke before the response).
        stream, _ = await self.connections.take(fresh=True)
        try:
            return await self._request(stream, method, path, headers, body)
        except _Unanswered as exc:
            raise exc.original from None

    async def _request(
        self, stream: Stream, method: str, path: str, headers: dict[str, str] | None, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        reader, writer = stream
        reusable = False  # unless the whole answer was read (a cancelled `GET next` is not)
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}"]
            if not self.connections.keep_alive:
                lines.append("Connection: close")
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            if body or method == "POST":
                lines.append(f"Content-Length: {len(body)}")
            try:
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
                await writer.drain()
                status, response_headers = await read_head(reader)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
                raise _Unanswered(exc) from exc
            data = await read_body(reader, response_headers)
            reusable = keeps_alive(response_headers)
            return status, response_headers, data
        finally:
            self.connections.give_back(stream, reusable)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise RuntimeAPIError(f"not an HTTP response: {status_line[:80]!r}")
    headers = {}
    for line in lines:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def keeps_alive(headers: dict[str, str]) -> bool:
    """Whether the connection may carry another request after this answer: HTTP/1.1 keeps it
    unless told otherwise, and a body delimited by the connection's end used it up."""
    framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "").lower()
    return framed and headers.get("connection", "").lower() != "close"


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """A response body in whichever framing it came. The Runtime API is Go's net/http, which sends
    an event larger than its 2 KiB write buffer chunked, without Content-Length."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)  # int() ignores the CRLF
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers: none that this client needs
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = headers.get("content-length")
    if length is not None:
        return await reader.readexactly(int(length))
    return await reader.read()  # delimited by the end of the connection


class StreamedResponse:
    """One invocation's response, streamed to the Runtime API chunk by chunk (a ResponseStream)."""

    def __init__(self, connections: Connections, host_header: str, request_id: str) -> None:
        self._connections = connections
        self._host_header = host_header
        self._path = f"{API_PATH}/invocation/{request_id}/response"
        self._closed = Closed()
        self._stream: Stream | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._answer: asyncio.Task[int] | None = None
        self._ending = False
        self._reusable = False

    @property
    def closed(self) -> Closed:
        return self._closed

    async def start(self, status: int, headers: dict[str, str], cookies: list[str]) -> None:
        self._stream, _ = await self._connections.take()
        reader, self._writer = self._stream
        head = (
            f"POST {self._path} HTTP/1.1\r\n"
            f"Host: {self._host_header}\r\n"
            "Lambda-Runtime-Function-Response-Mode: streaming\r\n"
            "Content-Type: application/vnd.awslambda.http-integration-response\r\n"
            "Transfer-Encoding: chunked\r\n"
            f"Trailer: {_ERROR_TRAILERS}\r\n"
            "\r\n"
        ).encode("latin-1")
        prelude = orjson.dumps({"statusCode": status, "headers": headers, "cookies": cookies}) + PRELUDE_END
        self._writer.write(head + _chunk(prelude))
        await self._writer.drain()
        # The answer comes once the body is complete; earlier, or none, means the Runtime API broke.
        self._answer = asyncio.get_running_loop().create_task(self._await_answer(reader))

    async def write(self, chunk: bytes) -> None:
        if not self.write_now(chunk):
            # `drain` waits while the transport holds data back, or raises once the connection is
            # lost (`is_closing` then).
            await self._require_writer().drain()

    def write_now(self, chunk: bytes) -> bool:
        # A chunk the socket took whole leaves nothing to wait for.
        writer = self._require_writer()
        transport = writer.transport
        if transport.is_closing():
            return False
        writer.write(_chunk(chunk))
        return not transport.get_write_buffer_size()

    async def finish(self, last: bytes = b"") -> None:
        # The relay hands the provider's last bytes over with the end: one write for both.
        await self._end(_chunk(last) + _LAST_CHUNK if last else _LAST_CHUNK)

    async def fail(self, error_type: str, message: str) -> None:
        encoded = base64.b64encode(error_payload(error_type, message)).decode("ascii")
        trailers = (
            "0\r\n"
            f"Lambda-Runtime-Function-Error-Type: {error_type}\r\n"
            f"Lambda-Runtime-Function-Error-Body: {encoded}\r\n"
            "\r\n"
        )
        await self._end(trailers.encode("latin-1"))

    async def _end(self, terminator: bytes) -> None:
        try:
            writer = self._require_writer()
            self._ending = True
            writer.write(terminator)
            await writer.drain()
            if self._answer is not None:
                status = await self._answer
                if not 200 <= status < 300:
                    # Refused, or no answer at all (0): the Runtime API broke, and whether the end
                    # reached the client is unknown. A Function URL client that leaves is not
                    # this: Lambda lets the response run on to its end and accepts it.
                    self._closed.set()
                    raise ConnectionError(f"the Runtime API did not accept the response: {status}")
        finally:
            if self._stream is not None:
                self._connections.give_back(self._stream, self._reusable)

    async def _await_answer(self, reader: asyncio.StreamReader) -> int:
        try:
            status, headers = await read_head(reader)
            if self._ending:
                await read_body(reader, headers)
                self._reusable = 200 <= status < 300 and keeps_alive(headers)
        except (OSError, asyncio.IncompleteReadError, RuntimeAPIError, ValueError):
            self._closed.set()
            return 0
        if not self._ending:
            self._closed.set()
        return status

    def _require_writer(self) -> asyncio.StreamWriter:
        if self._writer is None:
            raise RuntimeError("the response was not started")
        if self._closed.is_set():
            raise ConnectionResetError("the Runtime API closed the response stream")
        return self._writer


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)
