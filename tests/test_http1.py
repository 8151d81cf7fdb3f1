"""relay/http1, the relay's HTTP/1.1 client, against scripted servers on loopback: framing, keep-alive
and its limits, TLS with certificate checks, timeouts, cuts, IPv6 and the public-address check."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from relaylog.relay.http1 import Client, ForbiddenAddress, UpstreamDisconnected
from yarl import URL

Reply = Callable[["Conn", bytes], Awaitable[None]]


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.served = 0

    async def request(self) -> bytes | None:
        """One request, head and body (by Content-Length), or None when the client closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return head + await self.reader.readexactly(length)


class Server:
    """Answers each request on a connection with `reply`; counts connections and keeps requests."""

    def __init__(self, reply: Reply, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.reply, self.host, self.tls = reply, host, tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = 0  # connections the client closed (or that ended)

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, self.host, 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.server.close()

    def url(self, path: str = "/v1/chat/completions", scheme: str = "http", host: str | None = None) -> URL:
        host = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return URL(f"{scheme}://{host}:{self.port}{path}", encoded=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = Conn(reader, writer)
        try:
            while (request := await conn.request()) is not None:
                self.requests.append(request)
                await self.reply(conn, request)
                if writer.is_closing():
                    break
        except (ConnectionError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            # A handler still waiting when the test's loop ends is cancelled. Ending cancelled, it
            # would make Python 3.11's StreamReaderProtocol log "Exception in callback" (its done
            # callback calls task.exception() on a cancelled task; 3.12 checks cancelled() first).
            pass
        finally:
            self.closed += 1
            writer.close()


def answer(body: bytes = b'{"ok":true}', *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


def fixed(data: bytes, close: bool = False) -> Reply:
    async def reply(conn: Conn, request: bytes) -> None:
        conn.writer.write(data)
        await conn.writer.drain()
        if close:
            conn.writer.close()

    return reply


def client(**options: Any) -> Client:
    options.setdefault("connect_timeout_s", 5.0)
    options.setdefault("read_timeout_s", 5.0)
    return Client(**options)


def run(test: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(asyncio.wait_for(test(), 30))


async def until(condition: Callable[[], bool]) -> None:
    """Waits for something the other side does (a close); the test's own timeout bounds it."""
    while not condition():
        await asyncio.sleep(0.005)


# -- framing ---------------------------------------------------------------------------------------


def test_request_head_and_content_length_response() -> None:
    async def test() -> None:
        async with Server(fixed(answer(b"hello"))) as server:
            http = client()
            headers = [("Authorization", "Bearer sk-x"), ("X-Name", "Zoë")]
            response = await http.request("POST", server.url("/v1/x?a=%20b"), headers, b'{"m":1}')
            assert (response.status, response.header(b"content-type"), response.content_length) == (
                200, "application/json", 5)  # fmt: skip
            assert await response.read() == (b"hello", None)
            response.close()
            await http.close()
        assert server.requests == [
            b"POST /v1/x?a=%20b HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nAuthorization: Bearer sk-x\r\n"
            b'X-Name: Zo\xc3\xab\r\nContent-Length: 7\r\n\r\n{"m":1}'.replace(b"PORT", str(server.port).encode())
        ]

    run(test)


def test_empty_bodies_are_framed_as_aiohttp_does() -> None:
    async def test() -> None:
        async with Server(fixed(answer())) as server:
            http = client()
            for method in ("GET", "POST"):
                (await http.request(method, server.url(), [], b"")).close()
            await http.close()
        assert b"content-length" not in server.requests[0].lower()
        assert server.requests[1].endswith(b"Content-Length: 0\r\n\r\n")

    run(test)


def test_chunked_response_and_raw_headers_kept_as_sent() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Odd:  v\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"

    async def test() -> None:
        async with Server(fixed(wire)) as server:
            http = client()
            response = await http.request("POST", server.url(), [], b"{}")
            assert response.raw_headers == [(b"Transfer-Encoding", b"chunked"), (b"X-Odd", b"v")]
            assert [chunk async for chunk in response.chunks()] != []
            response.close()
            again = await http.request("POST", server.url(), [], b"{}")
            assert b"".join([chunk async for chunk in again.chunks()]) == b"hello world"
            again.close()
            await http.close()
            assert server.connections == 1  # the chunked body ended where it said: reused

    run(test)


def test_gzip_is_relayed_as_received() -> None:
    packed = gzip.compress(b'{"usage":{"total_tokens":3}}' * 50)

    async def test() -> None:
        async with Server(fixed(answer(packed, b"Content-Encoding: gzip"))) as server:
            http = client()
            response = await http.request("POST", server.url(), [("Accept-Encoding", "gzip")], b"{}")
            assert response.header(b"content-encoding") == "gzip"
            assert (await response.read()).data == packed
            response.close()
            await http.close()

    run(test)


def test_body_until_close_and_interim_responses() -> None:
    wire = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the end"

    async def test() -> None:
        async with Server(fixed(wire, close=True)) as server:
            http = client()
            response = await http.request("POST", server.url(), [], b"{}")
            assert (response.status, response.raw_headers) == (200, [(b"X-A", b"1")])
            assert await response.read() == (b"until the end", None)
            response.close()
            (await http.request("POST", server.url(), [], b"{}")).close()
            await http.close()
            assert server.connections == 2

    run(test)


def test_header_lookups_take_the_first_value_and_skip_interim_heads() -> None:
    wire = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nConnection: x-early\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: keep-alive, X-Hop\r\nx-a: 2\r\nCONNECTION: x-other\r\n"
        b"Content-Length: 2\r\n\r\nok"
    )

    async def test() -> None:
        async with Server(fixed(wire)) as server:
            http = client()
            response = await http.request("POST", server.url(), [], b"{}")
            assert (response.header(b"x-a"), response.header(b"link"), response.content_length) == ("1", None, 2)
            assert response.connection == [b"keep-alive, X-Hop", b"x-other"]
            assert await response.read() == (b"ok", None)
            response.close()
            await http.close()

    run(test)


def test_head_response_has_no_body_whatever_it_declares() -> None:
    async def test() -> None:
        async with Server(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")) as server:
            http = client()
            response = await http.request("HEAD", server.url(), [], b"")
            assert (response.content_length, await response.read()) == (50, (b"", None))
            response.close()
            await http.close()

    run(test)


def test_large_bodies_both_ways_with_a_slow_reader() -> None:
    big = bytes(range(256)) * 8192  # 2 MiB, past the read pause threshold

    async def echo(conn: Conn, request: bytes) -> None:
        body = request.split(b"\r\n\r\n", 1)[1]
        conn.writer.write(answer(body))
        await conn.writer.drain()

    async def test() -> None:
        async with Server(echo) as server:
            http = client()
            response = await http.request("POST", server.url(), [], big)
            parts = []
            async for chunk in response.chunks():
                parts.append(chunk)
                await asyncio.sleep(0.001)
            assert b"".join(parts) == big
            response.close()
            await http.close()

    run(test)


def test_header_injection_is_refused_before_anything_is_sent() -> None:
    async def test() -> None:
        async with Server(fixed(answer())) as server:
            http = client()
            for name, value in (("X-A", "v\r\nX-Injected: 1"), ("X-A\nB", "v")):
                with pytest.raises(ValueError):
                    await http.request("POST", server.url(), [(name, value)], b"{}")
            await http.close()
            assert server.connections == 0

    run(test)


# -- keep-alive ------------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection_and_closes_unread_ones() -> None:
    async def test() -> None:
        async with Server(fixed(answer(b"x" * 1000))) as server:
            http = client()
            for _ in range(3):
                response = await http.request("POST", server.url(), [], b"{}")
                await response.read()
                response.close()
            assert server.connections == 1
            unread = await http.request("POST", server.url(), [], b"{}")
            unread.close()  # its body was not read: the connection cannot carry another response
            await until(lambda: server.closed == 1)
            (await http.request("POST", server.url(), [], b"{}")).close()
            assert server.connections == 2
            await http.close()

    run(test)


def test_connection_close_header_is_obeyed() -> None:
    async def test() -> None:
        async with Server(fixed(answer(b"x", b"Connection: close"))) as server:
            http = client()
            for _ in range(2):
                response = await http.request("POST", server.url(), [], b"{}")
                await response.read()
                response.close()
            await http.close()
            assert server.connections == 2

    run(test)


def test_idle_connections_close_after_the_idle_timeout() -> None:
    async def slow(conn: Conn, request: bytes) -> None:
        await asyncio.sleep(0.05)
        await fixed(answer())(conn, request)

    async def test() -> None:
        async with Server(slow) as server:
            http = client(idle_timeout_s=0.2)

            async def call() -> None:
                response = await http.request("POST", server.url(), [], b"{}")
                await response.read()
                response.close()

            await asyncio.gather(call(), call(), call())
            assert server.connections == 3
            await asyncio.sleep(0.1)
            assert server.closed == 0  # all three kept while idle
            await until(lambda: server.closed == 3)  # and closed past the idle timeout
            await call()
            assert server.connections == 4
            await http.close()

    run(test)


def test_a_burst_reuses_every_connection_the_last_burst_opened() -> None:
    # More calls at once than any fixed idle cap the pool had (100): the second burst opens none.
    burst = 150

    async def slow(conn: Conn, request: bytes) -> None:
        await asyncio.sleep(0.05)
        await fixed(answer())(conn, request)

    async def test() -> None:
        async with Server(slow) as server:
            http = client()

            async def call() -> None:
                response = await http.request("POST", server.url(), [], b"{}")
                assert await response.read() == (b'{"ok":true}', None)
                response.close()

            for _ in range(2):
                await asyncio.gather(*(call() for _ in range(burst)))
            assert server.connections == burst
            assert server.closed == 0
            await http.close()

    run(test)


def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    async def test() -> None:
        async with Server(fixed(answer(), close=True)) as server:
            http = client()
            response = await http.request("POST", server.url(), [], b"{}")
            await response.read()
            response.close()
            await until(lambda: server.closed == 1)
            await asyncio.sleep(0.05)  # the FIN reaches the client's event loop
            response = await http.request("POST", server.url(), [], b"{}")
            assert await response.read() == (b'{"ok":true}', None)
            response.close()
            await http.close()

    run(test)


def test_a_stale_connection_is_retried_only_for_idempotent_methods() -> None:
    """The provider closes a pooled connection when the next request arrives (no FIN before it)."""

    async def once(conn: Conn, request: bytes) -> None:
        conn.served += 1
        if conn.served == 2:
            conn.writer.transport.abort()  # the second request on a connection: hang up on it
            return
        await fixed(answer())(conn, request)

    async def test() -> None:
        async with Server(once) as server:
            http = client()
            for method, succeeds in (("GET", True), ("POST", False)):
                await http.close()  # a fresh connection: its first request is answered
                first = await http.request(method, server.url(), [], b"")
                await first.read()
                first.close()
                if succeeds:
                    response = await http.request(method, server.url(), [], b"")
                    assert response.status == 200
                    response.close()
                else:
                    with pytest.raises(UpstreamDisconnected):
                        await http.request(method, server.url(), [], b"")
            await http.close()

    run(test)


# -- timeouts and cuts -----------------------------------------------------------------------------


def test_connect_timeout_covers_resolution_and_the_tls_handshake() -> None:
    async def never(host: str, port: int) -> list[str]:
        await asyncio.Event().wait()
        return []

    async def silent(conn: Conn, request: bytes) -> None:
        await asyncio.Event().wait()

    async def test() -> None:
        http = client(connect_timeout_s=0.1, resolver=never)
        with pytest.raises(TimeoutError):
            await http.request("POST", URL("http://provider.example/v1"), [], b"{}")
        async with Server(silent) as server:  # speaks no TLS: the handshake never completes
            with pytest.raises(TimeoutError):
                await client(connect_timeout_s=0.1).request("POST", server.url(scheme="https"), [], b"{}")

    run(test)


def test_read_timeout_before_the_head_and_mid_body() -> None:
    async def stall(conn: Conn, request: bytes) -> None:
        if b"/head" not in request:
            conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst part")
        await asyncio.Event().wait()

    async def test() -> None:
        async with Server(stall) as server:
            http = client(read_timeout_s=0.1)
            with pytest.raises(TimeoutError):
                await http.request("POST", server.url("/head"), [], b"{}")
            response = await http.request("POST", server.url(), [], b"{}")
            data, failure = await response.read()
            assert data == b"first part" and isinstance(failure, TimeoutError)
            response.close()
            response = await http.request("POST", server.url(), [], b"{}")
            got = []
            with pytest.raises(TimeoutError):
                async for chunk in response.chunks():
                    got.append(chunk)
            assert b"".join(got) == b"first part"
            response.close()
            await http.close()

    run(test)


def test_read_timeout_on_a_reused_connection_counts_from_its_own_request() -> None:
    """A connection's stall timer carries over from one response to the next: the second response
    on it still times out, and no earlier than its own request's timeout."""

    async def slow_then_silent(conn: Conn, request: bytes) -> None:
        conn.served += 1
        if conn.served == 1:
            await asyncio.sleep(0.15)  # most of the first response's timeout used up
            conn.writer.write(answer())
        else:
            await asyncio.Event().wait()

    async def test() -> None:
        async with Server(slow_then_silent) as server:
            http = client(read_timeout_s=0.2)
            response = await http.request("POST", server.url(), [], b"{}")
            assert (await response.read()).failure is None
            response.close()
            loop = asyncio.get_running_loop()
            sent = loop.time()
            with pytest.raises(TimeoutError):
                await http.request("POST", server.url(), [], b"{}")
            assert loop.time() - sent >= 0.19  # not the first request's timer, 0.05 s after this one
            assert server.connections == 1
            await http.close()

    run(test)


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ndata: one\n\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\ndata: one\n\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_a_provider_that_closes_mid_body_hands_out_what_arrived_then_the_cut(wire: bytes) -> None:
    async def test() -> None:
        async with Server(fixed(wire, close=True)) as server:
            http = client()
            response = await http.request("POST", server.url(), [], b"{}")
            data, failure = await response.read()
            assert data == b"data: one\n\n" and isinstance(failure, UpstreamDisconnected)
            response.close()
            response = await http.request("POST", server.url(), [], b"{}")
            got = []
            with pytest.raises(UpstreamDisconnected):
                async for chunk in response.chunks():
                    got.append(chunk)
            assert got == [b"data: one\n\n"]
            response.close()
            await http.close()

    run(test)


# -- forwarding: a waiting reader's bytes handed on from the connection's callback ----------------


def _paced(pieces: asyncio.Queue[bytes | None]) -> Reply:
    """A chunked event stream whose pieces the test hands out one at a time (None ends it)."""

    async def reply(conn: Conn, request: bytes) -> None:
        conn.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        while (piece := await pieces.get()) is not None:
            conn.writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
            await conn.writer.drain()
        conn.writer.write(b"0\r\n\r\n")
        await conn.writer.drain()

    return reply


def test_a_waiting_reader_has_each_read_forwarded_until_forward_declines_or_fails() -> None:
    async def test() -> None:
        pieces: asyncio.Queue[bytes | None] = asyncio.Queue()
        async with Server(_paced(pieces)) as server:
            http = client()
            forwarded: list[bytes] = []
            answers = {b"e2": True, b"e3": False, b"e5": True}

            def forward(data: bytes) -> bool:
                forwarded.append(data)
                if data == b"e6":
                    raise ValueError("the client side broke")
                return answers[data]

            response = await http.request("POST", server.url(), [], b"{}")
            read: list[bytes] = []

            async def reader() -> None:
                async for chunk in response.chunks():
                    read.append(chunk)
                    response.forward = forward  # as respond.relay sets it once a chunk is sent

            task = asyncio.ensure_future(reader())
            for count, piece in enumerate((b"e1", b"e2", b"e3", b"e4", b"e5", b"e6"), 1):
                await pieces.put(piece)  # the next once this one has been taken one way or the other
                await until(lambda n=count: len(read) + len(forwarded) == n)  # type: ignore[misc]
            with pytest.raises(ValueError, match="the client side broke"):
                await task
            # e1 before forward was set; e4 after forward declined e3; e6's error raised in the reader.
            assert read == [b"e1", b"e4"] and forwarded == [b"e2", b"e3", b"e5", b"e6"]
            assert response.forward is None
            response.close()
            await http.close()

    run(test)


def test_the_last_read_and_the_end_go_to_the_reader_together() -> None:
    async def test() -> None:
        wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\ne1\r\n"
        end = asyncio.Event()

        async def reply(conn: Conn, request: bytes) -> None:
            conn.writer.write(wire)
            await end.wait()
            conn.writer.write(b"2\r\ne2\r\n0\r\n\r\n")  # one read: the last bytes and the end

        async with Server(reply) as server:
            http = client()
            response = await http.request("POST", server.url(), [], b"{}")
            read: list[tuple[bytes, bool]] = []
            async for chunk in response.chunks():
                read.append((chunk, response.ended))
                response.forward = lambda data: pytest.fail("forwarded the last bytes")  # type: ignore[misc]
                end.set()
            assert read == [(b"e1", False), (b"e2", True)]
            response.close()
            await http.close()

    run(test)


def test_a_response_that_is_not_http_is_a_disconnect() -> None:
    async def test() -> None:
        async with Server(fixed(b"SSH-2.0-OpenSSH\r\n\r\n")) as server:
            with pytest.raises(UpstreamDisconnected):
                await client().request("POST", server.url(), [], b"{}")

    run(test)


def test_cancelled_mid_body_closes_the_connection() -> None:
    async def test() -> None:
        async with Server(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")) as server:
            http = client()
            response = await http.request("POST", server.url(), [], b"{}")
            reading = asyncio.ensure_future(response.read())
            await asyncio.sleep(0.01)
            reading.cancel()
            response.close()
            await until(lambda: server.closed == 1)
            await http.close()

    run(test)


# -- addresses -------------------------------------------------------------------------------------


def test_ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")

    async def test() -> None:
        async with Server(fixed(answer(b"six")), host="::1") as server:
            http = client()
            response = await http.request("POST", server.url(), [], b"{}")
            assert (await response.read()).data == b"six"
            response.close()
            await http.close()
        assert f"Host: [::1]:{server.port}\r\n".encode() in server.requests[0]

    run(test)


def test_public_only_refuses_before_connecting() -> None:
    answers = {"loopback.example": ["127.0.0.1"], "mixed.example": ["8.8.8.8", "10.0.0.1"],
               "mapped.example": ["::ffff:127.0.0.1"], "public.example": ["8.8.8.8", "2001:4860:4860::8888"]}  # fmt: skip
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[host]

    async def test() -> None:
        async with Server(fixed(answer())) as server:
            http = client(public_only=True, resolver=resolver)
            for host in ("loopback.example", "mixed.example", "mapped.example", "127.0.0.1", "[::1]"):
                with pytest.raises(ForbiddenAddress):
                    await http.request("POST", server.url(host=host), [], b"{}")
            assert server.connections == 0
            # Refused answers are not cached: asked again next time.
            with pytest.raises(ForbiddenAddress):
                await http.request("POST", server.url(host="loopback.example"), [], b"{}")
            assert asked.count("loopback.example") == 2
            assert await http._addresses("public.example", 443) == answers["public.example"]
            # The same client without the check connects to loopback.
            plain = client(resolver=resolver)
            (await plain.request("POST", server.url(host="loopback.example"), [], b"{}")).close()
            await plain.close()

    run(test)


# -- TLS -------------------------------------------------------------------------------------------


def _certificates(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    """A test CA and a server certificate for `localhost` only (no IP address in it)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relaylog test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (tmp / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp / "leaf.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "leaf.pem", tmp / "leaf.key")
    return server, tmp / "ca.pem"


def test_tls_checks_the_certificate_and_the_host_name(tmp_path: Path) -> None:
    server_tls, ca = _certificates(tmp_path)
    trusting = ssl.create_default_context(cafile=str(ca))

    async def localhost(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def test() -> None:
        async with Server(fixed(answer(b"secure")), tls=server_tls) as server:
            http = client(tls=trusting, resolver=localhost)
            for _ in range(2):
                response = await http.request("POST", server.url(scheme="https", host="localhost"), [], b"{}")
                assert (await response.read()).data == b"secure"
                response.close()
            assert server.connections == 1
            await http.close()
            # The certificate does not name 127.0.0.1; the system's CAs do not know the test CA.
            with pytest.raises(ssl.SSLCertVerificationError):
                await client(tls=trusting).request("POST", server.url(scheme="https"), [], b"{}")
            with pytest.raises(ssl.SSLCertVerificationError):
                await client(resolver=localhost).request(
                    "POST", server.url(scheme="https", host="localhost"), [], b"{}"
                )

    run(test)


def test_ip_literals_skip_the_resolver() -> None:
    async def refuse(host: str, port: int) -> list[str]:
        raise AssertionError("resolver asked for an address literal")

    async def test() -> None:
        async with Server(fixed(answer())) as server:
            http = client(resolver=refuse)
            (await http.request("POST", server.url(), [], b"{}")).close()
            await http.close()
        assert ipaddress.ip_address(server.host).is_loopback

    run(test)
