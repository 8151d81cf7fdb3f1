"""The cost of one record: build_record + orjson.dumps (what LocalSink.submit does on the event loop).

    python bench/record.py                # about 20 s; --seconds per case, --repeat runs per case

It starts `python -m relaylog.standin`, takes real response bodies from it (a small gzip'd chat
completion as the OpenAI SDK receives it, OpenAI chat streams of 16 and 43 events with usage asked
for by relaylog and withheld from the client exactly as the relay does, an Anthropic stream), fills
an Exchange the way the relay's observe steps do, then times building and serialising its record
with time.process_time (CPU of this process, fairly robust on a shared machine). Bodies kept out
of the record go to a store that does nothing. Prints µs per record: the best and the median run.

    python bench/record.py --instructions # about a minute; needs valgrind

also counts the instructions per record under valgrind's cachegrind (the same exchanges, run 0
and N times in a fresh interpreter, the difference divided by N). Exact from run to run, where
the µs of a shared 2-core machine under load vary by ±15%: the figure to compare two versions by.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules next to this file

from procs import kill_all, start_standin  # noqa: E402
from relaylog.config import Settings  # noqa: E402
from relaylog.headers import HeliconeMeta  # noqa: E402
from relaylog.observe import Exchange  # noqa: E402
from relaylog.providers.parsing import parse_request  # noqa: E402
from relaylog.providers.registry import PROVIDERS  # noqa: E402
from relaylog.providers.sse import SSESplitter  # noqa: E402
from relaylog.recording import build_record  # noqa: E402
from relaylog.relay.stream_usage import UsageStripper, inject  # noqa: E402

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
SMALL = b'{"messages":[{"role":"user","content":"Say hi"}],"model":"gpt-4o-mini"}'
SHORT_STREAM = b'{"messages":[{"role":"user","content":"Say hi"}],"model":"gpt-4o-mini","stream":true}'
LONG_STREAM = b'{"messages":[{"role":"user","content":"Say hi"}],"model":"gpt-4o-mini","max_tokens":40,"stream":true}'
ANTHROPIC_STREAM = (
    b'{"model":"claude-sonnet-4-5","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"Say hi"}]}'
)


@dataclass
class Fetched:
    status: int
    content_type: str | None
    content_encoding: str | None
    body: bytes


def fetch(base: str, path: str, body: bytes, headers: dict[str, str]) -> Fetched:
    req = urllib.request.Request(base + path, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (loopback stand-in)
        return Fetched(resp.status, resp.headers.get("Content-Type"), resp.headers.get("Content-Encoding"), resp.read())


class _NoBodies:
    def put(self, request_id: str, dt: str, kind: str, data: bytes) -> str:
        return f"bodies/dt={dt}/{request_id}.{kind}"


def exchange_for(
    provider: str,
    path: str,
    request: bytes,
    answer: Fetched,
    chunks: list[bytes],
    withheld: list[bytes],
    injected: bool,
) -> Exchange:
    """An Exchange told the steps the relay tells it, for one answered call."""
    started = time.perf_counter()
    meta = HeliconeMeta(user_id="bench-user")
    exchange = Exchange("0b8d0c1e-2f4a-4d5b-9c6e-7f8091a2b3c4", time.time(), started, "POST", path, meta)
    exchange.routed(PROVIDERS[provider], path)
    exchange.request_read(request, "application/json")
    exchange.request_parsed(parse_request(PROVIDERS[provider].family, path, request))
    exchange.usage_injected = injected
    exchange.upstream_started = started + 0.0001
    exchange.response_described(answer.content_type, answer.content_encoding)
    exchange.response_started(answer.status, [])
    for chunk in chunks:
        exchange.chunk_sent(chunk)
    exchange.withheld = withheld
    exchange.upstream_finished = started + 0.0009
    exchange.finished = started + 0.001
    exchange.ttft = started + 0.0005
    return exchange


def cases(base: str) -> dict[str, Exchange]:
    openai_headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    small = fetch(base, CHAT, SMALL, {**openai_headers, "Accept-Encoding": "gzip, deflate"})
    assert small.content_encoding == "gzip", small.content_encoding
    out = {"openai small, gzip": exchange_for("openai", CHAT, SMALL, small, [small.body], [], False)}
    for label, request in (("openai stream 16 ev", SHORT_STREAM), ("openai stream 43 ev", LONG_STREAM)):
        asked = inject(request, orjson.loads(request))
        assert asked is not None
        extra = {"x-standin-scenario": "long"} if request is LONG_STREAM else {}
        answer = fetch(base, CHAT, asked, {**openai_headers, **extra})
        stripper = UsageStripper()
        events = SSESplitter().feed(answer.body)
        sent = [piece for event in events if (piece := stripper.feed(event))]
        assert stripper.withheld, "no usage chunk withheld"
        print(f"  {label}: {len(events)} events, {len(answer.body)} bytes", file=sys.stderr)
        out[label] = exchange_for("openai", CHAT, request, answer, sent, stripper.withheld, True)
    answer = fetch(base, MESSAGES, ANTHROPIC_STREAM, {"x-api-key": "sk-bench", "anthropic-version": "2023-06-01"})
    events = SSESplitter().feed(answer.body)
    print(f"  anthropic stream: {len(events)} events, {len(answer.body)} bytes", file=sys.stderr)
    out["anthropic stream"] = exchange_for("anthropic", MESSAGES, ANTHROPIC_STREAM, answer, events, [], False)
    return out


def per_record_us(work: Callable[[], object], seconds: float) -> float:
    """CPU µs per call of `work`, run in batches until `seconds` of CPU have passed."""
    n, spent, batch = 0, 0.0, 100
    while spent < seconds:
        t0 = time.process_time()
        for _ in range(batch):
            work()
        spent += time.process_time() - t0
        n += batch
    return spent / n * 1e6


# Records built per case under valgrind (each costs about 50 times its native time there).
_COUNTED = 2000


def submitter(exchange: Exchange, settings: Settings) -> Callable[[], bytes]:
    """What LocalSink.submit does on the event loop for `exchange`: build the record, serialise it."""
    bodies = _NoBodies()

    def submit() -> bytes:
        return orjson.dumps(build_record(exchange, settings, bodies)) + b"\n"

    return submit


def replay(path: Path, label: str, count: int) -> None:
    """The child run under valgrind: the pickled case's record built once (price and time caches
    filled, as in a running server), then `count` more times."""
    exchanges: dict[str, Exchange] = pickle.loads(path.read_bytes())
    from relaylog.cost import load_prices

    load_prices()
    submit = submitter(exchanges[label], Settings(data_dir=path.parent))
    submit()
    # genai-prices' data is a million long-lived objects: a full collection over them lands in
    # one version's 2,000 records and not in another's (+-15k instructions per record), so they
    # are moved out of the collector's sight first.
    gc.collect()
    gc.freeze()
    for _ in range(count):
        submit()


def instructions(path: Path, label: str, count: int) -> int:
    """Instructions the replay of `label` executes in all (cachegrind's "I refs")."""
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               sys.executable, __file__, "--replay", str(path), "--case", label, "--count", str(count)]  # fmt: skip
    # A fixed hash seed: the same dict layouts, so the same instructions, in every run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)  # noqa: S603 (our own argv)
    found = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
    assert found, result.stderr[-2000:]
    return int(found.group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per run (default 1)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per case (default 5)")
    parser.add_argument("--instructions", action="store_true", help="also count instructions per record (valgrind)")
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)  # the child run under valgrind
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.replay is not None:
        replay(opts.replay, opts.case, opts.count)
        return 0
    if opts.instructions and shutil.which("valgrind") is None:
        parser.error("--instructions needs valgrind (apt-get install valgrind)")

    with tempfile.TemporaryDirectory() as work:
        _standin, base = start_standin(Path(work))
        try:
            exchanges = cases(base)
        finally:
            kill_all()
        settings = Settings(data_dir=Path(work))
        from relaylog.cost import load_prices

        load_prices()
        rows = []
        for label, exchange in exchanges.items():
            submit = submitter(exchange, settings)
            record = orjson.loads(submit())
            assert record["cost_usd"] is not None, (label, record["cost_source"], record["parse_error"])
            assert record["parse_error"] is None, (label, record["parse_error"])
            runs = [per_record_us(submit, opts.seconds) for _ in range(opts.repeat)]
            rows.append((label, min(runs), statistics.median(runs), record["finish_reasons"]))
        counted: dict[str, int] = {}
        if opts.instructions:
            saved = Path(work) / "exchanges.pickle"
            saved.write_bytes(pickle.dumps(exchanges))
            start_up = instructions(saved, next(iter(exchanges)), 0)
            for label in exchanges:
                counted[label] = (instructions(saved, label, _COUNTED) - start_up) // _COUNTED

    head = f"{'record (build_record + orjson.dumps)':<38} {'best µs':>8} {'median µs':>10}"
    print(head + (f" {'instructions':>13}" if counted else "") + "  finish_reasons")
    for label, best, median, reasons in rows:
        count = f" {counted[label]:13,}" if counted else ""
        print(f"{label:<38} {best:8.1f} {median:10.1f}{count}  {reasons}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
