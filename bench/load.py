"""Load generators: wrk (preferred), an aiohttp fallback, and a one-connection TTFB probe.

wrk is C with an event loop per thread: it spends far less CPU per request than any Python
client, which matters when the load generator, the stand-in and relaylog share two cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

WRK = shutil.which("wrk")


@dataclass
class LoadResult:
    requests: int  # responses completed inside the run
    seconds: float
    p50_ms: float
    p99_ms: float
    non2xx: int = 0
    socket_errors: int = 0  # connect/read/write errors and timeouts
    connections: int = 0  # upper bound of requests still in flight when the run was stopped
    tool: str = "wrk"

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Call:
    """One HTTP request, replayed over and over."""

    url: str
    body: bytes
    headers: tuple[tuple[str, str], ...]
    # What marks the first event of a streamed answer for the TTFB probe: an SSE `data:` field, or
    # `:message-type`, a header every AWS event-stream frame carries.
    first_event: bytes = b"data:"


def run_load(call: Call, connections: int, seconds: int, timeout_s: float = 10.0, tool: str = "auto") -> LoadResult:
    """Closed-loop load: `connections` keep-alive connections, each sending the next request as
    soon as the previous response is complete, for `seconds`."""
    if tool == "wrk" or (tool == "auto" and WRK):
        return _run_wrk(call, connections, seconds, timeout_s)
    return asyncio.run(_run_aiohttp(call, connections, seconds, timeout_s))


# -- wrk ------------------------------------------------------------------------------------------

# `done` runs once after the run and prints exact numbers (latency in µs from wrk's histogram), so
# nothing depends on wrk's rounded human-readable report. No `response` callback: defining one makes
# wrk hand every response to Lua, which costs load-generator CPU.
_WRK_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\":%d,\"duration_us\":%d,\"non2xx\":%d,\"socket_errors\":%d,\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_script(call: Call) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{call.body.decode()}]==]"]
    # JSON string escapes of ASCII text (\" and \\) are valid Lua string escapes.
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in call.headers]
    return "\n".join(lines) + "\n" + _WRK_DONE


def _run_wrk(call: Call, connections: int, seconds: int, timeout_s: float) -> LoadResult:
    assert WRK is not None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua_script(call))
    # One wrk thread: it drives 64 connections easily and leaves the most CPU to what is measured.
    argv = [WRK, "-t1", f"-c{connections}", f"-d{seconds}s", f"--timeout={int(timeout_s)}s", "-s", script.name]
    argv.append(call.url)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=seconds + timeout_s + 30)
    finally:
        if proc.poll() is None:  # Ctrl-C or a hung wrk: do not leave it running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.unlink(script.name)
    match = re.search(r"^WRKJSON (\{.*\})$", out, re.M)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out}")
    data = json.loads(match.group(1))
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        non2xx=data["non2xx"],
        socket_errors=data["socket_errors"],
        connections=connections,
    )


# -- aiohttp fallback -----------------------------------------------------------------------------


async def _run_aiohttp(call: Call, connections: int, seconds: int, timeout_s: float) -> LoadResult:
    import aiohttp  # only needed without wrk

    latencies: list[float] = []
    counts = {"non2xx": 0, "errors": 0}
    deadline = time.perf_counter() + seconds
    headers = dict(call.headers)
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with session.post(call.url, data=call.body, headers=headers) as response:
                        await response.read()
                        if response.status >= 400:
                            counts["non2xx"] += 1
                except (aiohttp.ClientError, TimeoutError):
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        non2xx=counts["non2xx"],
        socket_errors=counts["errors"],
        connections=0,  # the fallback lets in-flight requests finish, so none are cut off
        tool="aiohttp",
    )


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (what wrk reports too)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


# -- time to first byte ---------------------------------------------------------------------------


@dataclass
class StreamTimes:
    ttfb_ms: list[float]  # request sent -> first byte of the first SSE event
    total_ms: list[float]  # request sent -> end of the chunked body
    failures: int = 0


def measure_ttfb(call: Call, seconds: float, max_samples: int = 2000) -> StreamTimes:
    """Streams one after another on one keep-alive connection (concurrency 1), timing each.

    A raw socket rather than an HTTP client: the probe's own cost per byte is a few µs, the same
    for direct and relayed calls, so the difference between the two is relaylog's."""
    parts = urlsplit(call.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = [f"POST {parts.path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(call.body)}"]
    head += [f"{k}: {v}" for k, v in call.headers]
    request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + call.body
    times = StreamTimes([], [])
    sock = _connect(host, port)
    try:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline and len(times.ttfb_ms) < max_samples:
            try:
                ttfb, total = _one_stream(sock, request, call.first_event)
            except (OSError, ValueError):
                times.failures += 1
                sock.close()
                sock = _connect(host, port)
                continue
            times.ttfb_ms.append(ttfb * 1000)
            times.total_ms.append(total * 1000)
    finally:
        sock.close()
    return times


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _one_stream(sock: socket.socket, request: bytes, first_event: bytes) -> tuple[float, float]:
    """Send one request, read a chunked stream to its end; (ttfb, total) in seconds."""
    started = time.perf_counter()
    sock.sendall(request)
    reader = _Reader(sock, first_event)
    while (head_end := reader.buf.find(b"\r\n\r\n")) == -1:
        reader.fill()
    head = bytes(reader.buf[:head_end])
    if head.split(b" ", 2)[1] != b"200" or b"transfer-encoding: chunked" not in head.lower():
        raise ValueError(f"expected a 200 chunked stream, got: {head[:200]!r}")
    reader.body_from(head_end + 4)
    pos = head_end + 4  # start of the next chunk-size line
    while True:
        while (line_end := reader.buf.find(b"\r\n", pos)) == -1:
            reader.fill()
        size = int(reader.buf[pos:line_end].split(b";", 1)[0], 16)
        pos = line_end + 2 + size + 2
        while len(reader.buf) < pos:
            reader.fill()
        if size == 0:
            if reader.first_event is None:
                raise ValueError("stream ended without an SSE event")
            return reader.first_event - started, time.perf_counter() - started


class _Reader:
    """Receive buffer that notes when the first event marker (`data:`) of the body arrived."""

    def __init__(self, sock: socket.socket, marker: bytes) -> None:
        self.sock = sock
        self.marker = marker
        self.buf = bytearray()
        self.first_event: float | None = None
        self.last_recv = 0.0  # when the latest bytes arrived: the moment a `data:` was first seen
        self._body_start: int | None = None

    def body_from(self, offset: int) -> None:
        self._body_start = offset
        self._check(offset)

    def fill(self) -> None:
        data = self.sock.recv(65536)
        self.last_recv = time.perf_counter()
        if not data:
            raise ConnectionError("connection closed mid-response")
        old = len(self.buf)
        self.buf += data
        if self._body_start is not None:
            self._check(max(self._body_start, old - len(self.marker) + 1))

    def _check(self, offset: int) -> None:
        if self.first_event is None and self.buf.find(self.marker, offset) != -1:
            self.first_event = self.last_recv
