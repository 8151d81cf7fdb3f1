"""One delivered S3 object, end to end: read it, claim its requests (indexing them), apply the rollups
of those it owns exactly once, write them as Parquet. Why in that order: claims.py."""

from __future__ import annotations

import gc
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..aws import layout
from ..rollups import DEFAULT_HOURLY_TTL_DAYS
from .claims import claim
from .dynamo import MARKER_TTL_S, apply_once
from .index import Source, prompt_items, request_items, templates, write_index
from .objects import decode, fetch
from .parquet import curated_key, write_parquet
from .rollup import REQUIRED, rollup
from .shards import DayShards


@dataclass(frozen=True, slots=True)
class Processed:
    records: int
    counted: int  # records this object counts: the others' requests were counted from elsewhere
    duplicates: int  # records whose request another object owns, or an earlier line of this one
    bad_lines: int
    chunks_applied: int
    chunks_skipped: int  # applied by an earlier delivery of the same object
    parquet_keys: tuple[str, ...]
    indexed: int  # request index items put (again, on a redelivery): the requests this object owns
    # The records counted here, for the caller's own once-per-request work (span export); never in
    # a repr, as records hold prompts.
    owned: list[dict[str, Any]] = field(repr=False)
    marker: str  # the object's key for markers (layout.object_pk): its version included

    @property
    def duplicate(self) -> bool:
        """Every chunk had been applied before: a redelivery of an object already counted."""
        return self.chunks_skipped > 0 and self.chunks_applied == 0


def tune_gc() -> None:
    """Collect the young generation every 50,000 allocations instead of 700, as `relaylog serve` does.

    Decoding an object allocates two dicts a record that all live until the object is done; the
    collector's passes over them cost a fifth of the decoding (20,000 records: 104,000 records/s
    with the default thresholds, 127,000 with these). Cycles are still collected.
    """
    gc.set_threshold(50_000, 50, 100)


def handles(key: str) -> bool:
    """Objects under raw/ (Firehose) and spool/ (written by the proxy while Firehose was down)."""
    return key.startswith((layout.RAW_PREFIX, layout.SPOOL_PREFIX))


def hourly_ttl_days() -> int:
    return int(os.environ.get(layout.ENV_HOURLY_TTL_DAYS) or DEFAULT_HOURLY_TTL_DAYS)


def index_days() -> int:
    return int(os.environ.get(layout.ENV_INDEX_DAYS) or layout.DEFAULT_INDEX_DAYS)


def index_shards() -> int:
    shards = int(os.environ.get(layout.ENV_INDEX_SHARDS) or layout.DEFAULT_INDEX_SHARDS)
    if not 1 <= shards <= layout.MAX_INDEX_SHARDS:
        raise ValueError(f"{layout.ENV_INDEX_SHARDS} must be 1 to {layout.MAX_INDEX_SHARDS}, not {shards}")
    return shards


def process_object(s3: Any, dynamodb: Any, table: str, bucket: str, key: str) -> Processed:
    fetched = fetch(s3, bucket, key)
    decoded = decode(fetched.data, f"s3://{bucket}/{key}", REQUIRED)
    source = Source(key, fetched.version, index_days(), int(time.time()) + MARKER_TTL_S)
    found = templates(s3, bucket, decoded.records)
    # Prompt texts first, so that a template hash read from an index item always finds its text.
    write_index(dynamodb, table, prompt_items(found.texts))
    shards = DayShards(dynamodb, table, index_shards())
    claims = claim(
        dynamodb,
        table,
        source,
        len(decoded.records),
        request_items(decoded.records, decoded.lines, source, found.hashes, shards.of),
    )
    counted = [record for record, mine in zip(decoded.records, claims.counted, strict=True) if mine]
    deltas = rollup(counted, hourly_ttl_days())
    marker = layout.object_pk(bucket, key, fetched.version)
    applied = apply_once(dynamodb, table, marker, deltas)
    # Parquet after the rollups: if writing it fails, the message comes back, finds its claims, skips
    # the rollups (their markers exist) and writes these files, named from the object, again.
    by_day: dict[str, list[dict[str, Any]]] = {}
    for record in counted:
        by_day.setdefault(record["dt"], []).append(record)
    written = []
    with tempfile.TemporaryDirectory() as scratch:
        for dt, records in sorted(by_day.items()):
            local = Path(scratch) / f"{dt}.parquet"
            write_parquet(records, local)
            target = curated_key(bucket, key, fetched.version, dt)
            s3.put_object(Bucket=bucket, Key=target, Body=local.read_bytes())
            written.append(target)
    return Processed(
        records=len(decoded.records),
        counted=len(counted),
        duplicates=claims.duplicates,
        bad_lines=decoded.bad_lines,
        chunks_applied=applied.chunks,
        chunks_skipped=applied.skipped,
        parquet_keys=tuple(written),
        indexed=claims.claimed,
        owned=counted,
        marker=marker,
    )
