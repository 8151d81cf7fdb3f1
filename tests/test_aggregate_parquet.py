"""The aggregator's Parquet: the record columns with their types, one file per object and day,
readable by DuckDB the way the saved Athena queries read it."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from relaylog.aggregate.parquet import curated_key, write_parquet
from relaylog.aws import layout
from relaylog.record import FIELDS

from tests.support.aggregator import invoke, load_aggregator
from tests.support.aws import Stack
from tests.support.records import BASE, make_record, sample_records

TYPES = {
    "schema_version": "BIGINT",
    "request_id": "VARCHAR",
    "created_at": "VARCHAR",
    "hour": "VARCHAR",
    "status": "BIGINT",
    "stream": "BOOLEAN",
    "latency_ms": "DOUBLE",
    "ttft_ms": "DOUBLE",
    "input_tokens": "BIGINT",
    "audio_output_tokens": "BIGINT",
    "cost_usd": "DOUBLE",
    "properties": "MAP(VARCHAR, VARCHAR)",
    "request_body": "VARCHAR",
    "response_body": "VARCHAR",
    "request_bytes": "BIGINT",
}


def test_one_column_per_record_field_with_its_type(tmp_path: Path) -> None:
    records = sample_records()
    records[0].update(properties={"Team": "ml", "env": "dev"}, response_body=None, request_body="é" * 10_000)
    path = tmp_path / "one.parquet"
    assert write_parquet(records, path) == len(records)
    described = dict(
        duckdb.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{path}')").fetchall()
    )
    assert list(described) == [name for name in FIELDS if name != "dt"]  # dt comes from the Hive path
    assert {name: described[name] for name in TYPES} == TYPES
    assert set(described.values()) == {"BIGINT", "VARCHAR", "DOUBLE", "BOOLEAN", "MAP(VARCHAR, VARCHAR)"}
    rows = duckdb.execute(f"SELECT * FROM '{path}'").fetchall()
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert dict(zip(described, row, strict=True)) == {k: v for k, v in record.items() if k != "dt"}


def test_parquet_names_come_from_the_object() -> None:
    key = curated_key("b", "raw/dt=2026-11-25/hour=22/x.gz", "etag1", "2026-11-25")
    assert key.startswith("curated/dt=2026-11-25/") and key.endswith(".parquet")
    assert key == curated_key("b", "raw/dt=2026-11-25/hour=22/x.gz", "etag1", "2026-11-25")
    assert key != curated_key("b", "raw/dt=2026-11-25/hour=22/x.gz", "etag2", "2026-11-25")
    assert key != curated_key("b", "raw/dt=2026-11-25/hour=22/y.gz", "etag1", "2026-11-25")


def _download(stack: Stack, target: Path) -> None:
    for key in stack.objects(layout.CURATED_PREFIX):
        local = target / key
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(stack.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read())


def _read(directory: Path) -> list[tuple[Any, ...]]:
    return duckdb.execute(
        "SELECT CAST(dt AS VARCHAR), request_id, status, stream, cost_usd, properties "
        f"FROM read_parquet('{directory}/curated/*/*.parquet', hive_partitioning = true) ORDER BY created_at"
    ).fetchall()


@pytest.mark.aws
def test_records_near_midnight_go_to_their_own_day(aws_stack: Stack, tmp_path: Path) -> None:
    # BASE is 22:10 UTC: the last two records are past midnight.
    records = [
        make_record(BASE + timedelta(minutes=55 * i), status=200 + i, properties={"i": str(i)}) for i in range(4)
    ]
    key = f"raw/dt={BASE:%Y-%m-%d}/hour={BASE:%H}/stream-1-{BASE:%Y-%m-%d-%H}-x.gz"
    aws_stack.put_raw_object(key, records)
    event = aws_stack.sqs_event()
    assert invoke(load_aggregator(), event) == {"batchItemFailures": []}
    written = aws_stack.objects(layout.CURATED_PREFIX)
    assert [k.split("/")[1] for k in written] == ["dt=2026-11-25", "dt=2026-11-26"]
    _download(aws_stack, tmp_path / "first")
    rows = _read(tmp_path / "first")
    assert [(r[0], r[1], r[2], r[5]) for r in rows] == [
        (r["dt"], r["request_id"], r["status"], r["properties"]) for r in records
    ]
    assert [r["dt"] for r in records] == ["2026-11-25", "2026-11-25", "2026-11-26", "2026-11-26"]

    # Delivered again: the same files, rewritten; no duplicate rows.
    assert invoke(load_aggregator(), event) == {"batchItemFailures": []}
    assert aws_stack.objects(layout.CURATED_PREFIX) == written
    _download(aws_stack, tmp_path / "again")
    assert _read(tmp_path / "again") == rows


def test_duckdb_stays_out_of_the_modules_the_other_functions_share() -> None:
    code = (
        "import sys\n"
        "import relaylog.aggregate.rollup, relaylog.histogram, relaylog.aggregate.dynamo\n"
        "import relaylog.aggregate.objects\n"
        "assert 'duckdb' not in sys.modules, 'duckdb imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
