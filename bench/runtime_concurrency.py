"""One relaylog runtime process serving many streamed calls at once (Lambda Managed Instances).

    .venv/bin/python bench/runtime_concurrency.py [--levels 1,16,64,256] [--seconds 8] [--profile]
        [--python PATH]   # the runtime on another interpreter: python3.13 is what Lambda runs

For each level N it starts, as subprocesses on 127.0.0.1 only: the provider stand-in, the Runtime
API emulator with its Function URL front (`tests/support/lambda_emulator.py`, handing out at most
N invocations at once) beside a moto server (the proxy's table, bucket and delivery stream), and
the proxy function as Lambda starts it (`relaylog-bootstrap` with the proxy app and its Firehose
sink, `AWS_LAMBDA_MAX_CONCURRENCY=N`; at N=1 the variable is unset: the one-at-a-time loop).
N clients (aiohttp, in this process) then each stream one call after another for `--seconds`:
the stand-in's 16-event answer paced 65 ms, about a second. It prints, per level: calls/s, the
runtime process's CPU per call (utime+stime from /proc over the run, its Firehose flushes
included), its peak RSS (VmRSS sampled every 100 ms), the time to first byte through the Function
URL minus a direct call's at the same concurrency (the emulator's own hop counts in it), and the
records: what the sink reported sent (Powertools' RecordsSent) and what reached S3 (moto), after
SIGINT. For scale, the same clients then call `relaylog serve --workers 1` (uvicorn, records to
local files) at each level: the relay's own cost per call on these streams, outside Lambda.
Targets at 256: at most 400 MB RSS and 500 µs CPU per call. `--profile` also samples the runtime
process with py-spy (`--gil --nonblocking`) through each level's measured run and prints where its
GIL time goes (the sampling costs the process a little CPU: profile and measure in separate runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from procs import Proc, RssSampler, child_env, cpu_seconds, start_relaylog, start_standin  # noqa: E402
from relay import _component, _short  # noqa: E402

BOOTSTRAP = ROOT / "functions" / "proxy" / "relaylog-bootstrap"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}], "stream": True}
ONE_SECOND = "chunk-delay-ms=65"
NAMES = {"RELAYLOG_TABLE": "bench-table", "RELAYLOG_BUCKET": "bench-data", "RELAYLOG_FIREHOSE_STREAM": "bench-records"}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_REGION": "us-east-1"}  # fmt: skip
TARGET_RSS_MB, TARGET_CPU_US = 400, 500


# -- the emulator and moto, in a child process of their own (`--serve N`) --------------------------


def serve(max_concurrency: int) -> None:
    """Run the emulator and a moto server until SIGINT; print where they listen, then how many
    invocations were under way at most."""
    from moto.server import ThreadedMotoServer

    from tests.support.aws import moto_endpoint, proxy_resources
    from tests.support.lambda_emulator import LambdaEmulator

    # A shell that starts the bench in the background leaves SIGINT ignored in its children, and
    # Python then raises no KeyboardInterrupt: the parent's SIGINT is how this child is stopped.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    aws = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    aws.start()
    endpoint = moto_endpoint(aws)
    proxy_resources(endpoint, NAMES)
    with LambdaEmulator(timeout_s=60, max_concurrency=max_concurrency) as emulator:
        print(f"emulator {emulator.runtime_api} {emulator.url} {endpoint}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print(f"peak_in_flight {emulator.peak_in_flight}", flush=True)
    aws.stop()


def _boto_credentials() -> dict[str, str]:
    return {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


# -- the clients -----------------------------------------------------------------------------------


@dataclass
class Calls:
    ttfb_s: list[float]
    failed: int
    seconds: float

    @property
    def done(self) -> int:
        return len(self.ttfb_s)


async def _one(session: aiohttp.ClientSession, url: str, ttfb: list[float]) -> bool:
    started = time.perf_counter()
    first = 0.0
    async with session.post(url + "/v1/chat/completions", json=CHAT, headers={"x-standin-fault": ONE_SECOND}) as r:
        async for _ in r.content.iter_any():
            first = first or time.perf_counter()
        if r.status != 200 or not first:
            return False
    ttfb.append(first - started)
    return True


async def _closed_loops(url: str, clients: int, seconds: float) -> Calls:
    """`clients` loops, each streaming one call after another until `seconds` have passed (the
    calls under way then run to their end)."""
    ttfb: list[float] = []
    failed = 0
    started = time.perf_counter()
    stop_at = started + seconds

    async def loop(session: aiohttp.ClientSession) -> None:
        nonlocal failed
        while time.perf_counter() < stop_at:
            try:
                if not await _one(session, url, ttfb):
                    failed += 1
            except aiohttp.ClientError:
                failed += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(loop(session) for _ in range(clients)))
    return Calls(ttfb, failed, time.perf_counter() - started)


# -- one level -------------------------------------------------------------------------------------


@dataclass
class Level:
    concurrency: int
    calls: int
    failed: int
    calls_per_s: float
    cpu_us_per_call: float
    rss_mb: float
    ttfb_added_ms: float
    records_sent: int
    records_in_s3: int
    peak_in_flight: int
    warmup_calls: int  # records are sent for these too
    emulator_cpu_us_per_call: float  # the emulator and moto, in their own process
    serve_cpu_us_per_call: float = 0.0  # the same calls through `relaylog serve --workers 1`
    serve_ttfb_added_ms: float = 0.0


def _records_sent(lines: list[str]) -> int:
    """RecordsSent summed over the EMF documents Powertools printed."""
    total = 0.0
    for line in lines:
        if line.startswith('{"_aws"'):
            value = json.loads(line).get("RecordsSent", 0)
            total += sum(value) if isinstance(value, list) else value
    return int(total)


def _records_in_s3(endpoint: str) -> int:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=NAMES["RELAYLOG_BUCKET"],
            Prefix="raw/") for o in page.get("Contents", [])]  # fmt: skip
    return sum(len(s3.get_object(Bucket=NAMES["RELAYLOG_BUCKET"], Key=k)["Body"].read().splitlines()) for k in keys)


def summarise_stacks(path: Path, slots: int, who: str, top: int = 25) -> str:
    """Shares of py-spy's GIL samples (raw collapsed stacks): by the innermost relaylog module on
    the stack (its own code and the library and asyncio code it runs: the runtime's share against
    the relay's), and by function (self time)."""
    owners: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    for stack, count in _stacks(path):
        ours = [f for f in stack if "relaylog/" in f and "relaylog/runtime/__main__" not in f]
        owners[_component(ours[-1]) if ours else "(event loop, threads)"] += count
        self_time[_short(stack[-1]) if stack else "(no Python frame)"] += count
    total = sum(owners.values())
    if not total:
        return f"py-spy recorded no samples ({path})"
    lines = [f"\npy-spy on the {who}: GIL held in {total / max(slots, 1):.0%} of {slots} sample slots ({path})"]
    for title, counts in (("by innermost relaylog module", owners), ("by function, self time", self_time)):
        lines += ["", f"{title}:", *(f"{v / total:6.1%}  {k}" for k, v in counts.most_common(top))]
    return "\n".join(lines)


def _stacks(path: Path) -> list[tuple[list[str], int]]:
    """(frames outermost first, without the thread, samples) per line of py-spy's raw output."""
    parsed = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            parsed.append((stack.split(";")[1:], int(count)))
    return parsed


class Spy:
    """py-spy recording one process while in the `with` block (`--gil`: only the thread holding it,
    the one core of Python the process can use; `--nonblocking`: without stopping it)."""

    RATE = 200

    def __init__(self, pid: int, out: Path | None) -> None:
        self.pid, self.out = pid, out
        self.proc: subprocess.Popen[str] | None = None
        self.started = 0.0

    def __enter__(self) -> Spy:
        if self.out is not None:
            spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            argv = [spy, "record", "--pid", str(self.pid), "--rate", str(self.RATE), "--gil", "--nonblocking",
                    "--format", "raw", "--output", str(self.out)]  # fmt: skip
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(0.5)  # attached before the run starts
            self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            seconds = time.monotonic() - self.started
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            _, err = self.proc.communicate(timeout=60)
            assert self.out is not None
            if self.out.exists():
                print(summarise_stacks(self.out, int(self.RATE * seconds), f"runtime process {self.pid}"))
            else:
                print(f"py-spy wrote nothing: {err.strip()}")


def run_level(
    concurrency: int, seconds: float, standin_url: str, logs: Path, python: str, profile: bool = False
) -> Level:
    emulator = Proc(
        f"emulator-{concurrency}",
        [sys.executable, str(Path(__file__).resolve()), "--serve", str(concurrency)],
        child_env(**CREDENTIALS),
        logs / f"emulator-{concurrency}.log",
    )
    try:
        runtime_api, front, endpoint = emulator.wait_for("emulator ", timeout=60).split()[1:]
        env = child_env(
            AWS_LAMBDA_RUNTIME_API=runtime_api,
            LAMBDA_TASK_ROOT=str(BOOTSTRAP.parent),
            RELAYLOG_UPSTREAM_OPENAI=standin_url,
            AWS_ENDPOINT_URL=endpoint,
            **CREDENTIALS,
            **NAMES,
        )
        if concurrency > 1:
            env["AWS_LAMBDA_MAX_CONCURRENCY"] = str(concurrency)
        runtime = Proc(f"runtime-{concurrency}", [str(BOOTSTRAP), python, "/var/runtime/bootstrap.py"],
                       env, logs / f"runtime-{concurrency}.log")  # fmt: skip
        try:
            # Warm-up: pollers served, prices and metrics loaded, connections made (clients that
            # start after its 0.1 s make no call, so its calls are counted, not assumed).
            warmup = asyncio.run(_closed_loops(front, concurrency, 0.1))
            direct = asyncio.run(_closed_loops(standin_url, concurrency, 2.0))
            cpu_before, emulator_before = cpu_seconds(runtime.pid), cpu_seconds(emulator.pid)
            spy_out = logs / f"profile-runtime-{concurrency}.txt" if profile else None
            with RssSampler(runtime) as rss, Spy(runtime.pid, spy_out):
                relayed = asyncio.run(_closed_loops(front, concurrency, seconds))
            cpu = cpu_seconds(runtime.pid) - cpu_before
            emulator_cpu = cpu_seconds(emulator.pid) - emulator_before
        finally:
            runtime.stop()
        records_sent = _records_sent(runtime.lines)
        records_in_s3 = _records_in_s3(endpoint)
    finally:
        emulator.popen.send_signal(signal.SIGINT)
        peak = emulator.wait_for("peak_in_flight", timeout=30).split()[1]
        emulator.stop()
    relayed_p50 = statistics.median(relayed.ttfb_s) * 1000
    return Level(
        concurrency=concurrency,
        calls=relayed.done,
        failed=relayed.failed,
        calls_per_s=relayed.done / relayed.seconds,
        cpu_us_per_call=cpu / max(relayed.done, 1) * 1e6,
        rss_mb=rss.peak.total_kb / 1024,
        ttfb_added_ms=relayed_p50 - statistics.median(direct.ttfb_s) * 1000,
        records_sent=records_sent,
        records_in_s3=records_in_s3,
        peak_in_flight=int(peak),
        warmup_calls=warmup.done + warmup.failed,
        emulator_cpu_us_per_call=emulator_cpu / max(relayed.done, 1) * 1e6,
    )


def compare_with_serve(level: Level, seconds: float, standin_url: str, logs: Path) -> None:
    """CPU per call and added time to first byte of `relaylog serve --workers 1`, same clients."""
    relaylog, url = start_relaylog(logs, standin_url, logs / f"serve-data-{level.concurrency}", 1)
    try:
        asyncio.run(_closed_loops(url, level.concurrency, 0.1))
        direct = asyncio.run(_closed_loops(standin_url, level.concurrency, 2.0))
        before = cpu_seconds(relaylog.pid)
        calls = asyncio.run(_closed_loops(url, level.concurrency, seconds))
        level.serve_cpu_us_per_call = (cpu_seconds(relaylog.pid) - before) / max(calls.done, 1) * 1e6
        level.serve_ttfb_added_ms = (statistics.median(calls.ttfb_s) - statistics.median(direct.ttfb_s)) * 1000
    finally:
        relaylog.stop()


def print_table(levels: list[Level], seconds: float) -> None:
    print(f"\none runtime process, 1-second streams (16 events, 65 ms apart), closed loops of {seconds:g} s per level")
    columns = ("concurrency", "calls", "calls/s", "CPU µs/call (serve)", "emulator µs/call", "peak RSS MB",
               "TTFB added ms (serve)", "records sent / in S3 / calls (+warm-up)")  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for lv in levels:
        print(f"| {lv.concurrency} (peak {lv.peak_in_flight} in flight) | {lv.calls} ({lv.failed} failed) | "
              f"{lv.calls_per_s:.1f} | {lv.cpu_us_per_call:.0f} ({lv.serve_cpu_us_per_call:.0f}) | "
              f"{lv.emulator_cpu_us_per_call:.0f} | {lv.rss_mb:.0f} | "
              f"{lv.ttfb_added_ms:+.1f} ({lv.serve_ttfb_added_ms:+.1f}) | "
              f"{lv.records_sent} / {lv.records_in_s3} / {lv.calls + lv.failed} (+{lv.warmup_calls}) |")  # fmt: skip
    top = max(levels, key=lambda lv: lv.concurrency)
    rss_ok, cpu_ok = top.rss_mb <= TARGET_RSS_MB, top.cpu_us_per_call <= TARGET_CPU_US
    rss = f"RSS {top.rss_mb:.0f} MB (target <= {TARGET_RSS_MB}: {'PASS' if rss_ok else 'MISS'})"
    cpu = f"CPU {top.cpu_us_per_call:.0f} µs/call (target <= {TARGET_CPU_US}: {'PASS' if cpu_ok else 'MISS'})"
    print(f"\nat {top.concurrency}: {rss}, {cpu}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other processes share them)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,16,64,256", help="concurrency levels, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long each level's clients keep calling")
    parser.add_argument("--profile", action="store_true", help="py-spy the runtime process at each level")
    # Lambda runs the functions on python3.13: a virtual environment of it with layers/requirements.txt
    # (and boto3, which Lambda provides) measures the runtime on the interpreter it gets there.
    parser.add_argument("--python", default=sys.executable, help="the runtime's interpreter (default: this one)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the emulator's child process
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return 0
    logs = Path(tempfile.mkdtemp(prefix="relaylog-bench-runtime-"))
    standin, standin_url = start_standin(logs)
    levels = []
    try:
        for concurrency in (int(n) for n in args.levels.split(",")):
            levels.append(run_level(concurrency, args.seconds, standin_url, logs, args.python, args.profile))
            compare_with_serve(levels[-1], args.seconds, standin_url, logs)
            print(f"level {concurrency}: done ({levels[-1].calls} calls)", flush=True)
    finally:
        standin.stop()
    print_table(levels, args.seconds)
    print(f"logs: {logs}")
    records_ok = all(lv.records_sent == lv.records_in_s3 == lv.calls + lv.failed + lv.warmup_calls for lv in levels)
    return 0 if records_ok else 1


if __name__ == "__main__":
    sys.exit(main())
