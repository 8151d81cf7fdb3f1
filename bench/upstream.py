"""The relay's upstream client alone: aiohttp (as relay/upstream.py sets it up) vs relaylog's
httptools client (relay/http1), against the provider stand-in, in one run.

    python bench/upstream.py                # about 1 minute
    python bench/upstream.py --seconds 2    # quicker, noisier

Each client makes the calls the relay makes (the OpenAI SDK's headers, a small chat completion
read whole with a gzip answer; a 43-event stream read chunk by chunk) from this process on uvloop,
at 1 and 16 concurrent calls. The two clients alternate, `--rounds` times each, and the table shows
the median round. CPU is this process's (user + system) per call: the client's own cost plus the
load loop around it, which is the same for both. The stand-in runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop
from yarl import URL

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers"))

from procs import kill_all, start_standin  # noqa: E402
from relay import GZIP, SDK_HEADERS, SMALL, STREAM  # noqa: E402
from relaylog.config import Settings  # noqa: E402
from relaylog.relay.http1 import Client  # noqa: E402

Call = Callable[[bool], Awaitable[int]]  # stream? -> body bytes read


def aiohttp_call(url: URL, headers: list[tuple[str, str]]) -> tuple[Call, Callable[[], Awaitable[None]]]:
    settings = Settings.from_env()
    # As relay/upstream.py set it up before relay/http1 replaced it.
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60),
        timeout=aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s
        ),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"}),
        raise_for_status=False,
        trust_env=False,
    )

    async def call(stream: bool) -> int:
        response = await session.request(
            "POST", url, headers=headers, data=STREAM if stream else SMALL, allow_redirects=False
        )
        try:
            if not stream:
                return len(await response.read())
            size = 0
            async for chunk in response.content.iter_any():
                size += len(chunk)
            return size
        finally:
            response.close()

    return call, session.close


def http1_call(url: URL, headers: list[tuple[str, str]]) -> tuple[Call, Callable[[], Awaitable[None]]]:
    settings = Settings.from_env()
    client = Client(connect_timeout_s=settings.connect_timeout_s, read_timeout_s=settings.read_timeout_s)

    async def call(stream: bool) -> int:
        response = await client.request("POST", url, headers, STREAM if stream else SMALL)
        try:
            if not stream:
                return len((await response.read()).data)
            size = 0
            async for chunk in response.chunks():
                size += len(chunk)
            return size
        finally:
            response.close()

    return call, client.close


async def run(call: Call, stream: bool, concurrency: int, seconds: float) -> tuple[float, float]:
    """(calls per second, CPU us per call) over `seconds` of `concurrency` loops."""
    for _ in range(20):
        await call(stream)  # warm: connections open, caches filled
    stop = time.perf_counter() + seconds
    count = 0

    async def loop() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            if await call(stream) <= 0:
                raise RuntimeError("empty body")
            count += 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return count / wall, cpu * 1e6 / count


async def bench(base: str, seconds: float, rounds: int) -> str:
    url = URL(base + "/v1/chat/completions")
    headers = list((*SDK_HEADERS, *GZIP))  # the relay forwards no Host: the client writes it
    makers = {"aiohttp": aiohttp_call, "http1": http1_call}
    cases = [("small, gzip, c=1", False, 1), ("small, gzip, c=16", False, 16), ("stream 43 events, c=16", True, 16)]
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    clients = {name: make(url, headers) for name, make in makers.items()}
    try:
        for _ in range(rounds):
            for label, stream, concurrency in cases:
                for name, (call, _) in clients.items():
                    results.setdefault((label, name), []).append(await run(call, stream, concurrency, seconds))
    finally:
        for _, close in clients.values():
            await close()
    rows = [
        f"{'':26}{'aiohttp':>20}{'http1 (relaylog)':>20}{'ratio':>9}",
        f"{'':26}{'calls/s   CPU us':>20}{'calls/s   CPU us':>20}{'CPU':>9}",
    ]
    for label, _, _ in cases:
        cells = []
        cpus = []
        for name in makers:
            runs = results[(label, name)]
            rate = statistics.median(r for r, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            cpus.append(cpu)
            cells.append(f"{rate:>10,.0f}{cpu:>10,.0f}")
        rows.append(f"{label:26}{cells[0]:>20}{cells[1]:>20}{cpus[1] / cpus[0]:>8.2f}x")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per run (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each client per case (default 3)")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="relaylog-bench-upstream-") as work:
        standin, base = start_standin(Path(work))
        try:
            print(f"median of {opts.rounds} rounds of {opts.seconds:g} s; the stand-in at {base}")
            print(uvloop.run(bench(base, opts.seconds, opts.rounds)))
        finally:
            standin.stop() if hasattr(standin, "stop") else None
            kill_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
