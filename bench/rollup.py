"""Records per second of the aggregator's pure rollup computation (records → deltas, no I/O), in one process.

    .venv/bin/python bench/rollup.py [records]

Synthetic records with a realistic spread, in arrival order as Firehose delivers them: 12 models
over 4 providers, 2,000 users, 5,000 sessions (60% of calls in one), 0-3 properties each, 5 keys,
3% errors, 1% without usage, one model without a price; 6 hours of traffic. The aggregator rolls
up one S3 object at a time, so the records are cut into objects of each size in the table.
Rates are per CPU second of this process (the machine may be shared) and per wall-clock second,
best of 3 runs, with Python's default collector settings. Target: at least 50,000 records/s.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relaylog.aggregate.rollup import rollup  # noqa: E402

from tests.support.records import make_record  # noqa: E402

TARGET = 50_000
MODELS = [(f"model-{i}", ("openai", "anthropic", "gemini", "groq")[i % 4]) for i in range(12)]


def synthetic(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    start = datetime(2026, 11, 26, 8, tzinfo=UTC)
    times = sorted(start + timedelta(seconds=rng.random() * 6 * 3600) for _ in range(n))
    template = make_record(start)
    records = []
    for i, created in enumerate(times):
        model, provider = rng.choice(MODELS)
        failed = rng.random() < 0.03
        no_usage = failed or rng.random() < 0.01
        cached = provider == "anthropic" and rng.random() < 0.5
        records.append(
            {
                **template,
                "request_id": f"r{i}",
                "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "dt": created.strftime("%Y-%m-%d"),
                "hour": created.strftime("%H"),
                "model": model,
                "provider": provider,
                "user_id": f"user-{rng.randrange(2000)}",
                "session_id": f"s-{rng.randrange(5000)}" if rng.random() < 0.6 else None,
                "properties": {f"p{k}": f"v{rng.randrange(5)}" for k in range(rng.randrange(4))},
                "key_id": f"key_{rng.randrange(5)}",
                "status": 500 if failed else 200,
                "error_type": "upstream_error" if failed else None,
                "input_tokens": None if no_usage else rng.randrange(10, 4000),
                "output_tokens": None if no_usage else rng.randrange(1, 800),
                "cache_read_tokens": None if no_usage else (rng.randrange(0, 2000) if cached else 0),
                "cache_write_tokens": rng.randrange(0, 500) if cached and not no_usage else None,
                "reasoning_tokens": None if no_usage else 0,
                "cost_usd": None if no_usage or model == "model-11" else rng.randrange(1, 10**6) * 1.1e-8,
                "latency_ms": rng.lognormvariate(6.5, 0.8),
                "ttft_ms": None if failed else rng.lognormvariate(5.5, 0.6),
            }
        )
    return records


def best_of(runs: int, work: Callable[[], int]) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, result) of the fastest run."""
    cpu = wall = float("inf")
    result = 0
    for _ in range(runs):
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        result = work()
        cpu = min(cpu, time.process_time() - started_cpu)
        wall = min(wall, time.perf_counter() - started_wall)
    return cpu, wall, result


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    records = synthetic(n)
    print(f"{n:,} records; target >= {TARGET:,} records/s")
    header = ("records per object", "records/s (CPU)", "records/s (wall)", "deltas/record")
    print("{:>20} {:>16} {:>17} {:>14}".format(*header))
    for size in (1_000, 10_000, n):
        objects = [records[offset : offset + size] for offset in range(0, n, size)]

        def run(objects: list[list[dict[str, Any]]] = objects) -> int:
            return sum(len(rollup(o)) for o in objects)

        cpu, wall, deltas = best_of(3, run)
        verdict = "PASS" if n / cpu >= TARGET else "MISS"
        print(f"{size:>20,} {n / cpu:>16,.0f} {n / wall:>17,.0f} {deltas / n:>14.2f}   {verdict}")


if __name__ == "__main__":
    main()
