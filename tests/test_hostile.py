"""Hostile input (issue 6, item 3): SSRF, header injection, huge and slow heads, slow bodies,
path traversal, JSON bombs, invalid UTF-8 and a flood of bad relaylog keys, each refused the way
relaylog promises, with no provider call where none is due and a record for every request that
reached relaylog."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
import uvicorn
from relaylog import server
from relaylog.http_server import HeadLimits, HttpProtocol
from relaylog.relay.http1 import addresses, system_resolver
from relaylog.relay.http1.addresses import public
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
CHAT_BYTES = orjson.dumps(CHAT)


def _post(url: str, body: bytes = CHAT_BYTES, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url, content=body, headers={"content-type": "application/json", **(headers or {})}, timeout=30)


def _refused(proxy: RunningProxy, response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    """The response is relaylog's JSON error, and the call is on record with the same type."""
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == error_type
    record = proxy.record(response.headers["helicone-id"])
    assert record["status"] == status and record["error_type"] == error_type
    return record


class FakeDNS:
    """Answers for the `.test` names; everything else from the system resolver (/etc/hosts). A
    relay/http1 resolver: host name and port -> the addresses to try."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.asked: list[str] = []

    def set(self, name: str, *answers: list[str]) -> None:
        """Successive lookups of `name` get successive answers (the last one repeats)."""
        self.answers[name] = list(answers)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            return await system_resolver(host, port)
        queue = self.answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]


# -- SSRF ---------------------------------------------------------------------------------------

NAMES = ("localhost", "private.test", "mapped.test", "mixed.test", "nat64.test", "rebind.test")


@pytest.fixture(scope="module")
def ssrf(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProxy, FakeDNS]]:
    """A proxy whose allow-list names the stand-in by IP address and port (explicitly allowed)
    and a set of names that resolve to addresses that are not public."""
    standin.fault = None
    port = standin.url.rsplit(":", 1)[1]
    allow = (f"127.0.0.1:{port}", *(f"{name}:{port}" for name in NAMES))
    dns = FakeDNS()
    dns.set("private.test", ["10.0.0.7"])
    dns.set("mapped.test", ["::ffff:127.0.0.1"])
    dns.set("mixed.test", ["93.184.215.14", "127.0.0.1"])
    dns.set("nat64.test", ["64:ff9b::a9fe:a9fe"])
    with RunningProxy(
        tmp_path_factory.mktemp("ssrf"), standin.url, target_allowlist=allow, connect_timeout_s=2.0
    ) as proxy:
        proxy.app.upstream.target_resolver = dns
        yield proxy, dns


def _refused_targets(port: str) -> list[str]:
    return [
        # Names on the allow-list that resolve to loopback or private addresses.
        f"http://localhost:{port}",  # the system resolver: /etc/hosts
        f"http://private.test:{port}",
        f"http://mapped.test:{port}",  # IPv4-mapped IPv6 loopback
        f"http://mixed.test:{port}",  # one public answer does not excuse a private one
        f"http://nat64.test:{port}",  # NAT64 form of 169.254.169.254
        # Addresses not on the allow-list: metadata service, private ranges, loopback, any-address.
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://10.0.0.1",
        "http://172.16.0.1",
        "http://192.168.1.1",
        "http://[fc00::1]",
        f"http://[::1]:{port}",
        f"http://0.0.0.0:{port}",
        f"http://[::ffff:127.0.0.1]:{port}",
        f"http://[::ffff:7f00:1]:{port}",
        f"http://[fe80::1%25lo]:{port}",
        # The stand-in's own address, spelled the ways the C resolver also accepts.
        f"http://2130706433:{port}",
        f"http://0177.0.0.1:{port}",
        f"http://0x7f.0.0.1:{port}",
        f"http://0x7f000001:{port}",
        f"http://127.1:{port}",
        f"http://127.000.000.001:{port}",
        f"http://127.0.0.1.:{port}",
        # Right address, wrong port; other schemes; credentials and authority tricks.
        "http://127.0.0.1:1",
        "file:///etc/passwd",
        f"gopher://127.0.0.1:{port}/_GET",
        f"ftp://127.0.0.1:{port}/",
        f"ws://127.0.0.1:{port}/",
        "dict://127.0.0.1:11211/stats",
        f"http://user:secret@127.0.0.1:{port}",
        f"http://127.0.0.1:{port}\\@example.com",
        f"http://example.com@127.0.0.1:{port}",
    ]


def test_ssrf_targets_are_refused_before_any_connection(ssrf: tuple[RunningProxy, FakeDNS], standin: StandIn) -> None:
    proxy, _ = ssrf
    port = standin.url.rsplit(":", 1)[1]
    for target in _refused_targets(port):
        standin.clear()
        response = _post(proxy.url + "/v1/chat/completions", headers={"Helicone-Target-Url": target})
        assert response.status_code == 403, (target, response.text)
        _refused(proxy, response, 403, "target_not_allowed")
        assert standin.requests == [], target


def test_allow_listed_ip_address_is_used(ssrf: tuple[RunningProxy, FakeDNS], standin: StandIn) -> None:
    """An allow-list entry that is an IP address permits that address, loopback included."""
    proxy, _ = ssrf
    standin.clear()
    response = _post(proxy.url + "/v1/chat/completions", headers={"Helicone-Target-Url": standin.url})
    assert response.status_code == 200
    assert len(standin.requests) == 1


def test_fallback_targets_are_held_to_the_same_rules(ssrf: tuple[RunningProxy, FakeDNS], standin: StandIn) -> None:
    proxy, _ = ssrf
    port = standin.url.rsplit(":", 1)[1]
    for target in ("http://169.254.169.254", f"http://private.test:{port}", f"http://0x7f000001:{port}"):
        standin.clear()
        plan = orjson.dumps([{"target-url": target}]).decode()
        response = _post(proxy.url + "/v1/chat/completions", headers={"Helicone-Fallbacks": plan})
        _refused(proxy, response, 403, "target_not_allowed")
        assert standin.requests == []
    # A private name later in the list is refused when it is reached, and nothing is sent to it.
    standin.clear()
    plan = orjson.dumps(
        [
            {"target-url": standin.url, "headers": {"x-standin-fault": "status=500"}},
            {"target-url": f"http://mapped.test:{port}"},
        ]
    ).decode()
    response = _post(proxy.url + "/v1/chat/completions", headers={"Helicone-Fallbacks": plan})
    record = _refused(proxy, response, 403, "target_not_allowed")
    assert len(standin.requests) == 1  # only entry 0
    attempts = orjson.loads(record["attempts"])
    assert [(a["target"], a["error_type"]) for a in attempts] == [(0, None), (1, "target_not_allowed")]


def test_fallback_urls_and_headers_cannot_smuggle_control_characters(
    ssrf: tuple[RunningProxy, FakeDNS], standin: StandIn
) -> None:
    """The upstream client refuses control characters in a request line or header (a 500 if unchecked)."""
    proxy, _ = ssrf
    standin.clear()
    for url in (standin.url + "/x\x00y", standin.url + "/a b", standin.url + "/\u00e9"):
        plan = json.dumps([{"target-url": url}])  # ASCII: escapes the characters in the JSON text
        _refused(
            proxy,
            _post(proxy.url + "/v1/chat/completions", headers={"Helicone-Fallbacks": plan}),
            403,
            "target_not_allowed",
        )
    for value in ("a\x7fb", "a\x0bb", "a\x1bb", "a\rb"):
        # Escaped in the JSON text (DEL too, which JSON writers leave as it is).
        plan = json.dumps([{"target-url": standin.url, "headers": {"x-a": value}}]).replace("\x7f", "\\u007f")
        _refused(
            proxy,
            _post(proxy.url + "/v1/chat/completions", headers={"Helicone-Fallbacks": plan}),
            400,
            "invalid_request",
        )
    assert standin.requests == []


def test_dns_rebinding_is_caught_where_the_connection_is_made(
    ssrf: tuple[RunningProxy, FakeDNS], standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rebind.test first answers a "public" address (here the stand-in on 127.0.0.1, deemed public
    for this test), then, once its TTL has run out, an internal service on 127.0.0.2. There is no
    check-then-connect gap to exploit: the addresses checked are the addresses connected to."""
    proxy, dns = ssrf
    monkeypatch.setattr(addresses, "public", lambda address: str(address) == "127.0.0.1")
    internal = socket.socket()
    port = standin.url.rsplit(":", 1)[1]
    internal.bind(("127.0.0.2", int(port)))  # where the stand-in's port leads after the rebinding
    internal.listen(8)
    internal.setblocking(False)
    dns.set("rebind.test", ["127.0.0.1"], ["127.0.0.2"])
    try:
        standin.clear()
        target = {"Helicone-Target-Url": f"http://rebind.test:{port}"}
        first = _post(proxy.url + "/v1/chat/completions", headers=target)
        assert first.status_code == 200 and len(standin.requests) == 1
        # The TTL runs out: the cached answer and the pooled connection are gone.
        asyncio.run_coroutine_threadsafe(_forget(proxy), proxy.loop).result(5)
        second = _post(proxy.url + "/v1/chat/completions", headers=target)
        _refused(proxy, second, 403, "target_not_allowed")
        assert len(standin.requests) == 1
        with pytest.raises(BlockingIOError):
            internal.accept()  # nothing ever connected to the internal service
    finally:
        internal.close()


async def _forget(proxy: RunningProxy) -> None:
    await proxy.app.upstream.close()  # the next call makes new clients, on the same resolver


def test_upstream_overrides_stay_trusted(make_proxy: Callable[..., RunningProxy], standin: StandIn) -> None:
    """RELAYLOG_UPSTREAM_<PROVIDER> is the operator's own configuration: a name there may point at
    loopback, and a Target-Url at that same origin is trusted like it."""
    port = standin.url.rsplit(":", 1)[1]
    origin = f"http://localhost:{port}"
    proxy = make_proxy(origin, target_allowlist=(f"localhost:{port}",))
    standin.clear()
    assert _post(proxy.url + "/v1/chat/completions").status_code == 200
    assert _post(proxy.url + "/v1/chat/completions", headers={"Helicone-Target-Url": origin}).status_code == 200
    assert len(standin.requests) == 2


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("93.184.215.14", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.31.255.255", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),  # multicast
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fc00::1", False),
        ("fd12:3456::1", False),
        ("fe80::1", False),
        ("fec0::1", False),  # site-local
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.215.14", False),  # mapped addresses are never what a public name resolves to
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:5db8:d70e::", True),  # 6to4 of 93.184.215.14
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo to 127.0.0.1
    ],
)
def test_public_addresses(address: str, expected: bool) -> None:
    import ipaddress

    assert public(ipaddress.ip_address(address)) is expected


# -- header injection, huge and slow heads ------------------------------------------------------


class LimitedProxy(RunningProxy):
    """RunningProxy served the way `relaylog serve` serves: its HttpProtocol, small limits."""

    def __init__(self, data_dir: Path, upstream_url: str, limits: HeadLimits, **settings: Any) -> None:
        super().__init__(data_dir, upstream_url, **settings)
        protocol = type("TestProtocol", (HttpProtocol,), {"limits": limits})
        config = uvicorn.Config(
            self.app, loop="uvloop", http=protocol, lifespan="on", access_log=False, log_level="warning",
            server_header=False, date_header=False,
        )  # fmt: skip
        self._server = uvicorn.Server(config)


LIMITS = HeadLimits(timeout_s=0.5, max_bytes=16 * 1024, max_count=50)


@pytest.fixture(scope="module")
def guarded(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedProxy]:
    standin.fault = None
    with LimitedProxy(tmp_path_factory.mktemp("guarded"), standin.url, LIMITS, body_timeout_s=0.5) as proxy:
        yield proxy


def _raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(timeout)
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _head(extra: bytes = b"", path: bytes = b"/v1/chat/completions", body: bytes = CHAT_BYTES) -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: relaylog\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + extra + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def _trickle(sock: socket.socket, byte: bytes, times: int) -> bytes:
    """Send `byte` every 50 ms until the server answers (or `times` bytes); then read its answer.
    Sending stops as soon as there is something to read, so no byte arrives after the server
    closed (which would make its kernel reset the connection and drop the answer)."""
    for _ in range(times):
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable:
            break
        try:
            sock.sendall(byte)
        except OSError:
            break
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    return answer


def _json_error(raw: bytes) -> tuple[int, dict[str, Any], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body)["error"], head


def test_line_breaks_in_header_values_never_reach_relaylog(guarded: LimitedProxy, standin: StandIn) -> None:
    """httptools refuses CR, LF, obs-fold continuations, NUL and other controls in a header value
    with uvicorn's plain 400 before relaylog sees the request: nothing is relayed or recorded. What
    does pass (tab, bytes above 0x7f) is stored as JSON text and never echoed in a response header."""
    guarded.settle()  # earlier tests' records are all written
    before = len(guarded.records())
    standin.clear()
    for extra in (
        b"Helicone-Property-Team: a\rInjected: 1\r\n",
        b"Helicone-Property-Team: a\nInjected: 1\r\n",
        b"Helicone-User-Id: alice\r\n Injected: 1\r\n",  # obs-fold
        b"Helicone-User-Id: alice\x00Injected: 1\r\n",
        b"Helicone-User-Id: alice\x0bx\r\n",
        b"Helicone-User-Id: alice\x7fx\r\n",
        b"X-Custom: a\r\r\n",
    ):
        raw = _raw(guarded.port, _head(extra))
        assert raw.startswith(b"HTTP/1.1 400 "), (extra, raw)
    assert standin.requests == []
    guarded.settle()
    assert len(guarded.records()) == before

    extra = b"Helicone-Property-Team: a\tb\xc3\xa9\r\nHelicone-User-Id: x\ty\r\nHelicone-Request-Id: \tInjected\r\n"
    raw = _raw(guarded.port, _head(extra))
    head = raw.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 ")
    request_id = next(
        line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"helicone-id:")
    )
    uuid.UUID(request_id.decode())  # a fresh UUID, not the injected text
    assert b"Injected" not in head
    record = guarded.record(request_id.decode())
    assert record["properties"] == {"team": "a\tbé"} and record["user_id"] == "x\ty"


def test_too_many_headers_get_431(guarded: LimitedProxy, standin: StandIn) -> None:
    standin.clear()
    for name in (b"X-Filler", b"Helicone-Property-P"):
        many = b"".join(name + b"%d: v\r\n" % i for i in range(LIMITS.max_count + 10))
        status, error, head = _json_error(_raw(guarded.port, _head(many)))
        assert status == 431 and error["type"] == "headers_too_large" and b"connection: close" in head
    assert standin.requests == []


def test_huge_headers_get_431_and_memory_stays_bounded(guarded: LimitedProxy, standin: StandIn) -> None:
    standin.clear()
    # One header over the limit, complete.
    status, error, _ = _json_error(_raw(guarded.port, _head(b"X-Big: " + b"a" * (2 * LIMITS.max_bytes) + b"\r\n")))
    assert status == 431 and error["type"] == "headers_too_large"
    # A header that never ends: the server answers and closes once the limit is passed, long
    # before the 64 MB the client meant to send. Without the guard httptools buffers all of it.
    sent = 0
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.settimeout(5)
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: relaylog\r\nX-Endless: ")
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = sock.recv(65536)
        except ConnectionResetError:
            answer = b""  # the reset can overtake the answer; the early close is the point
    assert sent < 8 * 1024 * 1024, sent
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
    print(f"\nendless header: connection closed after {sent // 1024} KiB sent (limit {LIMITS.max_bytes // 1024} KiB)")
    assert standin.requests == []


def test_slow_headers_time_out_while_others_are_served(guarded: LimitedProxy, standin: StandIn) -> None:
    standin.clear()
    outcome: dict[str, Any] = {}

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
            sock.settimeout(5)
            began = time.monotonic()
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: relaylog\r\n")
            answer = _trickle(sock, b"X", 50)  # a header byte every 50 ms: 2.5 s if nobody stops it
            outcome["answer"], outcome["seconds"] = answer, time.monotonic() - began

    def idle() -> None:
        with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
            sock.settimeout(5)
            began = time.monotonic()
            outcome["idle"] = sock.recv(1)
            outcome["idle_seconds"] = time.monotonic() - began

    threads = [threading.Thread(target=trickle), threading.Thread(target=idle)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    served = _post(guarded.url + "/v1/chat/completions")  # others are served meanwhile
    for thread in threads:
        thread.join(10)
    assert served.status_code == 200
    status, error, _ = _json_error(outcome["answer"])
    assert status == 408 and error["type"] == "request_timeout"
    assert LIMITS.timeout_s <= outcome["seconds"] < LIMITS.timeout_s + 1.0
    assert outcome["idle"] == b"" and LIMITS.timeout_s <= outcome["idle_seconds"] < LIMITS.timeout_s + 1.0
    print(
        f"\nslow head: 408 after {outcome['seconds']:.2f} s; silent connection closed after {outcome['idle_seconds']:.2f} s"
    )
    assert len(standin.requests) == 1


def test_slow_body_times_out_with_a_408_and_a_record(guarded: LimitedProxy, standin: StandIn) -> None:
    standin.clear()
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.settimeout(5)
        began = time.monotonic()
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: relaylog\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"model":'
        )
        answer = _trickle(sock, b" ", 60)  # a body byte every 50 ms
        seconds = time.monotonic() - began
    status, error, head = _json_error(answer)
    assert status == 408 and error["type"] == "request_timeout"
    assert b"connection: close" in head
    assert 0.5 <= seconds < 2.0
    print(f"\nslow body: 408 after {seconds:.2f} s (RELAYLOG_BODY_TIMEOUT=0.5)")
    request_id = next(line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.startswith(b"helicone-id:"))
    record = guarded.record(request_id.decode())
    assert record["status"] == 408 and record["error_type"] == "request_timeout"
    assert standin.requests == []


def test_relaylog_serve_uses_the_guarded_protocol(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[uvicorn.Config] = []

    def serve(self: uvicorn.Server, sockets: list[Any]) -> None:  # the configuration, not the serving
        seen.append(self.config)
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", serve)
    monkeypatch.setenv("RELAYLOG_MAX_HEADER_BYTES", "12345")
    server.run(data_dir=tmp_path, port=0)
    (config,) = seen
    assert config.http is HttpProtocol
    assert config.h11_max_incomplete_event_size == 12345


# -- path traversal ---------------------------------------------------------------------------


def test_dot_segments_are_refused(proxy: RunningProxy, standin: StandIn) -> None:
    for path in (
        "/openai/../anthropic/v1/messages",
        "/openai/%2e%2e/anthropic/v1/messages",
        "/openai/%2E%2e/x",
        "/openai/..%2fadmin",
        "/openai/..%5cadmin",
        "/v1/./chat/completions",
        "/v1/.%2E/x",
        "/azure/res/../other/x",
    ):
        raw = _raw(proxy.port, _head(path=path.encode()))
        status, error, head = _json_error(raw)
        assert (status, error["type"]) == (400, "invalid_path"), path
    assert standin.requests == []


def test_paths_cannot_change_the_upstream_host(proxy: RunningProxy, standin: StandIn) -> None:
    standin.clear()
    status, error, _ = _json_error(_raw(proxy.port, _head(path=b"//evil.example/v1/chat/completions")))
    assert (status, error["type"]) == (404, "unknown_provider")
    # After a prefix, "//host" is only a path on the provider's own origin (the stand-in here).
    raw = _raw(proxy.port, _head(path=b"/openai//evil.example/v1/chat/completions"))
    assert standin.requests[-1].path == "//evil.example/v1/chat/completions"
    # An absolute-form request target: only its path is used.
    raw = _raw(proxy.port, _head(path=b"http://evil.example/v1/chat/completions"))
    assert raw.startswith(b"HTTP/1.1 200 ") and standin.requests[-1].path == "/v1/chat/completions"
    assert len(standin.requests) == 2


def test_request_ids_stay_uuids(proxy: RunningProxy) -> None:
    given = uuid.uuid4()
    for sent, kept in (
        ("../../etc/passwd", False),
        ("a" * 10_000, False),
        (f"{given}/../x", False),
        (f"{{{given}}}", True),
        (f"urn:uuid:{given}", True),
        (given.hex.upper(), True),
    ):
        response = _post(proxy.url + "/v1/chat/completions", headers={"Helicone-Request-Id": sent})
        returned = response.headers["helicone-id"]
        assert str(uuid.UUID(returned)) == returned
        assert (returned == str(given)) is kept, sent
        assert proxy.record(returned)["status"] == 200


def test_body_refs_outside_the_data_dir_are_not_followed(
    make_proxy: Callable[..., RunningProxy], standin: StandIn, tmp_path: Path
) -> None:
    proxy = make_proxy(body_inline_max=16)
    response = _post(proxy.url + "/v1/chat/completions")
    record = proxy.record(response.headers["helicone-id"])
    assert record["request_body_ref"] and record["request_body"] is None
    secret = tmp_path / "outside.txt"
    secret.write_text("not for the query API")
    (proxy.data_dir / "link.request").symlink_to(secret)
    forged = []
    for ref in ("../outside.txt", str(secret), "link.request", "raw/../../outside.txt"):
        forged.append({**record, "request_id": str(uuid.uuid4()), "request_body_ref": ref})
    day = proxy.data_dir / "raw" / f"dt={record['dt']}" / f"hour={record['hour']}"
    (day / "forged.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in forged))
    for row in forged:
        shown = httpx.get(f"{proxy.url}/api/v1/requests/{row['request_id']}").json()["data"]
        assert shown["request_body"] is None, row["request_body_ref"]
    genuine = httpx.get(f"{proxy.url}/api/v1/requests/{record['request_id']}").json()["data"]
    assert genuine["request_body"] == CHAT_BYTES.decode()


# -- JSON bombs and invalid UTF-8 ---------------------------------------------------------------


BOMBS = {
    "deep arrays": b'{"model":"gpt-4o-mini","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "just past orjson's depth": b'{"model":"gpt-4o-mini","x":' + b"[" * 1025 + b"]" * 1025 + b"}",
    "deep objects": b'{"model":"gpt-4o-mini","x":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}",
    "1e999": b'{"model":"gpt-4o-mini","temperature":1e999,"messages":[]}',
    "huge integer": b'{"model":"gpt-4o-mini","seed":' + b"9" * 100_000 + b',"messages":[]}',
    "long string": b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"a" * 5_000_000 + b'"}]}',
    "invalid UTF-8": b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\xff\xfe\xc3"}]}',
    "lone surrogate escape": b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"\\ud800"}]}',
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_json_bombs_are_relayed_unchanged_and_recorded(name: str, proxy: RunningProxy, standin: StandIn) -> None:
    body = BOMBS[name]
    for stream in (False, True):
        standin.clear()
        sent = body.replace(b'"model":"gpt-4o-mini"', b'"model":"gpt-4o-mini","stream":true') if stream else body
        response = _post(proxy.url + "/v1/chat/completions", sent)
        record = proxy.record(response.headers["helicone-id"])
        received = standin.requests[-1].body
        if stream and record["parse_error"] is None:
            assert b'"stream_options":{"include_usage":true}' in received  # a body it could read
        else:
            assert received == sent  # unchanged; what could not be read is said in parse_error
            assert name == "long string" or "request: " in record["parse_error"]
        assert record["status"] == response.status_code and record["model"] == "gpt-4o-mini"
        assert record["request_bytes"] == len(sent)
        assert record["error_type"] in (None, "upstream_error")


def test_deep_bodies_with_gateway_features_are_answered_not_crashed(
    ssrf: tuple[RunningProxy, FakeDNS], standin: StandIn
) -> None:
    """orjson reads 1024 levels but writes only 254: the paths that write a body back once raised."""
    proxy, _ = ssrf
    deep = b'{"model":"gpt-4o-mini","messages":[],"x":' + b"[" * 300 + b"]" * 300 + b"}"
    plan = orjson.dumps([{"target-url": standin.url, "bodyKeyOverride": {"model": "gpt-4o"}}]).decode()
    standin.clear()
    response = _post(proxy.url + "/v1/chat/completions", deep, headers={"Helicone-Fallbacks": plan})
    _refused(proxy, response, 400, "invalid_request")
    cached = _post(
        proxy.url + "/v1/chat/completions",
        deep,
        headers={"Helicone-Cache-Enabled": "true", "Helicone-Cache-Ignore-Keys": "x"},
    )
    assert cached.status_code < 500 and cached.headers["helicone-cache"] == "MISS"
    assert standin.requests[-1].body == deep
    override = orjson.dumps([{"target-url": standin.url, "bodyKeyOverride": {"a": {"b": 1}} | _nested(40)}]).decode()
    _refused(
        proxy,
        _post(proxy.url + "/v1/chat/completions", headers={"Helicone-Fallbacks": override}),
        400,
        "invalid_request",
    )


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"n": value}
    return {"deep": value}


def test_header_values_that_are_not_ascii(proxy: RunningProxy, standin: StandIn) -> None:
    """UTF-8 header bytes reach the provider unchanged and are recorded as text; other bytes are
    relayed as the UTF-8 of their Latin-1 characters (aiohttp writes header text as UTF-8 only)."""
    standin.clear()
    raw = _raw(
        proxy.port,
        _head(
            b"X-Title: caf\xc3\xa9 \xe2\x9c\x93\r\nX-Legacy: caf\xe9\r\nHelicone-Property-Place: Z\xc3\xbcrich\r\nHelicone-User-Id: \xff\xfe\r\n"
        ),
    )
    head = raw.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 ")
    got = {name.lower(): value.encode("latin-1") for name, value in standin.requests[-1].headers}
    assert got["x-title"] == b"caf\xc3\xa9 \xe2\x9c\x93"
    assert got["x-legacy"] == b"caf\xc3\xa9"
    request_id = next(line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.startswith(b"helicone-id:"))
    record = proxy.record(request_id.decode())
    assert record["properties"]["place"] == "Zürich" and record["user_id"] == "\xff\xfe"


# -- a flood of bad relaylog keys ---------------------------------------------------------------


@pytest.mark.slow
def test_bad_keys_are_rejected_cheaply_without_a_provider_call(
    make_proxy: Callable[..., RunningProxy], standin: StandIn
) -> None:
    proxy = make_proxy()
    proxy.keys.create("ci")
    standin.clear()
    # In process, without sockets: what relaylog itself spends on one rejection (record included).
    count = 2000
    seconds = asyncio.run(_reject_in_process(proxy, count))
    per_call_us = seconds / count * 1e6
    # Over HTTP, concurrently: every one refused, none relayed, each recorded.
    flood = 2000

    async def send_all() -> list[tuple[int, str, str]]:
        # aiohttp writes a small request in one segment with TCP_NODELAY; httpx's two writes meet
        # delayed ACKs and would measure 40 ms of client-side waiting per call instead.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as client:

            async def one(i: int) -> tuple[int, str, str]:
                headers = {"helicone-auth": f"Bearer rl-wrong-{i}", "content-type": "application/json"}
                async with client.post(proxy.url + "/v1/chat/completions", data=CHAT_BYTES, headers=headers) as got:
                    return got.status, orjson.loads(await got.read())["error"]["type"], got.headers["helicone-id"]

            return await asyncio.gather(*(one(i) for i in range(flood)))

    began = time.perf_counter()
    responses = asyncio.run(send_all())
    http_seconds = time.perf_counter() - began
    assert all(status == 401 and kind == "unauthorized" for status, kind, _ in responses)
    assert standin.requests == []
    ids = {request_id for _, _, request_id in responses}
    records = [r for r in proxy.wait_records(count + flood) if r["request_id"] in ids]
    assert len(records) == flood and all(r["error_type"] == "unauthorized" for r in records)
    print(
        f"\nbad-key rejection: {per_call_us:.1f} us each in process (record included), "
        f"{flood / http_seconds:.0f}/s over HTTP with 32 connections"
    )
    assert per_call_us < 2000


async def _reject_in_process(proxy: RunningProxy, count: int) -> float:
    headers = [(b"content-type", b"application/json"), (b"helicone-auth", b"Bearer rl-not-a-key")]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": CHAT_BYTES, "more_body": False}

    statuses: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "headers": headers}  # fmt: skip
    began = time.perf_counter()
    for _ in range(count):
        await proxy.app.handle(scope, receive, send)
    seconds = time.perf_counter() - began
    assert statuses == [401] * count
    return seconds
