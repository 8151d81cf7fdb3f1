"""Records → Parquet for Athena, written with DuckDB (no pyarrow in the Lambda package).

One column per record field with the local store's DuckDB types, except `dt`, which Athena and
DuckDB both take from the Hive path `curated/dt=YYYY-MM-DD/`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import orjson

from ..store.schema import COLUMNS

PARQUET_COLUMNS = {name: kind for name, kind in COLUMNS.items() if name != "dt"}


def write_parquet(records: Sequence[Mapping[str, Any]], path: str | Path) -> int:
    """Write `records` to one Parquet file at `path`; returns the number of rows."""
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as staged:
        staged.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
        staged.flush()
        columns = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in COLUMNS.items()) + "}"
        select = ", ".join(f'"{name}"' for name in PARQUET_COLUMNS)
        with duckdb.connect() as db:
            db.execute(
                f"COPY (SELECT {select} FROM read_json(?, format = 'newline_delimited', columns = {columns})) "
                "TO ? (FORMAT parquet, COMPRESSION zstd)",
                [staged.name, str(path)],
            )
    return len(records)
