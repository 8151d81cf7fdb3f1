"""relaylog gateway benchmark: what a cache hit costs, and what a rate-limit policy adds, in one run.

    python bench/gateway.py            # about 1.5 minutes; --help for durations
    python bench/gateway.py --quick    # about 30 s, noisier

It starts `python -m relaylog.standin` and `relaylog serve --workers 1` (records written to a temporary
data dir, cache files and rate-limit counters in it too) as subprocesses on 127.0.0.1 and measures,
with wrk, one small non-streamed chat completion sent four ways:

- direct       to the stand-in, no relaylog;
- plain        through relaylog;
- cache HIT    through relaylog with `Helicone-Cache-Enabled: true`, after one warm-up MISS, so
               every measured request is answered from the cache files and never reaches the
               stand-in (checked: its CPU during those runs is reported);
- rate limit   through relaylog with `Helicone-RateLimit-Policy` and a quota no run can reach, so
               every request pays for one SQLite counter take and none is refused (checked).

The four are measured in rounds (direct, plain, HIT, rate limit, then again), and each number is
the median over the rounds, so a slow moment of a shared machine does not land on one row only.
Then `SqliteCounters.take` and `FileCacheStore.get` are timed in this process on the same kind of
file system, to show the store's own share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules next to this file

from load import WRK, Call, LoadResult, run_load  # noqa: E402
from procs import REPO, Proc, kill_all, machine_busy_seconds, start_relaylog, start_standin  # noqa: E402

sys.path.insert(0, str(REPO / "layers"))

PATH = "/v1/chat/completions"
# The headers the OpenAI Python SDK sends (a subset: the relay's per-header work is not the point
# here), with its default Accept-Encoding so the stand-in gzips and the cache stores gzip bytes.
HEADERS: tuple[tuple[str, str], ...] = (
    ("Accept", "application/json"),
    ("Accept-Encoding", "gzip, deflate"),
    ("Content-Type", "application/json"),
    ("User-Agent", "OpenAI/Python 1.99.0"),
    ("Authorization", "Bearer sk-bench"),
    ("Helicone-User-Id", "bench-user"),
)
SMALL = b'{"messages":[{"role":"user","content":"Say hi"}],"model":"gpt-4o-mini"}'
CACHE = (("Helicone-Cache-Enabled", "true"),)
# A billion requests an hour: never reached, so every request is counted and none refused.
RATE_LIMIT = (("Helicone-RateLimit-Policy", "1000000000;w=3600"),)

TARGET_HIT_P50_MS = 2.0
BUSY_CORES = 0.15  # other processes' CPU above this during a run makes its numbers suspect


@dataclass
class Row:
    label: str
    call: Call
    relayed: bool
    c1: list[LoadResult] = field(default_factory=list)
    c16: list[LoadResult] = field(default_factory=list)
    # CPU microseconds per request during the c=16 runs, one entry per round.
    relay_cpu_us: list[float] = field(default_factory=list)
    standin_cpu_us: list[float] = field(default_factory=list)
    # Cores used by processes other than relaylog, the stand-in and wrk, per round: a busy machine.
    other_cores: list[float] = field(default_factory=list)

    def median(self, runs: list[LoadResult], attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs)

    @property
    def failures(self) -> int:
        return sum(r.non2xx + r.socket_errors for r in self.c1 + self.c16)


def once(call: Call) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(call.url, data=call.body, headers=dict(call.headers), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        return response.status, {k.lower(): v for k, v in response.headers.items()}


def _ours(standin: Proc, relay: Proc) -> float:
    """CPU seconds used so far by relaylog, the stand-in, wrk (once reaped) and this process."""
    children, own = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    load_gen = children.ru_utime + children.ru_stime + own.ru_utime + own.ru_stime
    return relay.cpu_seconds() + standin.cpu_seconds() + load_gen


def measure(row: Row, seconds: int, standin: Proc, relay: Proc) -> None:
    started, machine, ours = time.monotonic(), machine_busy_seconds(), _ours(standin, relay)
    row.c1.append(run_load(row.call, 1, seconds))
    relay_cpu, standin_cpu = relay.cpu_seconds(), standin.cpu_seconds()
    result = run_load(row.call, 16, seconds)
    row.c16.append(result)
    requests = max(result.requests, 1)
    row.relay_cpu_us.append((relay.cpu_seconds() - relay_cpu) / requests * 1e6)
    row.standin_cpu_us.append((standin.cpu_seconds() - standin_cpu) / requests * 1e6)
    other = (machine_busy_seconds() - machine) - (_ours(standin, relay) - ours)
    row.other_cores.append(max(other, 0.0) / (time.monotonic() - started))


def check_setup(rows: dict[str, Row]) -> list[str]:
    """One call of each kind before measuring: the cache must answer HIT, the limit must be on."""
    problems = []
    for row in rows.values():
        status, headers = once(row.call)
        if status != 200:
            problems.append(f"{row.label}: status {status}")
    # The first call above was the MISS that fills the cache, just after its response has gone.
    for _ in range(20):
        _, headers = once(rows["hit"].call)
        if headers.get("helicone-cache") == "HIT":
            break
        time.sleep(0.05)
    else:
        problems.append(f"cache: expected Helicone-Cache: HIT, got {headers.get('helicone-cache')!r}")
    _, headers = once(rows["limit"].call)
    if "helicone-ratelimit-remaining" not in headers:
        problems.append("rate limit: no Helicone-RateLimit-Remaining header, the policy was not applied")
    return problems


# -- the stores alone ------------------------------------------------------------------------------


def time_stores(work: Path, count: int) -> dict[str, tuple[float, float]]:
    """p50/p99 microseconds of SqliteCounters.take and FileCacheStore.get (a hit), in-process."""
    from relaylog.gateway.cache import CachedResponse
    from relaylog.gateway.cache.files import FileCacheStore
    from relaylog.gateway.counters.sqlite import SqliteCounters

    counters = SqliteCounters(work / "micro" / "ratelimits.sqlite3")
    cache = FileCacheStore(work / "micro" / "cache")
    entry = CachedResponse(200, [(b"content-type", b"application/json")], [b"x" * 900], [0.0], [], False,
                           "application/json", "gzip", time.time() + 3600)  # fmt: skip
    key = "ab" * 32
    asyncio.run(cache.put(key, 0, entry))
    expires = time.time() + 3600

    def timed(fn: Callable[[int], object]) -> tuple[float, float]:
        samples = []
        for i in range(count):
            started = time.perf_counter_ns()
            fn(i)
            samples.append((time.perf_counter_ns() - started) / 1000)
        samples.sort()
        return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]

    loop = asyncio.new_event_loop()
    try:
        results = {
            "SqliteCounters.take (one counter)": timed(lambda i: counters.take_now("bench", 1, 1e12, expires)),
            "SqliteCounters.take (new counter)": timed(lambda i: counters.take_now(f"c{i}", 1, 1e12, expires)),
            "SqliteCounters.add": timed(lambda i: counters.add("bench", 0.01, expires)),
            "FileCacheStore.get (hit, 1 KB)": timed(lambda i: loop.run_until_complete(cache.get(key, 0))),
        }
    finally:
        loop.close()
    return results


# -- report ----------------------------------------------------------------------------------------


def report(rows: dict[str, Row], stores: dict[str, tuple[float, float]], rounds: int, seconds: int, fs: str) -> str:
    direct, plain, hit, limit = rows["direct"], rows["plain"], rows["hit"], rows["limit"]
    direct_p50, direct_rps = direct.median(direct.c1, "p50_ms"), direct.median(direct.c16, "rps")
    table = [["", "p50 c=1", "p99 c=1", "req/s c=1", "req/s c=16", "relaylog CPU/req", "p50 vs direct",
              "req/s c=16 vs direct"]]  # fmt: skip
    for row in rows.values():
        p50, p99 = row.median(row.c1, "p50_ms"), row.median(row.c1, "p99_ms")
        rps = row.median(row.c16, "rps")
        cpu = f"{statistics.median(row.relay_cpu_us):.0f} us" if row.relayed else "-"
        table.append([row.label, f"{p50:.3f} ms", f"{p99:.3f} ms", f"{row.median(row.c1, 'rps'):,.0f}", f"{rps:,.0f}",
                      cpu, f"{p50 / direct_p50:.2f}x", f"{rps / direct_rps:.2f}x"])  # fmt: skip
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True)))
        for r in table
    ]
    lines.insert(1, "-" * len(lines[0]))

    hit_p50 = hit.median(hit.c1, "p50_ms")
    verdict = "PASS" if hit_p50 <= TARGET_HIT_P50_MS else "FAIL"
    lines += ["", f"cache HIT p50 {hit_p50:.3f} ms at c=1, end to end: {verdict} (target <= {TARGET_HIT_P50_MS:g} ms)"]
    standin_us = statistics.median(hit.standin_cpu_us)
    alone = "the cache answered alone" if standin_us < 5 else "NOT about 0: did hits reach the stand-in?"
    lines.append(f"  stand-in CPU during the HIT runs: {standin_us:.1f} us/req ({alone})")
    added = {
        "p50 c=1": (limit.median(limit.c1, "p50_ms") - plain.median(plain.c1, "p50_ms")) * 1000,
        "p99 c=1": (limit.median(limit.c1, "p99_ms") - plain.median(plain.c1, "p99_ms")) * 1000,
        "CPU/req c=16": statistics.median(limit.relay_cpu_us) - statistics.median(plain.relay_cpu_us),
    }
    lines.append("rate limit vs plain, added per request: " + ", ".join(f"{k} {v:+.0f} us" for k, v in added.items()))
    per_round = [a - b for a, b in zip(limit.relay_cpu_us, plain.relay_cpu_us, strict=True)]
    lines.append(f"  CPU/req added, each round: {', '.join(f'{v:+.0f}' for v in per_round)} us")
    lines += ["", f"the stores alone, in this process ({fs}):"]
    lines += [f"  {name:<36} p50 {p50:6.1f} us   p99 {p99:6.1f} us" for name, (p50, p99) in stores.items()]
    busiest = max(max(row.other_cores) for row in rows.values())
    if busiest > BUSY_CORES:
        lines += ["", f"WARNING: other processes used up to {busiest:.2f} cores during the runs: the machine was "
                  "shared, rerun on a quiet one for numbers to trust"]  # fmt: skip
    else:
        lines += ["", f"other processes' CPU: at most {busiest:.2f} cores during any run (quiet machine)"]
    failures = sum(row.failures for row in rows.values())
    lines.append(f"{rounds} round(s) of {seconds} s per run, medians over rounds; non-2xx or socket errors: {failures}")
    return "\n".join(lines)


def filesystem(path: Path) -> str:
    try:
        out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, timeout=5).stdout.splitlines()
        return f"{out[1].split()[1]} at {path}"
    except (OSError, IndexError, subprocess.SubprocessError):
        return str(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=3, help="length of each wrk run (default: 3)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the four rows (default: 3)")
    parser.add_argument("--quick", action="store_true", help="one round of 2 s runs")
    parser.add_argument("--keep", action="store_true", help="keep logs and the data dir")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 2, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if WRK is None:
        print("wrk not found: this benchmark needs it for microsecond latencies", file=sys.stderr)
        return 2
    print(f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}")
    work = Path(tempfile.mkdtemp(prefix="relaylog-gwbench-"))
    try:
        standin, standin_url = start_standin(work)
        relay, relay_url = start_relaylog(work, standin_url, work / "data", 1)
        rows = {
            "direct": Row("direct to the stand-in", Call(standin_url + PATH, SMALL, HEADERS), False),
            "plain": Row("relaylog plain", Call(relay_url + PATH, SMALL, HEADERS), True),
            "hit": Row("relaylog cache HIT", Call(relay_url + PATH, SMALL, HEADERS + CACHE), True),
            "limit": Row("relaylog + rate limit", Call(relay_url + PATH, SMALL, HEADERS + RATE_LIMIT), True),
        }
        problems = check_setup(rows)
        if problems:
            print("setup check failed:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        for row in rows.values():  # a second of load each, so nothing is measured cold
            run_load(row.call, 16, 1)
        for n in range(args.rounds):
            print(f"... round {n + 1} of {args.rounds}", file=sys.stderr, flush=True)
            for row in rows.values():
                measure(row, args.seconds, standin, relay)
        stores = time_stores(work, 20_000)
        relay.stop()
        standin.stop()
        print()
        print(report(rows, stores, args.rounds, args.seconds, filesystem(work)))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the stand-in and relaylog", file=sys.stderr)
        return 130
    finally:
        kill_all()
        if args.keep:
            print(f"logs and data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
