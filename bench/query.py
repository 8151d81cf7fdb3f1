"""Query API speed on a large local store: requests list pages and 30-day stats over N records.

    .venv/bin/python bench/query.py [--records 1000000] [--data-dir DIR] [--keep]

Writes N synthetic records (30 days, 12 models, 2,000 users, 20,000 sessions, 0-3 properties,
3% errors, short chat bodies) the way `relaylog serve` writes them, one JSON-lines file per hour,
into a temporary data dir (or DIR, reused when it already holds the same count). Then, through
the query API app itself (ASGI, in process: parameter parsing, DuckDB, JSON encoding), times each
query: the first run after the Parquet copies exist, then the median and worst of 7 more. The
first query on a fresh store also makes the Parquet copies; that one-off cost is printed apart.
Target: the first page of requests with a filter, and 30-day stats grouped by model, each under
300 ms (the other rows are for reference).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relaylog.query.api import QueryApp  # noqa: E402
from relaylog.query.local import LocalBackend  # noqa: E402
from relaylog.store.local import LocalStore  # noqa: E402

from tests.support.records import make_record  # noqa: E402

TARGET_MS = 300.0
DAYS = 30
END = datetime(2026, 11, 26, 12, tzinfo=UTC)
MODELS = [(f"model-{i}", ("openai", "anthropic", "gemini", "groq")[i % 4]) for i in range(12)]
# (label, path, query, held to the target): the two targets are the first page of requests
# with a filter and a 30-day stats query grouped by model; the others are measured for reference.
QUERIES = [
    ("requests, first page", "/api/v1/requests", "limit=50", True),
    ("requests, model filter", "/api/v1/requests", "model=model-3&limit=50", True),
    ("requests, property filter", "/api/v1/requests", "property=feature=search&limit=50", True),
    ("requests, user filter, 30d", "/api/v1/requests", "user=user-17&since=30d&limit=50", True),
    ("stats 30d by model (day)", "/api/v1/stats", "since=30d&by=model&bucket=day", True),
    ("stats 30d by model (auto)", "/api/v1/stats", "since=30d&by=model", True),
    ("requests, by cost", "/api/v1/requests", "sort=cost&limit=50", False),
    ("stats 30d by model (hour)", "/api/v1/stats", "since=30d&by=model&bucket=hour", False),
    ("stats 24h, all", "/api/v1/stats", "since=24h", False),
    ("users by cost", "/api/v1/users", "since=30d", False),
    ("sessions", "/api/v1/sessions", "since=7d", False),
]


def generate(data_dir: Path, n: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    start = END - timedelta(days=DAYS)
    step = (END - start) / n
    template = make_record(start)
    features = ["search", "chat", "summarise", "classify"]
    out = None
    current = None
    for i in range(n):
        created = start + step * i + timedelta(microseconds=rng.randrange(1000))
        partition = data_dir / "raw" / f"dt={created:%Y-%m-%d}" / f"hour={created:%H}"
        if partition != current:
            if out is not None:
                out.close()
            partition.mkdir(parents=True, exist_ok=True)
            out = (partition / "bench-1.jsonl").open("ab")
            current = partition
        model, provider = rng.choice(MODELS)
        error = rng.random() < 0.03
        input_tokens = rng.randrange(20, 4000)
        output_tokens = rng.randrange(1, 800)
        props = {}
        for name in rng.sample(["feature", "team", "env"], rng.randrange(4)):
            props[name] = rng.choice(features) if name == "feature" else f"{name}-{rng.randrange(5)}"
        question = f"question {i} about {rng.choice(features)}"
        record: dict[str, Any] = {
            **template,
            "request_id": f"{rng.getrandbits(128):032x}",
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "dt": f"{created:%Y-%m-%d}",
            "hour": f"{created:%H}",
            "provider": provider,
            "model": model,
            "response_model": model,
            "status": 500 if error else 200,
            "error_type": "upstream_error" if error else None,
            "latency_ms": round(rng.lognormvariate(6.5, 0.6), 3),
            "ttft_ms": round(rng.lognormvariate(5.5, 0.5), 3),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": None if model == "model-11" else round(input_tokens * 1.5e-7 + output_tokens * 6e-7, 12),
            "user_id": f"user-{rng.randrange(2000)}",
            "session_id": f"session-{rng.randrange(20000)}",
            "session_path": f"/step-{rng.randrange(3)}",
            "properties": props,
            "request_body": orjson.dumps(
                {"model": model, "messages": [{"role": "user", "content": question}]}
            ).decode(),
            "response_body": '{"choices":[{"message":{"role":"assistant","content":"an answer of modest length"}}]}',
        }
        assert out is not None
        out.write(orjson.dumps(record) + b"\n")
    if out is not None:
        out.close()
    # The Parquet copies are made only of files quiet for a while: these are finished.
    old = time.time() - 3600
    for path in (data_dir / "raw").rglob("*.jsonl"):
        os.utime(path, (old, old))
    (data_dir / "bench-records").write_text(str(n))


async def call(app: QueryApp, path: str, query: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(), "headers": []}
    await app(scope, receive, send)
    return sent[0]["status"], sent[1]["body"]


def timed(app: QueryApp, path: str, query: str) -> float:
    started = time.perf_counter()
    status, body = asyncio.run(call(app, path, query))
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise SystemExit(f"{path}?{query} answered {status}: {body[:300]!r}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="relaylog-querybench-"))
    marker = data_dir / "bench-records"
    try:
        if not (marker.exists() and marker.read_text() == str(args.records)):
            shutil.rmtree(data_dir / "raw", ignore_errors=True)
            shutil.rmtree(data_dir / "columnar", ignore_errors=True)
            started = time.perf_counter()
            generate(data_dir, args.records)
            print(f"wrote {args.records:,} records in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        size = sum(p.stat().st_size for p in (data_dir / "raw").rglob("*.jsonl"))
        app = QueryApp(lambda: LocalBackend(LocalStore(data_dir)), keys=None)
        first = timed(app, "/api/v1/stats", "since=1h")
        print(f"first query (makes any missing Parquet copies): {first:,.0f} ms", file=sys.stderr)
        print(f"\n{args.records:,} records, {size / 1e6:,.0f} MB of JSON lines, {DAYS} days; ms per query\n")
        print(f"  {'query':<30} {'first':>8} {'median':>8} {'worst':>8}  target {TARGET_MS:.0f}")
        misses = 0
        for label, path, query, target in QUERIES:
            runs = [timed(app, path, query) for _ in range(8)]
            ok = max(runs[1:]) < TARGET_MS
            misses += target and not ok
            verdict = ("PASS" if ok else "MISS") if target else "(reference)"
            print(f"  {label:<30} {runs[0]:>8.0f} {statistics.median(runs[1:]):>8.0f} {max(runs[1:]):>8.0f}  {verdict}")
        return 1 if misses else 0
    finally:
        if args.data_dir is None and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
