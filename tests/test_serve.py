"""`relaylog serve` as a user runs it: a separate process, stopped with SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import trustme
from relaylog.standin import StandIn

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    def __init__(self, data_dir: Path, upstream: str, *args: str, **env_extra: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "RELAYLOG_UPSTREAM_OPENAI": upstream,
            "PYTHONPATH": str(REPO / "layers"),
            **env_extra,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "relaylog", "serve", "--port", str(self.port), "--data-dir", str(data_dir), *args],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError as error:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.process.kill()
                    stderr = self.process.communicate()[1]
                    raise RuntimeError(f"relaylog serve did not start: {stderr}") from error
                time.sleep(0.05)

    def stop(self, sig: int) -> str:
        self.process.send_signal(sig)
        _, stderr = self.process.communicate(timeout=30)
        return stderr


@pytest.fixture
def served(tmp_path: Path, standin: StandIn) -> Iterator[tuple[Served, Path]]:
    data_dir = tmp_path / "data"
    server = Served(data_dir, standin.url)
    yield server, data_dir
    if server.process.poll() is None:
        server.process.kill()
        server.process.communicate()


def _stream_in_background(url: str, fault: str) -> tuple[threading.Thread, str]:
    """Start a streamed call in a thread; return it and the call's id once the answer has begun."""
    started: list[str] = []

    def run() -> None:
        with httpx.stream(
            "POST",
            url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-standin-fault": fault},
        ) as response:
            started.append(response.headers["helicone-id"])
            try:
                response.read()
            except httpx.HTTPError:
                pass  # a shutdown may cut it; the record says how it ended

    worker = threading.Thread(target=run)
    worker.start()
    while not started:
        assert worker.is_alive(), "the streamed call failed before its answer began"
        time.sleep(0.01)
    return worker, started[0]


def _records(data_dir: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for path in data_dir.glob("raw/*/*/*.jsonl") for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_every_record_is_on_disk_after_a_signal(served: tuple[Served, Path], sig: int) -> None:
    server, data_dir = served
    ids = []
    for _ in range(25):
        response = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 200
        ids.append(response.headers["helicone-id"])
    # A stream still running when the signal arrives is finished, then recorded.
    worker, streamed = _stream_in_background(server.url, "chunk-delay-ms=30")
    stderr = server.stop(sig)
    worker.join()
    # uvicorn re-raises the signal once shut down cleanly, as a well-behaved process does.
    assert server.process.returncode in (0, -sig), stderr
    assert "Application shutdown complete" in stderr
    assert "OPEN" in stderr  # no keys yet: start-up says the proxy is open
    recorded = {record["request_id"]: record for record in _records(data_dir)}
    assert set(recorded) == {*ids, streamed}
    assert recorded[streamed]["error_type"] is None and recorded[streamed]["stream"] is True


def test_start_up_says_when_keys_are_required(served: tuple[Served, Path], standin: StandIn) -> None:
    server, data_dir = served
    server.stop(signal.SIGTERM)
    created = subprocess.run(
        [sys.executable, "-m", "relaylog", "keys", "create", "--name", "ci", "--data-dir", str(data_dir)],
        env={**os.environ, "PYTHONPATH": str(REPO / "layers")},
        capture_output=True,
        text=True,
        check=True,
    )
    secret = created.stdout.strip()
    again = Served(data_dir, standin.url)
    try:
        refused = httpx.post(
            again.url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
        allowed = httpx.post(
            again.url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Helicone-Auth": f"Bearer {secret}"},
        )
    finally:
        stderr = again.stop(signal.SIGTERM)
    assert refused.status_code == 401 and allowed.status_code == 200
    assert "1 relaylog key(s) active" in stderr
    assert secret not in stderr


def test_https_providers_are_verified_and_relayed(tmp_path: Path) -> None:
    """Every real provider is HTTPS: the upstream certificate is checked against the system trust
    store, which SSL_CERT_FILE extends (a corporate CA, or this test's)."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with StandIn(host="localhost", tls=server_context) as provider:
        trusted = Served(tmp_path / "trusted", provider.url, SSL_CERT_FILE=str(ca_file))
        try:
            relayed = httpx.post(trusted.url + "/v1/chat/completions", json=body)
            direct = httpx.post(
                provider.url + "/v1/chat/completions", json=body, verify=ssl.create_default_context(cafile=str(ca_file))
            )
        finally:
            trusted.stop(signal.SIGTERM)
        assert relayed.status_code == 200 and relayed.content == direct.content
        untrusted = Served(tmp_path / "untrusted", provider.url)
        try:
            refused = httpx.post(untrusted.url + "/v1/chat/completions", json=body)
        finally:
            untrusted.stop(signal.SIGTERM)
    assert refused.status_code == 502
    error = refused.json()["error"]
    assert error["type"] == "upstream_unreachable" and "certificate" in error["message"].lower()
    (record,) = _records(tmp_path / "untrusted")
    assert record["error_type"] == "upstream_unreachable" and record["status"] == 502


def test_a_call_outliving_the_shutdown_grace_is_recorded_as_cancelled(tmp_path: Path, standin: StandIn) -> None:
    data_dir = tmp_path / "data"
    server = Served(data_dir, standin.url, RELAYLOG_SHUTDOWN_GRACE="0.5")
    worker, request_id = _stream_in_background(server.url, "stall-after=2")
    stderr = server.stop(signal.SIGTERM)
    worker.join()
    (record,) = _records(data_dir)
    assert record["request_id"] == request_id, stderr
    assert record["status"] == 200 and record["error_type"] == "cancelled"


def test_a_provider_cutting_a_stream_is_logged_once_with_the_request_id(
    served: tuple[Served, Path],
) -> None:
    server, _ = served
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-standin-fault": "drop-after=2"},
    ) as response:
        request_id = response.headers["helicone-id"]
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    stderr = server.stop(signal.SIGTERM)
    assert f"request {request_id}: the provider closed the connection mid-response" in stderr
    assert "without completing response" not in stderr


def test_worker_processes_share_rate_limits_and_the_cache(tmp_path: Path, standin: StandIn) -> None:
    """Two `--workers` processes count against one quota exactly and serve each other's cache entries."""
    server = Served(tmp_path / "data", standin.url, "--workers", "2")
    marker = uuid.uuid4().hex
    try:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {marker}"}]}
        limited = {"authorization": "Bearer sk-test-workers", "Helicone-RateLimit-Policy": "20;w=600"}

        async def burst() -> list[int]:
            async with httpx.AsyncClient(
                base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=64)
            ) as client:
                calls = [client.post("/v1/chat/completions", json=body, headers=limited) for _ in range(64)]
                return [r.status_code for r in await asyncio.gather(*calls)]

        statuses = asyncio.run(burst())
        assert (statuses.count(200), statuses.count(429)) == (20, 44)

        cached = {"authorization": "Bearer sk-test-workers", "Helicone-Cache-Enabled": "true"}
        first = httpx.post(server.url + "/v1/chat/completions", json=body, headers=cached)
        assert first.headers["helicone-cache"] == "MISS"
        # New connections land on either worker; every one of them finds the entry.
        hits = {
            httpx.post(server.url + "/v1/chat/completions", json=body, headers=cached).headers["helicone-cache"]
            for _ in range(8)
        }
        assert hits == {"HIT"}
        assert sum(1 for r in standin.requests if marker.encode() in r.body) == 21
    finally:
        server.stop(signal.SIGTERM)


# -- start-up: the banner once listening, one sentence when it cannot start ----------------------


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaylog", "serve", *args],
        env={**os.environ, "PYTHONPATH": str(REPO / "layers")},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_port_in_use_is_one_sentence_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve("--port", str(port), "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 1
    assert done.stderr == (
        f"relaylog: error: port {port} on 127.0.0.1 is already in use; stop what holds it or pick another with --port\n"
    )


def test_a_data_dir_that_cannot_be_made_or_is_a_file_is_one_sentence(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    done = _serve("--port", "0", "--data-dir", str(a_file / "data"))
    assert (done.returncode, done.stderr) == (
        1,
        f"relaylog: error: cannot create the data dir {a_file}/data: Not a directory\n",
    )
    done = _serve("--port", "0", "--data-dir", str(a_file))
    assert (done.returncode, done.stderr) == (1, f"relaylog: error: the data dir {a_file} is not a directory\n")


def test_an_unwritable_data_dir_is_one_sentence(tmp_path: Path) -> None:
    data_dir = tmp_path / "read-only"
    data_dir.mkdir()
    data_dir.chmod(0o555)
    if os.geteuid() == 0:
        # root writes through permissions; sysfs refuses new files even to root.
        data_dir = Path("/sys")
    done = _serve("--port", "0", "--data-dir", str(data_dir))
    assert (done.returncode, done.stderr) == (
        1,
        f"relaylog: error: the data dir {data_dir} is not writable: Permission denied\n",
    )


def test_banner_comes_once_listening_and_names_upstream_overrides(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "layers"),
        "RELAYLOG_UPSTREAM_ANTHROPIC": "http://user:secret@127.0.0.1:9/base",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "relaylog", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        assert first.startswith(f"relaylog proxy on http://127.0.0.1:{port} ")
        # The banner is printed after the socket listens: a connection made now is accepted.
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        lines = [process.stderr.readline() for _ in range(3)]
        assert "upstream override: anthropic -> http://127.0.0.1:9/base  (RELAYLOG_UPSTREAM_ANTHROPIC)\n" in lines
        assert not any("secret" in line for line in [first, *lines])
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    assert "Traceback" not in rest


def test_revoking_the_last_key_warns_in_the_cli_and_the_server_log(
    served: tuple[Served, Path], standin: StandIn
) -> None:
    server, data_dir = served
    cli_env = {**os.environ, "PYTHONPATH": str(REPO / "layers")}

    def relaylog(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "relaylog", *args, "--data-dir", str(data_dir)]
        return subprocess.run(command, env=cli_env, capture_output=True, text=True, check=True)

    first = relaylog("keys", "create", "--json")
    second = relaylog("keys", "create", "--json")
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    time.sleep(1.2)  # the server re-reads keys.json once a second
    assert httpx.post(server.url + "/v1/chat/completions", json=chat).status_code == 401
    one = relaylog("keys", "revoke", orjson.loads(first.stdout)["key_id"])
    assert "OPEN" not in one.stderr  # a key is left
    last = relaylog("keys", "revoke", orjson.loads(second.stdout)["key_id"])
    assert last.stderr == (
        "relaylog: warning: no active relaylog key is left: the proxy and the dashboard are OPEN again to anyone"
        " who can reach them (relaylog keys create)\n"
    )
    time.sleep(1.2)
    assert httpx.post(server.url + "/v1/chat/completions", json=chat).status_code == 200
    log = server.stop(signal.SIGTERM)
    assert "no active relaylog key is left: the proxy and the dashboard are OPEN again" in log
