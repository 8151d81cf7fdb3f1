"""relaylog relay benchmark: the provider stand-in called directly vs through relaylog, in one run.

    python bench/relay.py                 # about 2 minutes; --help for durations and options
    python bench/relay.py --quick         # about 1 minute, noisier
    python bench/relay.py --profile 8     # also py-spy relaylog during an extra c=16 run

It starts `python -m relaylog.standin` (request recording off) and `relaylog serve` (records written to a
temporary data dir) as subprocesses on 127.0.0.1, measures the stand-in directly, then each relaylog
configuration (`--workers 1` and `--workers 2` by default), checks that relaylog wrote one record per
relayed request, and prints one table. Everything shares this machine's cores, the load generator
included: the numbers are for that setting, not for a dedicated proxy host.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules next to this file

from load import WRK, Call, LoadResult, StreamTimes, measure_ttfb, percentile, run_load  # noqa: E402
from procs import (  # noqa: E402
    REPO,
    Proc,
    RssPeak,
    RssSampler,
    interpreter,
    kill_all,
    machine_busy_seconds,
    start_relaylog,
    start_standin,
)

PATH = "/v1/chat/completions"
# What the OpenAI Python SDK sends (minus Host/Content-Length/Connection, which the client adds):
# the relay's header handling is part of its per-request cost, so the count and size should be real.
SDK_HEADERS: tuple[tuple[str, str], ...] = (
    ("Accept", "application/json"),
    ("Content-Type", "application/json"),
    ("User-Agent", "OpenAI/Python 1.99.0"),
    ("X-Stainless-Lang", "python"),
    ("X-Stainless-Package-Version", "1.99.0"),
    ("X-Stainless-OS", "Linux"),
    ("X-Stainless-Arch", "x64"),
    ("X-Stainless-Runtime", "CPython"),
    ("X-Stainless-Runtime-Version", "3.11.7"),
    ("X-Stainless-Async", "false"),
    ("X-Stainless-Retry-Count", "0"),
    ("Authorization", "Bearer sk-bench"),
    ("Helicone-User-Id", "bench-user"),
)
GZIP = (("Accept-Encoding", "gzip, deflate"),)  # the SDK's default; the stand-in then gzips JSON
SMALL = b'{"messages":[{"role":"user","content":"Say hi"}],"model":"gpt-4o-mini"}'
# The stand-in's 40-sentence answer cut at 40 tokens: 43 SSE events ("a few dozen chunks").
STREAM = b'{"messages":[{"role":"user","content":"Say hi"}],"model":"gpt-4o-mini","max_tokens":40,"stream":true}'
LONG = (("x-standin-scenario", "long"),)
# The short answer streamed: 16 events. Used for TTFB, where only the first event matters and
# shorter streams give more samples in the same time.
SHORT_STREAM = b'{"messages":[{"role":"user","content":"Say hi"}],"model":"gpt-4o-mini","stream":true}'

# The fastest-relay issue's targets (one worker, records written); bench/peers.py has its other
# throughput measure, 6 times Portkey's gateway in the same run.
TARGET_ADDED_P50_MS = 0.25
TARGET_ADDED_P99_MS = 0.6
TARGET_RPS_C16 = 7000
TARGET_CPU_US = 150
TARGET_ADDED_TTFB_MS = 0.5
TARGET_RSS_MB = 150


# -- results ---------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """Requests sent to one relaylog, to check the records against afterwards."""

    completed: int = 0  # responses the clients received in full: each must have a record
    cut_off: int = 0  # at most this many more were in flight when a load generator stopped

    def add(self, result: LoadResult) -> None:
        self.completed += result.requests
        self.cut_off += result.connections

    def add_streams(self, times: StreamTimes) -> None:
        self.completed += len(times.ttfb_ms)
        self.cut_off += times.failures


@dataclass
class RecordCheck:
    expected: int
    cut_off: int
    found: int
    complete: int
    disconnects: int
    other: Counter[str]

    @property
    def ok(self) -> bool:
        return self.complete >= self.expected and self.found <= self.expected + self.cut_off


@dataclass
class Column:
    """Everything measured against one target: the stand-in directly, or one relaylog setup."""

    label: str
    plain: dict[int, LoadResult] = field(default_factory=dict)  # non-streamed, by concurrency
    # CPU cores busy per run ("plain c=16", "streams"...): relaylog, stand-in, load gen, other processes
    cores: dict[str, dict[str, float]] = field(default_factory=dict)
    ttfb: StreamTimes | None = None
    streams: LoadResult | None = None
    rss_idle_kb: int = 0
    pss_idle_kb: int = 0
    rss_peak: RssPeak | None = None
    hwm_kb: int = 0
    records: RecordCheck | None = None
    drain_s: float = 0.0
    ledger: Ledger = field(default_factory=Ledger)
    profile: str = ""  # py-spy summary, when asked for


@dataclass
class Options:
    duration: int
    ttfb_seconds: float
    rss_seconds: int
    concurrency: list[int]
    stream_concurrency: int
    rss_streams: int
    rss_pace_ms: float
    ttfb_pace_ms: float
    workers: list[int]
    gzip: bool
    tool: str
    profile: int
    keep: bool
    python: str  # the interpreter relaylog runs on
    trees: list[Path]  # other checkouts of relaylog, measured in the same run


# -- measuring -------------------------------------------------------------------------------------


def calls(base: str, opts: Options) -> dict[str, Call]:
    url = base + PATH
    headers = SDK_HEADERS + (GZIP if opts.gzip else ())
    ttfb_fault = (("x-standin-fault", f"chunk-delay-ms={opts.ttfb_pace_ms:g}"),)
    rss_fault = (("x-standin-fault", f"chunk-delay-ms={opts.rss_pace_ms:g}"),)
    return {
        "plain": Call(url, SMALL, headers),
        "stream": Call(url, STREAM, SDK_HEADERS + LONG),
        "ttfb": Call(url, SHORT_STREAM, SDK_HEADERS + ttfb_fault),
        "paced": Call(url, STREAM, SDK_HEADERS + LONG + rss_fault),
    }


def warm_up(call_set: dict[str, Call], opts: Options, ledger: Ledger | None) -> None:
    """One call of each kind (fills the stand-in's reply cache, opens relaylog's upstream pool),
    then a second of load so neither side is measured cold."""
    for name in ("plain", "stream", "ttfb"):
        call = call_set[name]
        request = urllib.request.Request(call.url, data=call.body, headers=dict(call.headers), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        if ledger is not None:
            ledger.completed += 1
    result = run_load(call_set["plain"], 16, 1, tool=opts.tool)
    if ledger is not None:
        ledger.add(result)


def measure(col: Column, call_set: dict[str, Call], opts: Options, standin: Proc, relay: Proc | None) -> None:
    """The measurements shared by the direct and relayed columns, in a fixed order."""
    ledger = col.ledger if relay is not None else None
    for c in opts.concurrency:
        meter = _CpuMeter(standin, relay)
        col.plain[c] = run_load(call_set["plain"], c, opts.duration, tool=opts.tool)
        col.cores[f"plain c={c}"] = meter.cores()
        if ledger is not None:
            ledger.add(col.plain[c])
    meter = _CpuMeter(standin, relay)
    col.ttfb = measure_ttfb(call_set["ttfb"], opts.ttfb_seconds)
    col.cores["ttfb"] = meter.cores()
    meter = _CpuMeter(standin, relay)
    col.streams = run_load(call_set["stream"], opts.stream_concurrency, opts.duration, tool=opts.tool)
    col.cores["streams"] = meter.cores()
    if ledger is not None:
        ledger.add_streams(col.ttfb)
        ledger.add(col.streams)


class _CpuMeter:
    """CPU used over one run, in cores: relaylog, the stand-in, the load generator (wrk, or this
    process for the TTFB probe and the aiohttp fallback) and, from /proc/stat, every other process on
    the machine. "other" is what makes a run on a shared machine untrustworthy, so it is reported."""

    def __init__(self, standin: Proc, relay: Proc | None) -> None:
        self.standin, self.relay = standin, relay
        self.start = time.monotonic()
        self.before = self._now()

    def _now(self) -> dict[str, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once it has been reaped
        own = resource.getrusage(resource.RUSAGE_SELF)
        now = {
            "relaylog": self.relay.cpu_seconds() if self.relay is not None else 0.0,
            "relaylog other threads": self.relay.helper_thread_cpu_seconds() if self.relay is not None else 0.0,
            "stand-in": self.standin.cpu_seconds(),
            "load gen": children.ru_utime + children.ru_stime + own.ru_utime + own.ru_stime,
            "machine": machine_busy_seconds(),
        }
        return now

    def cores(self) -> dict[str, float]:
        after, elapsed = self._now(), time.monotonic() - self.start
        used = {k: (after[k] - self.before[k]) / elapsed for k in after}
        machine = used.pop("machine")
        helpers = used.pop("relaylog other threads")  # part of "relaylog", not to be counted twice
        used["other"] = max(0.0, machine - sum(used.values()))
        if self.relay is None:
            del used["relaylog"]
        else:
            used["relaylog writer thread"] = helpers
        return used


def measure_memory(col: Column, call_set: dict[str, Call], opts: Options, relay: Proc) -> None:
    """RSS of relaylog (all its processes) while `rss_streams` paced streams overlap."""
    col.rss_idle_kb = sum(relay.rss_kb().values())
    col.pss_idle_kb = relay.pss_kb()
    with RssSampler(relay) as sampler:
        result = run_load(call_set["paced"], opts.rss_streams, opts.rss_seconds, timeout_s=60, tool=opts.tool)
    col.ledger.add(result)
    col.rss_peak = sampler.peak
    col.hwm_kb = sum(relay.hwm_kb().values())


def count_records(data_dir: Path, ledger: Ledger) -> RecordCheck:
    """Lines in raw/**/*.jsonl, split by error_type. Matching the raw bytes is safe: inside a JSON
    string value every quote is escaped, so `"error_type":null` can only be the field itself."""
    found = complete = disconnects = 0
    other: Counter[str] = Counter()
    for path in (data_dir / "raw").glob("**/*.jsonl"):
        with open(path, "rb") as f:
            for line in f:
                found += 1
                if b'"error_type":null' in line:
                    complete += 1
                elif b'"error_type":"client_disconnect"' in line:
                    disconnects += 1
                else:
                    start = line.find(b'"error_type":')
                    other[line[start + 13 : start + 40].split(b",", 1)[0].decode(errors="replace")] += 1
    return RecordCheck(ledger.completed, ledger.cut_off, found, complete, disconnects, other)


def run_direct(standin_url: str, standin: Proc, opts: Options) -> Column:
    col = Column("direct")
    call_set = calls(standin_url, opts)
    warm_up(call_set, opts, None)
    measure(col, call_set, opts, standin, None)
    return col


def run_relayed(workers: int, standin_url: str, standin: Proc, opts: Options, work: Path, tree: Path = REPO) -> Column:
    """relaylog serve from this checkout, or from `tree` (another checkout) when given."""
    name = "relaylog" if tree == REPO else tree.name
    col = Column(f"{name} w={workers}")
    data_dir = work / f"data-{name}-w{workers}"
    relay, url = start_relaylog(work, standin_url, data_dir, workers, python=opts.python, tree=tree)
    try:
        call_set = calls(url, opts)
        warm_up(call_set, opts, col.ledger)
        _wait_for_records(data_dir, col.ledger.completed)  # the writer's first record loads genai-prices
        measure(col, call_set, opts, standin, relay)
        measure_memory(col, call_set, opts, relay)
        if opts.profile and workers == 1:
            col.profile = profile(relay, call_set, opts, work, col.ledger)
    finally:
        # Graceful stop: the sink flushes its queue on shutdown; the time it takes is the backlog.
        col.drain_s = relay.stop()
    col.records = count_records(data_dir, col.ledger)
    return col


def _wait_for_records(data_dir: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = sum(p.read_bytes().count(b"\n") for p in (data_dir / "raw").glob("**/*.jsonl"))
        if lines >= count:
            return
        time.sleep(0.05)


# -- profiling -------------------------------------------------------------------------------------


def profile(relay: Proc, call_set: dict[str, Call], opts: Options, work: Path, ledger: Ledger) -> str:
    """py-spy on relaylog during an extra (unscored) c=16 run; returns a summary of where time goes.

    `--gil` samples only the thread holding the GIL: a single-process relaylog can never use more
    than one core of Python, so GIL time is the budget each request spends. `--nonblocking` reads the
    stacks without stopping the process, so the run is barely slowed (blocking sampling halved it)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return "--profile: py-spy not found (pip install py-spy)"
    out = work / "profile-c16.txt"
    rate = 200
    argv = [spy, "record", "--pid", str(relay.pid), "--rate", str(rate), "--gil", "--nonblocking", "--threads",
            "--format", "raw", "--duration", str(opts.profile), "--output", str(out)]  # fmt: skip
    spy_proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # py-spy attaches first, so the whole load run is sampled
        result = run_load(call_set["plain"], 16, opts.profile, tool=opts.tool)
        ledger.add(result)
        _, err = spy_proc.communicate(timeout=opts.profile + 30)
    finally:
        if spy_proc.poll() is None:
            spy_proc.kill()
            spy_proc.wait()
    if not out.exists():
        return f"--profile: py-spy wrote nothing: {err.strip()}"
    return summarise_profile(out, result, rate * opts.profile)


def summarise_profile(path: Path, result: LoadResult, expected_samples: int, top: int = 30) -> str:
    """Shares of GIL samples: by thread, by component (module of the running frame), by function."""
    threads: Counter[str] = Counter()
    components: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        thread, *frames = stack.split(";")
        role = "writer" if "writer" in thread else "loop"
        total += count
        threads[thread.split(": ", 1)[-1]] += count
        leaf = frames[-1] if frames else "(no Python frame)"
        components[f"[{role}] {_component(leaf)}"] += count
        self_time[f"[{role}] {_short(leaf)}"] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
    if not total:
        return f"py-spy recorded no samples ({path})"
    per_request_us = result.seconds * 1e6 / result.requests if result.requests else 0.0

    def block(title: str, counts: Counter[str], n: int) -> list[str]:
        rows = [f"{v / total:6.1%}  {k}" for k, v in counts.most_common(n)]
        return ["", title, *rows]

    lines = [
        f"py-spy --gil --nonblocking on relaylog w=1 during an extra c=16 non-streamed run ({opts_note(result)})",
        f"GIL held in {total / expected_samples:.0%} of {expected_samples} sample slots; "
        f"at {result.rps:,.0f} req/s that is about {total / expected_samples * per_request_us:.0f} us of GIL "
        "per request",
        f"raw collapsed stacks (flamegraph.pl input): {path}",
        "GIL samples by thread: " + ", ".join(f"{t} {n / total:.0%}" for t, n in threads.most_common()),
        "(a frame's self time includes the C code it calls: socket writes, uvloop, httptools, orjson, zlib)",
    ]
    lines += block("by component (module of the running frame):", components, 15)
    lines += block(f"top {top} functions by self time:", self_time, top)
    lines += block(
        f"top {top} functions by inclusive time (a coroutine resumed by the event loop is sampled "
        "without the frames that started it, so outer frames are undercounted):",
        inclusive,
        top,
    )
    return "\n".join(lines)


def opts_note(result: LoadResult) -> str:
    return f"{result.rps:,.0f} req/s while sampled, p50 {result.p50_ms:.2f} ms"


def _component(frame: str) -> str:
    """The module a frame runs in: relaylog modules by path, libraries by package."""
    where = frame.partition(" (")[2].rsplit(":", 1)[0]
    if not where:
        return frame
    if where.startswith("relaylog/"):
        return where
    if where.startswith("asyncio/runners.py"):
        return "uvloop event loop (C, under asyncio.Runner.run)"
    return where.split("/", 1)[0] if "/" in where else where


def _short(frame: str) -> str:
    # "send (uvicorn/protocols/http/httptools_impl.py:512)" -> without the line, so a function sums up
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


# -- report ----------------------------------------------------------------------------------------


def machine_info(opts: Options) -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        aiohttp = metadata.version("aiohttp")
    except metadata.PackageNotFoundError:
        aiohttp = "-"
    wrk = "wrk " + (_wrk_version() if WRK and opts.tool != "aiohttp" else "not used (aiohttp client)")
    before = machine_busy_seconds()
    time.sleep(1)  # what the rest of the machine is doing before the benchmark adds anything
    busy = machine_busy_seconds() - before
    return "\n".join(
        [
            f"machine: nproc {len(os.sched_getaffinity(0))} ({cpu}), {platform.system()} {platform.release()}, "
            f"{busy:.2f} cores busy before start (load average {os.getloadavg()[0]:.2f})",
            f"relaylog: {interpreter(opts.python)}",
            f"this benchmark: python {platform.python_version()} ({sys.executable}), aiohttp {aiohttp}; {wrk}",
            "stand-in, relaylog and the load generator all share these cores"
            + ("; one wrk thread per run." if "not used" not in wrk else "; the client runs in this process."),
        ]
    )


def _wrk_version() -> str:
    out = subprocess.run([WRK or "wrk", "-v"], capture_output=True, text=True).stdout
    return out.split()[1] if len(out.split()) > 1 else "?"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(direct: Column, relayed: list[Column], opts: Options, elapsed: float) -> str:
    rows: list[list[str]] = []
    verdicts: list[list[str]] = []

    def row(label: str, d: float | None, vals: list[float], fmt: str, ratio: bool = True,
            target: str = "", passed: list[bool] | None = None) -> None:  # fmt: skip
        cells = [label, "" if d is None else format(d, fmt)]
        for v in vals:
            cells += [format(v, fmt), _ratio(v, d) if ratio and d is not None else ""]
        rows.append(cells + [target])
        verdicts.append([_verdict(p) for p in passed] if passed else [])

    def section(title: str) -> None:
        rows.append([title])
        verdicts.append([])

    section(f"non-streamed chat completion ({len(SMALL)} B request, {'gzip' if opts.gzip else 'identity'} response)")
    for c in opts.concurrency:
        passed = [r.plain[c].rps >= TARGET_RPS_C16 for r in relayed] if c == 16 else None
        row(f"  req/s  c={c}", direct.plain[c].rps, [r.plain[c].rps for r in relayed], ",.0f",
            target=f">= {TARGET_RPS_C16:,}" if c == 16 else "", passed=passed)  # fmt: skip
    cpu = [_cpu_per_request(r, "relaylog") for r in relayed]
    row("  CPU us/req c=16 *", _cpu_per_request(direct, "stand-in"), cpu, ",.0f",
        target=f"<= {TARGET_CPU_US}", passed=[c <= TARGET_CPU_US for c in cpu])  # fmt: skip
    row("    of which writer thread(s) *", None, [_cpu_per_request(r, "relaylog writer thread") for r in relayed],
        ",.0f", False)  # fmt: skip
    for c in opts.concurrency:
        row(f"  p50 ms c={c}", direct.plain[c].p50_ms, [r.plain[c].p50_ms for r in relayed], ".3f")
        row(f"  p99 ms c={c}", direct.plain[c].p99_ms, [r.plain[c].p99_ms for r in relayed], ".3f")
    if 1 in opts.concurrency:
        added50 = [r.plain[1].p50_ms - direct.plain[1].p50_ms for r in relayed]
        added99 = [r.plain[1].p99_ms - direct.plain[1].p99_ms for r in relayed]
        row("  added p50 ms c=1", None, added50, ".3f", False, f"<= {TARGET_ADDED_P50_MS}",
            [a <= TARGET_ADDED_P50_MS for a in added50])  # fmt: skip
        row("  added p99 ms c=1", None, added99, ".3f", False, f"<= {TARGET_ADDED_P99_MS}",
            [a <= TARGET_ADDED_P99_MS for a in added99])  # fmt: skip

    pace = opts.ttfb_pace_ms
    section(f"streamed chat completion (TTFB: 16 events paced {pace:g} ms, c=1; throughput: 43 events unpaced)")
    assert direct.ttfb is not None and direct.streams is not None
    d50, d99 = _pcts(direct.ttfb.ttfb_ms)
    r_pcts = [_pcts(r.ttfb.ttfb_ms if r.ttfb else []) for r in relayed]
    row("  TTFB p50 ms c=1", d50, [p[0] for p in r_pcts], ".3f")
    row("  TTFB p99 ms c=1", d99, [p[1] for p in r_pcts], ".3f")
    row("  added TTFB p50 ms", None, [p[0] - d50 for p in r_pcts], ".3f", False, f"<= {TARGET_ADDED_TTFB_MS:g}",
        [p[0] - d50 <= TARGET_ADDED_TTFB_MS for p in r_pcts])  # fmt: skip
    row("  added TTFB p99 ms", None, [p[1] - d99 for p in r_pcts], ".3f", False)
    row("  TTFB samples", len(direct.ttfb.ttfb_ms), [len(r.ttfb.ttfb_ms) if r.ttfb else 0 for r in relayed], "d", False)
    sc = opts.stream_concurrency
    row(f"  streams/s c={sc}", direct.streams.rps, [r.streams.rps if r.streams else 0 for r in relayed], ",.0f")
    stream_p50 = [r.streams.p50_ms if r.streams else 0 for r in relayed]
    row(f"  stream p50 ms c={sc}", direct.streams.p50_ms, stream_p50, ".3f")

    section(f"relaylog memory ({opts.rss_streams} concurrent streams, 43 events paced {opts.rss_pace_ms:g} ms)")
    mb = 1024
    peaks = [(r.rss_peak.total_kb if r.rss_peak else 0) / mb for r in relayed]
    row("  RSS MB idle (warm)", None, [r.rss_idle_kb / mb for r in relayed], ".1f", False)
    row("  PSS MB idle (warm)", None, [r.pss_idle_kb / mb for r in relayed], ".1f", False)
    row("  RSS MB peak while streaming", None, peaks, ".1f", False, f"<= {TARGET_RSS_MB}",
        [p <= TARGET_RSS_MB for p in peaks])  # fmt: skip
    largest = [max((r.rss_peak.per_pid_kb if r.rss_peak else {}).values(), default=0) / mb for r in relayed]
    row("  of which largest process", None, largest, ".1f", False)
    row("  PSS MB peak (shared pages once)", None, [(r.rss_peak.pss_kb if r.rss_peak else 0) / mb for r in relayed],
        ".1f", False)  # fmt: skip
    row("  VmHWM MB (whole run)", None, [r.hwm_kb / mb for r in relayed], ".1f", False)

    section("machine")
    others = [max(_others(r)) for r in relayed]
    row("  other processes' CPU, cores (max of runs)", max(_others(direct)), others, ".2f", False)

    section("records (raw/**/*.jsonl lines)")
    table = _render(rows, verdicts, direct, relayed)
    lines = [table]
    for r in relayed:
        if r.records is not None:
            lines.append(_records_line(r))
    lines.append(_cpu_line(direct, relayed))
    lines.append("* CPU per request at c=16: the stand-in's (direct column), relaylog's, all its processes (others);")
    lines.append("  writer thread(s): relaylog's threads other than each process's main (event loop) thread")
    lines += _warnings(direct, relayed)
    lines.append(f"total benchmark time {elapsed:.0f} s")
    return "\n".join(lines)


def _pcts(values: list[float]) -> tuple[float, float]:
    return percentile(values, 50), percentile(values, 99)


def _render(rows: list[list[str]], verdicts: list[list[str]], direct: Column, relayed: list[Column]) -> str:
    header = ["", direct.label]
    for r in relayed:
        header += [r.label, "ratio"]
    header += ["target"] + [r.label.removeprefix("relaylog ") for r in relayed]
    full = [header] + [cells + v if len(cells) > 1 else cells for cells, v in zip(rows, verdicts, strict=True)]
    widths = [max(len(r[i]) for r in full if len(r) > 1 and i < len(r)) for i in range(len(header))]
    out = []
    for cells in full:
        if len(cells) == 1:  # a section title spans the table
            out.append(cells[0])
            continue
        # rows without verdicts are shorter than the header: zip stops at the row's last cell
        padded = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=False)]
        out.append("  ".join(padded).rstrip())
    return "\n".join(out)


def _records_line(r: Column) -> str:
    rec = r.records
    assert rec is not None
    extra = f", other {dict(rec.other)}" if rec.other else ""
    return (
        f"  {r.label}: expected {rec.expected:,} (+ up to {rec.cut_off:,} cut off in flight when a load run stopped), "
        f"found {rec.found:,} (complete {rec.complete:,}, client_disconnect {rec.disconnects:,}{extra}); "
        f"writer drained in {r.drain_s:.1f} s at shutdown  {_verdict(rec.ok)}"
    )


def _cpu_per_request(col: Column, who: str) -> float:
    run, cores = col.plain.get(16), col.cores.get("plain c=16", {})
    return cores.get(who, 0.0) * run.seconds / run.requests * 1e6 if run and run.requests else 0.0


def _others(col: Column) -> list[float]:
    return [c["other"] for c in col.cores.values()] or [0.0]


def _cpu_line(direct: Column, relayed: list[Column]) -> str:
    parts = []
    for col in [direct, *relayed]:
        shares = ", ".join(f"{k} {v:.2f}" for k, v in col.cores.get("plain c=16", {}).items())
        parts.append(f"{col.label}: {shares}")
    return "CPU cores busy during non-streamed c=16 -- " + "; ".join(parts)


def _warnings(direct: Column, relayed: list[Column]) -> list[str]:
    out = []
    for col in [direct, *relayed]:
        results = list(col.plain.values()) + ([col.streams] if col.streams else [])
        bad = sum(r.non2xx for r in results)
        errors = sum(r.socket_errors for r in results)
        if bad or errors:
            out.append(f"WARNING {col.label}: {bad} non-2xx responses, {errors} socket errors/timeouts")
        if col.ttfb is not None and col.ttfb.failures:
            out.append(f"WARNING {col.label}: {col.ttfb.failures} TTFB probe failures")
        busy = {run: c["other"] for run, c in col.cores.items() if c["other"] > 0.15}
        if busy:
            runs = ", ".join(f"{run} {v:.2f}" for run, v in busy.items())
            out.append(f"WARNING {col.label}: other processes used CPU during runs (cores: {runs}); numbers perturbed")
    return out


# -- main ------------------------------------------------------------------------------------------


def add_python_option(parser: argparse.ArgumentParser) -> None:
    """--python: the interpreter relaylog runs on (here and in peers.py)."""
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter relaylog runs on (its environment must hold requirements/serve.txt)",
    )


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per throughput run (default 5)")
    parser.add_argument("--ttfb-seconds", type=float, default=5, help="seconds of TTFB probing per target (default 5)")
    parser.add_argument("--rss-seconds", type=int, default=5, help="seconds of paced streams for RSS (default 5)")
    parser.add_argument("--concurrency", default="1,16,64", help="non-streamed concurrencies (default 1,16,64)")
    parser.add_argument("--stream-concurrency", type=int, default=16)
    parser.add_argument("--rss-streams", type=int, default=64)
    parser.add_argument("--rss-pace-ms", type=float, default=50, help="ms between events of the RSS streams")
    parser.add_argument("--ttfb-pace-ms", type=float, default=1, help="ms between events of the TTFB streams")
    parser.add_argument("--workers", default="1,2", help="relaylog --workers values, one column each (default 1,2)")
    parser.add_argument("--no-gzip", action="store_true", help="do not send Accept-Encoding: gzip, deflate")
    parser.add_argument("--load-generator", choices=("auto", "wrk", "aiohttp"), default="auto")
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                        help="py-spy relaylog (w=1) during an extra c=16 run of this length")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="2 s runs: about half the time, noisier")
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs")
    parser.add_argument("--tree", action="append", default=[], type=Path,
                        help="another relaylog checkout, measured in the same run (repeatable)")  # fmt: skip
    add_python_option(parser)
    a = parser.parse_args(argv)
    if a.quick:
        a.duration, a.ttfb_seconds, a.rss_seconds = 2, 2, 3
    concurrency = [int(c) for c in a.concurrency.split(",")]
    if 16 not in concurrency or 1 not in concurrency:
        parser.error("--concurrency must include 1 and 16 (the targets are defined there)")
    return Options(
        duration=a.duration, ttfb_seconds=a.ttfb_seconds, rss_seconds=a.rss_seconds, concurrency=concurrency,
        stream_concurrency=a.stream_concurrency, rss_streams=a.rss_streams, rss_pace_ms=a.rss_pace_ms,
        ttfb_pace_ms=a.ttfb_pace_ms, workers=[int(w) for w in a.workers.split(",")], gzip=not a.no_gzip,
        tool=a.load_generator, profile=a.profile, keep=a.keep, python=a.python,
        trees=[tree.resolve() for tree in a.tree],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.tool == "wrk" and WRK is None:
        print("wrk not found", file=sys.stderr)
        return 2
    if opts.tool == "auto" and WRK is None:
        print("wrk not found: falling back to an in-process aiohttp client (slower, numbers lower)", file=sys.stderr)
    print(machine_info(opts), flush=True)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="relaylog-bench-"))
    try:
        standin, standin_url = start_standin(work)
        _progress("direct to the stand-in")
        direct = run_direct(standin_url, standin, opts)
        relayed = []
        for workers in opts.workers:
            for tree in (REPO, *opts.trees):
                _progress(f"through relaylog serve --workers {workers}" + (f" from {tree}" if tree != REPO else ""))
                relayed.append(run_relayed(workers, standin_url, standin, opts, work, tree))
        standin.stop()
        print()
        print(report(direct, relayed, opts, time.monotonic() - started))
        for col in relayed:
            if col.profile:
                print()
                print(col.profile)
        ok = all(r.records is not None and r.records.ok for r in relayed)
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the stand-in and relaylog", file=sys.stderr)
        return 130
    finally:
        kill_all()
        if opts.keep or opts.profile:
            print(f"logs and data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _progress(what: str) -> None:
    print(f"... measuring {what}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
