"""One delivered S3 object, end to end: read, roll up exactly once, write its Parquet."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..aws import layout
from .dynamo import apply_once
from .objects import decode
from .parquet import write_parquet
from .rollup import DEFAULT_HOURLY_TTL_DAYS, rollup


@dataclass(frozen=True, slots=True)
class Processed:
    records: int
    bad_lines: int
    chunks_applied: int
    chunks_skipped: int
    parquet_keys: tuple[str, ...]


def handles(key: str) -> bool:
    return key.startswith((layout.RAW_PREFIX, layout.SPOOL_PREFIX))


def process_object(s3: Any, dynamodb: Any, table: str, bucket: str, key: str) -> Processed:
    answer = s3.get_object(Bucket=bucket, Key=key)
    data = answer["Body"].read()
    # The ETag tells a new object under the same key from a redelivery of this one.
    version = answer.get("ETag", "").strip('"')
    records, bad = decode(data, key)
    ttl_days = int(os.environ.get(layout.ENV_HOURLY_TTL_DAYS, DEFAULT_HOURLY_TTL_DAYS))
    applied = apply_once(dynamodb, table, f"{layout.object_pk(bucket, key)}#{version}", rollup(records, ttl_days))
    # Parquet before returning: a crash after the rollups leaves the message to be redelivered,
    # the rollups then skip and these deterministic names are simply overwritten.
    name = hashlib.sha256(f"{bucket}/{key}#{version}".encode()).hexdigest()[:32]
    by_day: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_day.setdefault(record["dt"], []).append(record)
    keys = []
    with tempfile.TemporaryDirectory() as scratch:
        for dt, rows in sorted(by_day.items()):
            local = Path(scratch) / f"{dt}.parquet"
            write_parquet(rows, local)
            target = f"{layout.partition_path(layout.CURATED_PREFIX, dt)}{name}.parquet"
            s3.put_object(Bucket=bucket, Key=target, Body=local.read_bytes())
            keys.append(target)
    return Processed(len(records), bad, applied.chunks, applied.skipped, tuple(keys))
