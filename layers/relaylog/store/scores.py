"""Scores and feedback on requests, kept in the local data dir as JSON lines.

`<data-dir>/scores/scores.jsonl`, one line per score: request id, name, value (a number; booleans
as 1/0 with kind "bool"), an optional comment (feedback), and when it was given. A later score of
the same name replaces an earlier one when read. Each POST is a single O_APPEND write, so several
processes can add scores to the same file without interleaving.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

from relaylog.store.columnar import sql_list, sql_string

SCORES_DIR = "scores"
_COLUMNS = {
    "request_id": "VARCHAR",
    "name": "VARCHAR",
    "value": "DOUBLE",
    "kind": "VARCHAR",
    "comment": "VARCHAR",
    "created_at": "VARCHAR",
}
_EMPTY = "SELECT " + ", ".join(f"CAST(NULL AS {t}) AS {n}" for n, t in _COLUMNS.items()) + " WHERE false"


def score_lines(request_id: str, scores: Mapping[str, bool | float], comment: str | None, now: datetime) -> bytes:
    created_at = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lines = []
    for name, value in scores.items():
        line = {
            "request_id": request_id,
            "name": name,
            "value": float(value),
            "kind": "bool" if isinstance(value, bool) else "number",
            "comment": comment if name == "feedback" else None,
            "created_at": created_at,
        }
        lines.append(orjson.dumps(line) + b"\n")
    return b"".join(lines)


def append_scores(data_dir: Path, data: bytes) -> None:
    directory = data_dir / SCORES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "scores.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def create_scores_view(con: duckdb.DuckDBPyConnection, data_dir: Path) -> None:
    """A view `scores` with the latest score of each name for each request."""
    files = sorted((data_dir / SCORES_DIR).glob("*.jsonl"))
    if files:
        columns = "{" + ", ".join(f"{sql_string(n)}: {sql_string(t)}" for n, t in _COLUMNS.items()) + "}"
        source = (
            f"SELECT * FROM read_json({sql_list(files)}, columns = {columns}, format = 'newline_delimited',"
            " ignore_errors = true) WHERE request_id IS NOT NULL AND name IS NOT NULL"
        )
    else:
        source = _EMPTY
    # TEMP: the view belongs to this cursor alone, not to others sharing the database.
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW scores AS SELECT * FROM ({source})"
        " QUALIFY row_number() OVER (PARTITION BY request_id, name ORDER BY created_at DESC) = 1"
    )


def as_json(rows: list[tuple[str, float, str]]) -> dict[str, Any]:
    """(name, value, kind) rows as the API's `scores` map, booleans restored."""
    return {name: bool(value) if kind == "bool" else value for name, value, kind in rows}
