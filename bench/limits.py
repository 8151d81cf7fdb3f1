"""The AWS data path's limits at a sustained call rate, from measured record sizes.

    .venv/bin/python bench/limits.py [calls per second] [--calls N]

Runs N calls of the soak's mix (tests/support/soak.py: chat, streams, tools, images, errors)
through relaylog's local app against the provider stand-in, reads the records it wrote, and
measures each record as the Firehose sink sends it (its JSON line) and its request index item as
DynamoDB sizes it (bench/writes.py's rules). Then works out, at the given rate, what each part of
the path needs against its default quota. The quotas (us-east-1 defaults) and where they come from:

- Firehose Direct PUT, per stream: 500,000 records/s, 2,000 requests/s, 5 MiB/s in us-east-1,
  us-west-2 and eu-west-1 (1 MiB/s, 1,000 requests/s elsewhere); the three scale together when
  raised; PutRecordBatch: 500 records, 4 MiB a call, a record at most 1,000 KiB
  (docs.aws.amazon.com/firehose/latest/dev/limits.html).
- S3: 3,500 PUT and 5,500 GET a second per partitioned prefix
  (docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance.html).
- DynamoDB on demand: 1,000 write and 3,000 read units a second per partition; 40,000 of each per
  table by default; a new table takes 4,000 writes a second at once, then twice its previous peak
  (docs.aws.amazon.com/amazondynamodb/latest/developerguide/on-demand-capacity-mode.html).
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from relaylog.aggregate.index import Source, index_item  # noqa: E402
from relaylog.aws import layout  # noqa: E402
from relaylog.standin import StandIn  # noqa: E402

from bench.writes import size  # noqa: E402
from tests.support.proxy import read_records  # noqa: E402
from tests.support.soak import plan_calls, soak_local  # noqa: E402

MIB = 1024 * 1024
FIREHOSE_MIB_S, FIREHOSE_REQUESTS_S, FIREHOSE_RECORDS_S = 5, 2_000, 500_000
BATCH_RECORDS, BATCH_BYTES = 500, 4 * MIB
S3_PUTS_PER_PREFIX = 3_500
PARTITION_WCU, TABLE_WCU, NEW_TABLE_WCU = 1_000, 40_000, 4_000
BUFFER_MIB, BUFFER_S = 64, 60  # template.yaml's BufferingHints


def percentile(values: list[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def main() -> None:
    rate = int(next((arg for arg in sys.argv[1:] if arg.isdigit()), "10000"))
    calls = int(sys.argv[sys.argv.index("--calls") + 1]) if "--calls" in sys.argv else 600
    with StandIn(record=False) as standin, tempfile.TemporaryDirectory() as work:
        soak_local(plan_calls(7, calls), standin.url, Path(work) / "data", 32, 7)
        records = read_records(Path(work) / "data")
    lines = [len(orjson.dumps(record)) + 1 for record in records]
    source = Source("raw/dt=2026-11-26/hour=08/x.gz", "etag", 30)
    items = [size(item) for i, r in enumerate(records) if (item := index_item(r, source, i, None, 32)) is not None]
    mean, p99 = statistics.fmean(lines), percentile(lines, 0.99)
    print(f"{len(records):,} records of the soak mix: JSON line mean {mean:,.0f} B, p50 {percentile(lines, 0.5):,} B,"
          f" p99 {p99:,} B, max {max(lines):,} B; index item mean {statistics.fmean(items):,.0f} B,"
          f" p99 {percentile(items, 0.99):,} B")  # fmt: skip
    mib_s = rate * mean / MIB
    per_batch = min(BATCH_RECORDS, BATCH_BYTES // max(1, p99))
    print(f"\nat {rate:,} calls a second")
    rows = [
        ("Firehose MiB/s", f"{rate:,} × {mean:,.0f} B", mib_s, FIREHOSE_MIB_S),
        ("Firehose records/s", f"{rate:,}", rate, FIREHOSE_RECORDS_S),
        ("Firehose requests/s", "one PutRecordBatch per call on Lambda (one record)", rate, FIREHOSE_REQUESTS_S),
        ("  batched", f"{per_batch} records a batch at p99 size", rate / per_batch, FIREHOSE_REQUESTS_S),
    ]
    objects_s = max(1 / BUFFER_S, mib_s / BUFFER_MIB)
    rows.append(("S3 PUT/s per prefix", f"raw + Parquet: 2 × {objects_s:.2f}", 2 * objects_s, S3_PUTS_PER_PREFIX))
    index_wcu = rate * statistics.fmean(math.ceil(b / 1024) for b in items)
    rows.append(("DynamoDB index WCU/s", f"{rate:,} × units per item (base table)", index_wcu, TABLE_WCU))
    per_shard = index_wcu / layout.DEFAULT_INDEX_SHARDS
    rows.append(("  per index shard", f"÷ {layout.DEFAULT_INDEX_SHARDS} shards", per_shard, PARTITION_WCU))
    rows.append(("  unsharded (before)", "one partition a day", index_wcu, PARTITION_WCU))
    print(f"{'':>22} {'arithmetic':<52} {'need':>10} {'quota':>10} {'use':>7}")
    for label, arithmetic, need, quota in rows:
        print(f"{label:>22} {arithmetic:<52} {need:>10,.1f} {quota:>10,} {need / quota:>6.0%}")


if __name__ == "__main__":
    main()
