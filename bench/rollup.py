"""Records per second of the aggregator's pure rollup computation (no I/O), in one process.

    .venv/bin/python bench/rollup.py [records]

Synthetic records with realistic spread: 12 models over 4 providers, 2,000 users, 5,000
sessions, 0-3 properties each, spread over 6 hours. Target: at least 50,000 records/s.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relaylog.aggregate.rollup import rollup  # noqa: E402

from tests.support.records import make_record  # noqa: E402

MODELS = [(f"model-{i}", ("openai", "anthropic", "gemini", "groq")[i % 4]) for i in range(12)]


def synthetic(n: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    start = datetime(2026, 11, 26, 8, tzinfo=UTC)
    template = make_record(start)
    records = []
    for i in range(n):
        model, provider = rng.choice(MODELS)
        created = start + timedelta(seconds=rng.random() * 6 * 3600)
        props = {f"p{k}": f"v{rng.randrange(5)}" for k in range(rng.randrange(4))}
        records.append(
            {
                **template,
                "request_id": f"r{i}",
                "dt": created.strftime("%Y-%m-%d"),
                "hour": created.strftime("%H"),
                "model": model,
                "provider": provider,
                "user_id": f"user-{rng.randrange(2000)}",
                "session_id": f"s-{rng.randrange(5000)}" if rng.random() < 0.6 else None,
                "properties": props,
                "status": 200 if rng.random() < 0.97 else 500,
                "input_tokens": rng.randrange(10, 4000),
                "output_tokens": rng.randrange(1, 800),
                "cost_usd": round(rng.random() / 100, 8),
                "latency_ms": rng.lognormvariate(6.5, 0.8),
                "ttft_ms": rng.lognormvariate(5.5, 0.6),
            }
        )
    return records


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    records = synthetic(n)
    # Firehose objects hold up to a few thousand records; the aggregator rolls up one object at a time.
    rows = []
    for size in (1_000, 10_000, n):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            items = 0
            for offset in range(0, n, size):
                items += len(rollup(records[offset : offset + size]))
            best = min(best, time.perf_counter() - started)
        rows.append((size, n / best, items))
    print(f"{'records per object':>20} {'records/s':>12} {'items written':>14}   target >= 50,000/s")
    for size, rate, items in rows:
        print(f"{size:>20,} {rate:>12,.0f} {items:>14,}   {'PASS' if rate >= 50_000 else 'MISS'}")


if __name__ == "__main__":
    main()
