"""Records → Parquet for Athena, written with DuckDB (no pyarrow in the Lambda package).

One column per record field (record.FIELDS), named as the field, typed as the local store types
it (store/schema.py: VARCHAR, BIGINT, DOUBLE, BOOLEAN, properties MAP(VARCHAR, VARCHAR); the
bodies are VARCHAR columns of their own), except `dt`, which Athena and DuckDB both take from
the Hive path `curated/dt=YYYY-MM-DD/`. Only the aggregator imports this module: the proxy
function never loads DuckDB.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import orjson

from ..aws import layout
from ..store.schema import COLUMNS

PARQUET_COLUMNS: dict[str, str] = {name: kind for name, kind in COLUMNS.items() if name != "dt"}
COMPRESSION = "zstd"  # Athena reads ZSTD and Snappy; ZSTD makes the smaller files


def curated_key(bucket: str, key: str, version: str, dt: str) -> str:
    """Where one source object's records of day `dt` go: named from the object, so that a redelivery
    overwrites its own file instead of adding a duplicate next to it."""
    name = hashlib.sha256(f"{bucket}/{key}#{version}".encode()).hexdigest()[:32]
    return f"{layout.partition_path(layout.CURATED_PREFIX, dt)}{name}.parquet"


def write_parquet(records: Sequence[Mapping[str, Any]], path: str | Path) -> int:
    """Write `records` to one Parquet file at `path`; returns the number of rows written."""
    columns = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in COLUMNS.items()) + "}"
    select = ", ".join(f'"{name}"' for name in PARQUET_COLUMNS)
    scratch = Path(tempfile.gettempdir())
    # DuckDB's default spill directory is under the working directory, read-only on Lambda.
    config: dict[str, str | bool | int | float | list[str]] = {"temp_directory": str(scratch / "duckdb")}
    with tempfile.NamedTemporaryFile(suffix=".jsonl", dir=scratch) as staged, duckdb.connect(config=config) as db:
        staged.write(b"".join(orjson.dumps(record) + b"\n" for record in records))
        staged.flush()
        db.execute(
            f"COPY (SELECT {select} FROM read_json(?, format = 'newline_delimited', columns = {columns})) "
            f"TO ? (FORMAT parquet, COMPRESSION {COMPRESSION})",
            [staged.name, os.fspath(path)],
        )
        written = db.fetchone()
    return int(written[0]) if written else 0
