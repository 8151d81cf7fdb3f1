"""Parquet copies of record files that have stopped growing, so queries stop re-parsing JSON.

Reading a million JSON-lines records takes DuckDB seconds; the same records as Parquet answer a
filtered page or a grouped month in tens of milliseconds, because only the columns a query names
are read. A copy is named after its source file and the size it had when copied
(`<data-dir>/columnar/dt=.../hour=.../<writer>.<bytes>.parquet`): the source only ever grows
(appends), so a copy whose size matches is exactly that file, and a stale copy is simply not
used (and removed). Files written in the last `QUIET_S` seconds are read as JSON: they are
probably still growing. Copies are written to a temporary name and renamed, so concurrent readers
(several workers, the CLI) never see half a file and may safely race to make the same copy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from relaylog.store.files import has_incomplete_tail
from relaylog.store.schema import COLUMNS

log = logging.getLogger(__name__)

COLUMNAR_DIR = "columnar"
QUIET_S = 10.0


@dataclass(frozen=True, slots=True)
class Sources:
    parquet: list[Path]  # up-to-date copies
    json: list[Path]  # files read as they are


def _copy_path(data_dir: Path, source: Path, size: int) -> Path:
    relative = source.relative_to(data_dir / "raw")
    return data_dir / COLUMNAR_DIR / relative.parent / f"{source.stem}.{size}.parquet"


def _day_path(data_dir: Path, day_dir: Path, stats: list[tuple[Path, os.stat_result]]) -> Path:
    """One copy of a whole day, named after the names and sizes of every file it was made from."""
    manifest = "\n".join(f"{p.relative_to(day_dir)}:{st.st_size}" for p, st in stats)
    digest = hashlib.sha256(manifest.encode()).hexdigest()[:20]
    return data_dir / COLUMNAR_DIR / day_dir.name / f"day.{digest}.parquet"


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql_list(paths: Sequence[Path]) -> str:
    return "[" + ", ".join(sql_string(str(p)) for p in paths) + "]"


_JSON_COLUMNS = "{" + ", ".join(f"{sql_string(name)}: {sql_string(kind)}" for name, kind in COLUMNS.items()) + "}"


def json_select(files: Sequence[Path]) -> str:
    """SELECT of the record columns from JSON-lines files.

    SQL text, not a relation object: a relation's view is visible to every cursor of the shared
    database, while the TEMP views built from this text stay with the cursor that made them.
    """
    return (
        f"SELECT * FROM read_json({sql_list(files)}, columns = {_JSON_COLUMNS}, format = 'newline_delimited',"
        " ignore_errors = true, hive_partitioning = false)"
        # ignore_errors turns an unparsable line into an all-NULL row; a record always has an id.
        " WHERE request_id IS NOT NULL"
    )


def parquet_select(files: Sequence[Path]) -> str:
    # The copies sit under dt=... folders: without this DuckDB would replace dt with a DATE.
    return f"SELECT * FROM read_parquet({sql_list(files)}, hive_partitioning = false)"


def _write_copy(con: duckdb.DuckDBPyConnection, sources: Sequence[Path], target: Path, stale: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # One scratch file per thread: the API's worker threads of one process may make the same copy at
    # once, and with a name per process only, one would rename the other's half-written file.
    scratch = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    # Sorted by time in small row groups, so a query over a time range skips the groups outside it.
    target_sql = sql_string(str(scratch))
    options = "FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 8192"
    con.execute(f"COPY ({json_select(sources)} ORDER BY created_at) TO {target_sql} ({options})")
    os.replace(scratch, target)
    for old in target.parent.glob(stale):
        if old != target:
            old.unlink(missing_ok=True)


def _quiet(path: Path, stat: os.stat_result, now: float) -> bool:
    # A half-written last line would be frozen into the copy as a lost record: such a file is
    # read as JSON until it is whole.
    return now - stat.st_mtime >= QUIET_S and not has_incomplete_tail(path)


def _resolve_files(
    con: duckdb.DuckDBPyConnection, data_dir: Path, stats: list[tuple[Path, os.stat_result]], now: float, found: Sources
) -> None:
    for source, stat in stats:
        copy = _copy_path(data_dir, source, stat.st_size)
        if copy.exists():
            found.parquet.append(copy)
        elif not _quiet(source, stat, now):
            found.json.append(source)
        elif _try_copy(con, [source], copy, f"{source.stem}.*.parquet"):
            found.parquet.append(copy)
        else:
            found.json.append(source)


def _try_copy(con: duckdb.DuckDBPyConnection, sources: Sequence[Path], target: Path, stale: str) -> bool:
    try:
        _write_copy(con, sources, target, stale)
    except (OSError, duckdb.Error) as exc:
        log.warning("cannot write a columnar copy of %s (%s); reading JSON", target.parent.name, exc)
        return False
    return True


def resolve(con: duckdb.DuckDBPyConnection, data_dir: Path, files: Sequence[Path], now: float | None = None) -> Sources:
    """Which files to read as Parquet and which as JSON, making copies of quiet files.

    A day whose files are all quiet gets one copy for the whole day (hundreds of small files
    cost DuckDB more than the rows in them); a day still being written gets one per quiet file.
    """
    now = time.time() if now is None else now
    by_day: dict[Path, list[tuple[Path, os.stat_result]]] = {}
    for source in files:
        try:
            by_day.setdefault(source.parent.parent, []).append((source, source.stat()))
        except FileNotFoundError:
            continue
    found = Sources([], [])
    for day_dir, stats in by_day.items():
        day_copy = _day_path(data_dir, day_dir, stats)
        if day_copy.exists():
            found.parquet.append(day_copy)
        elif all(_quiet(p, st, now) for p, st in stats) and _try_copy(
            con, [p for p, _ in stats], day_copy, "day.*.parquet"
        ):
            found.parquet.append(day_copy)
        else:
            _resolve_files(con, data_dir, stats, now, found)
    return found
