"""relaylog serve's HTTP/1.1 server protocol on a real socket, spoken to byte by byte."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import Iterator

import pytest
import uvicorn
from relaylog.asgi import Message, Receive, Scope, Send
from relaylog.http_server import HttpProtocol
from relaylog.http_server.request import Request
from uvicorn.server import ServerState

from tests.support.proxy import ServedApp

BODY = b'{"ok":true}'


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """What each path does: answers, fails, streams, or reports what it received."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":  # the request body as received, message by message
        parts: list[Message] = []
        while not parts or parts[-1]["more_body"]:
            parts.append(await receive())
        body = b"|".join(part["body"] for part in parts)
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif path == "/fail-before":
        raise ValueError("before the response")
    elif path == "/fail-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("mid-response")
    elif path == "/split":  # a header value that would end the head early
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1\r\nx-b: 2")]})
    elif path == "/no-content":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/overloaded":  # a status with no registered reason phrase
        headers = [(b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 529, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/listen":  # hears the client leave through the server's extension, no receive()
        heard = asyncio.Event()
        scope["extensions"]["relaylog.disconnect"]["listen"](heard.set)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await heard.wait()
        DISCONNECTS.append(time.monotonic())
    elif path == "/listen-stopped":
        listen = scope["extensions"]["relaylog.disconnect"]["listen"]
        listen(lambda: DISCONNECTS.append(-1.0))
        listen(None)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await asyncio.sleep(0.3)
    elif path == "/slow-body":  # the body a few passes of the loop after the head
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        for _ in range(3):
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b"ok"})
    elif path == "/wait-for-disconnect":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        message = await receive()
        while message["type"] != "http.disconnect":
            message = await receive()
        DISCONNECTS.append(time.monotonic())
    else:
        headers = [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(BODY)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})


DISCONNECTS: list[float] = []


@pytest.fixture(scope="module")
def served() -> Iterator[ServedApp]:
    with ServedApp(app, lifespan="off") as server:
        yield server


def _connect(server: ServedApp) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """`count` responses with a Content-Length, as raw bytes."""
    buffer = b""
    responses: list[bytes] = []
    while len(responses) < count:
        end = buffer.find(b"\r\n\r\n")
        if end != -1:
            head = buffer[:end].lower()
            length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]) if b"content-length" in head else 0
            if len(buffer) >= end + 4 + length:
                responses.append(buffer[: end + 4 + length])
                buffer = buffer[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(responses)} responses"
        buffer += chunk
    return responses


def test_a_response_as_the_app_sent_it_with_lowercase_names(served: ServedApp) -> None:
    with _connect(served) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        (response,) = _read_responses(sock, 1)
    assert response == b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n" + BODY


def test_pipelined_requests_are_answered_in_order_on_one_connection(served: ServedApp) -> None:
    with _connect(served) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\none"
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nthree"
        )
        first, second, third = _read_responses(sock, 3)
    assert first.endswith(b"\r\n\r\none") and second.endswith(BODY) and third.endswith(b"\r\n\r\nthree")


def test_a_body_in_pieces_reaches_the_app_as_it_arrives(served: ServedApp) -> None:
    with _connect(served) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        time.sleep(0.2)
        sock.sendall(b"2\r\nde\r\n0\r\n\r\n")
        (response,) = _read_responses(sock, 1)
    body = response.split(b"\r\n\r\n", 1)[1]
    assert body.replace(b"|", b"") == b"abcde" and body.startswith(b"abc|")


def test_expect_100_continue_is_answered_before_the_body_is_read(served: ServedApp) -> None:
    with _connect(served) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        (response,) = _read_responses(sock, 1)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"\r\n\r\nbody")


def test_head_and_204_have_no_body_and_an_unknown_status_keeps_its_code(served: ServedApp) -> None:
    with _connect(served) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /no-content HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        sock.sendall(b"GET /overloaded HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = _read_until_closed(sock)
    assert data == (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 529 \r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )


def test_an_app_that_fails_before_answering_gives_500_and_after_cuts_the_connection(served: ServedApp) -> None:
    with _connect(served) as sock:
        sock.sendall(b"GET /fail-before HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    with _connect(served) as sock:
        sock.sendall(b"GET /fail-after HTTP/1.1\r\nHost: x\r\n\r\n")
        data = _read_until_closed(sock)
    assert data.endswith(b"transfer-encoding: chunked\r\n\r\n7\r\npartial\r\n")  # no terminating chunk


def test_a_line_break_in_a_header_value_never_reaches_the_client(served: ServedApp) -> None:
    with _connect(served) as sock:
        sock.sendall(b"GET /split HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_until_closed(sock) == b""


def test_the_app_hears_the_client_leave_mid_response(served: ServedApp) -> None:
    DISCONNECTS.clear()
    with _connect(served) as sock:
        sock.sendall(b"GET /wait-for-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"data: 1" in sock.recv(65536)
    deadline = time.monotonic() + 5
    while not DISCONNECTS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(DISCONNECTS) == 1


@pytest.mark.parametrize("path", ["/listen", "/listen-stopped"])
def test_the_disconnect_extension_calls_back_until_stopped(served: ServedApp, path: str) -> None:
    DISCONNECTS.clear()
    with _connect(served) as sock:
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"data: 1" in sock.recv(65536)
    time.sleep(0.5)
    assert len(DISCONNECTS) == (1 if path == "/listen" else 0)


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout() -> None:
    server = ServedApp(app, lifespan="off")
    server._server.config.timeout_keep_alive = 1
    with server, _connect(server) as sock:
        for _ in range(3):  # busy: each request pushes the deadline on
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            _read_responses(sock, 1)
            time.sleep(0.4)
        began = time.monotonic()
        assert _read_until_closed(sock) == b""
        assert 0.3 < time.monotonic() - began < 3


def test_the_server_stops_with_a_connection_idle() -> None:
    with ServedApp(app, lifespan="off") as server:
        sock = _connect(server)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        _read_responses(sock, 1)
    assert _read_until_closed(sock) == b""  # closed by the shutdown, not left open
    sock.close()


class _Transport(asyncio.Transport):
    """Records each write: how many system calls a response costs."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name in ("sockname", "peername") else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _writes_for(path: bytes, passes: int) -> list[bytes]:
    config = uvicorn.Config(app, lifespan="off", proxy_headers=False)
    protocol = HttpProtocol(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.data_received(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(passes):
        await asyncio.sleep(0)
    protocol.connection_lost(None)
    return transport.writes


def test_a_whole_response_leaves_in_one_write() -> None:
    writes = asyncio.run(_writes_for(b"/", 5))
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n" + BODY]


def test_a_head_goes_with_the_first_body_bytes_or_alone_at_the_end_of_that_pass() -> None:
    # A stream's head and first event, sent in one step: one write.
    assert asyncio.run(_writes_for(b"/wait-for-disconnect", 5)) == [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n"
    ]
    # A head whose body comes passes later is not held for it: the client has it at once.
    assert asyncio.run(_writes_for(b"/slow-body", 8)) == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"ok"]


def test_a_finished_request_leaves_no_reference_cycle_behind() -> None:
    """The disconnect extension in a request's scope holds the request, which holds the scope:
    left in place, every call would be garbage only the collector frees (measured: 11 MB more
    RSS and its pauses in the p99)."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        asyncio.run(_writes_for(b"/", 3))
        asyncio.run(_writes_for(b"/slow-body", 8))
        gc.collect()
        left = [item for item in gc.garbage if isinstance(item, Request)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []
