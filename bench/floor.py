"""The floor under any Python relay on this machine: a byte pump, with relaylog beside it.

    python bench/floor.py [--seconds 5]

A relay must at least read the client's request, write it to the provider, read the answer and
write it back: four socket operations per call, each a loopback delivery that may wake the other
side. This measures what that costs here with nothing else done: `pump`, an asyncio Protocol on
uvloop that pairs each client connection with one connection to the stand-in and copies bytes both
ways (no HTTP parsing, no records, no headers). Then `relaylog serve --workers 1` on the same
calls. wrk drives both with the SDK's small non-streamed completion, as bench/relay.py does; CPU
per call is each proxy process's utime+stime from /proc over the run. Each row also times a short
stream's first event at one client (16 events 1 ms apart, as bench/relay.py's TTFB probe), so the
time a relay adds before the first byte has its floor beside it too.

Then paced streams, as bench/runtime_concurrency.py sends them: the stand-in's 16 events 65 ms
apart (about a second), at 64 and 256 clients (`--paced`, comma-separated; `--paced ""` skips
them). Each event then arrives alone, so a relay pays a wake-up, a read and a write per event
instead of per call: the floor under relaying such a stream, whatever else is done with it.

Whatever relaylog spends above the pump is its own work; the pump's own figure is what no Python
relay on this machine can go below.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules next to this file

from load import Call, measure_ttfb, run_load  # noqa: E402
from procs import Proc, child_env, free_port, kill_all, start_relaylog, start_standin  # noqa: E402
from relay import GZIP, PATH, SDK_HEADERS, SHORT_STREAM, SMALL, STREAM  # noqa: E402

PACED = ("x-standin-fault", "chunk-delay-ms=65")  # the stand-in's 16 events, a second in all
TTFB_PACE = ("x-standin-fault", "chunk-delay-ms=1")
EVENTS = 16


class _Pump(asyncio.Protocol):
    """One client connection, copied byte for byte to its own upstream connection and back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.client: asyncio.Transport | None = None
        self.provider: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        back = _Back(self)
        self.provider, _ = await loop.create_connection(lambda: back, *self.upstream)
        for data in self.pending:
            self.provider.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.provider is None:
            self.pending.append(data)
        else:
            self.provider.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.provider is not None:
            self.provider.close()


class _Back(asyncio.Protocol):
    def __init__(self, pump: _Pump) -> None:
        self.pump = pump

    def data_received(self, data: bytes) -> None:
        if self.pump.client is not None:
            self.pump.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pump.client is not None:
            self.pump.client.close()


def serve_pump(port: int, upstream: str) -> None:
    import uvloop

    host, _, upstream_port = upstream.removeprefix("http://").partition(":")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Pump((host, int(upstream_port))), "127.0.0.1", port)
        print(f"pump listening on {port}", flush=True)
        await server.serve_forever()

    uvloop.run(main())


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(name: str, proc: Proc | None, url: str, seconds: int) -> tuple[str, float]:
    """One row of small calls, and the p50 time to first event of a short stream (TTFB_PACE)."""
    call = Call(url + PATH, SMALL, SDK_HEADERS + GZIP)
    run_load(call, 16, 1)  # warm: connections made, code paths hot
    single = run_load(call, 1, seconds)
    before = _cpu_seconds(proc.pid) if proc is not None else 0.0
    many = run_load(call, 16, seconds)
    cpu = (_cpu_seconds(proc.pid) - before) / many.requests * 1e6 if proc is not None else None
    cpu_text = f"{cpu:6.0f}" if cpu is not None else "     -"
    ttfb = statistics.median(measure_ttfb(Call(url + PATH, SHORT_STREAM, SDK_HEADERS + (TTFB_PACE,)), seconds).ttfb_ms)
    row = f"{name:10s} {many.requests / seconds:9,.0f} {cpu_text} {single.p50_ms:9.3f} {single.p99_ms:9.3f}"
    return row, ttfb


def _measure_paced(name: str, proc: Proc, url: str, clients: int, seconds: int) -> str:
    call = Call(url + PATH, STREAM, SDK_HEADERS + (PACED,))
    run_load(call, clients, 2)  # warm: every client's connection made
    before = _cpu_seconds(proc.pid)
    streams = run_load(call, clients, seconds).requests
    per_call = (_cpu_seconds(proc.pid) - before) / max(streams, 1) * 1e6
    return f"{name:10s} {clients:7d} {streams:7d} {per_call:11.0f} {per_call / EVENTS:12.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--paced", default="64,256", help="clients for the paced streams (default 64,256)")
    parser.add_argument("--pump", type=int, help=argparse.SUPPRESS)  # the pump's own process
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pump:
        serve_pump(args.pump, args.upstream)
        return 0
    work = Path(tempfile.mkdtemp(prefix="relaylog-floor-"))
    try:
        standin, upstream = start_standin(work)
        port = free_port()
        pump = Proc(
            "pump",
            [sys.executable, __file__, "--pump", str(port), "--upstream", upstream],
            child_env(),
            work / "pump.log",
        )
        pump.wait_for("pump listening on")
        relaylog, relaylog_url = start_relaylog(work, upstream, work / "data", 1)
        rows = [
            _measure("direct", None, upstream, args.seconds),
            _measure("pump", pump, f"http://127.0.0.1:{port}", args.seconds),
            _measure("relaylog", relaylog, relaylog_url, args.seconds),
        ]
        direct_ttfb = rows[0][1]
        heads = ("req/s c=16", 9), ("CPU us", 6), ("p50 c=1", 9), ("p99 c=1", 9), ("TTFB p50", 9), ("added", 7)
        print(f"{'':10s} " + " ".join(f"{head:>{width}s}" for head, width in heads))
        for index, (row, ttfb) in enumerate(rows):
            added = f"{ttfb - direct_ttfb:7.3f}" if index else "      -"
            print(f"{row} {ttfb:9.3f} {added}")
        print("CPU us: the proxy process's CPU per call at c=16 (the stand-in's and wrk's not counted)")
        print("TTFB: ms to a short stream's first event at c=1, its 16 events 1 ms apart (as bench/relay.py)")
        levels = [int(n) for n in args.paced.split(",") if n]
        if levels:
            paced = [f"{'':10s} {'clients':>7s} {'streams':>7s} {'CPU us/call':>11s} {'CPU us/event':>12s}"]
            for clients in levels:
                paced.append(_measure_paced("pump", pump, f"http://127.0.0.1:{port}", clients, args.seconds))
                paced.append(_measure_paced("relaylog", relaylog, relaylog_url, clients, args.seconds))
            print(f"\npaced streams ({EVENTS} events 65 ms apart), closed loops of {args.seconds} s")
            print("\n".join(paced))
    finally:
        kill_all()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
