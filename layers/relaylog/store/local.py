"""DuckDB over a local data dir: a `requests` view of the record files (their Parquet copies where
they have them), the bodies kept in files of their own, and read-only SQL over the view.

One in-memory database per store, shared by the connections it hands out: each gets its own
cursor and TEMP views, so callers on different threads never share one, and each sees the files
written since the last.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from relaylog.store import StoreError, columnar
from relaylog.store.files import raw_files, warn_incomplete
from relaylog.store.sandbox import read_only_statements, sandboxed
from relaylog.store.schema import empty_select

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


class LocalStore:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._database: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._warned: set[tuple[Path, int]] = set()  # files (and sizes) whose torn last line was reported

    def _shared(self) -> duckdb.DuckDBPyConnection:
        """One in-memory DuckDB per store, opened on first use: its cache of Parquet footers is
        what makes the second query over the same files fast."""
        with self._lock:
            if self._database is None:
                database = duckdb.connect(":memory:")
                # Record times are UTC; show TIMESTAMPTZ values in UTC whatever the machine's zone.
                database.execute("SET GLOBAL TimeZone = 'UTC'")
                database.execute("SET GLOBAL parquet_metadata_cache = true")
                self._database = database
            return self._database

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own on the shared database, with no views."""
        return self._shared().cursor()

    def connect(self, since: datetime | None = None) -> duckdb.DuckDBPyConnection:
        """A connection of its own (safe to use on this thread only) with the `requests` view;
        with `since`, only files that can hold records at or after it are read (the caller still
        filters on created_at)."""
        con = self.cursor()
        view, _ = self._view(con, since)
        con.execute(f"CREATE OR REPLACE TEMP VIEW requests AS {view}")
        return con

    def _view(self, con: duckdb.DuckDBPyConnection, since: datetime | None) -> tuple[str, list[Path]]:
        """The SELECT behind the `requests` view, and the files it reads (making Parquet copies)."""
        # Whole days: Parquet copies cover a day at a time, and a copy of part of a day, made
        # for one `since`, would be no use to the next.
        day = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) if since else None
        files = raw_files(self.data_dir, day)
        sources = columnar.resolve(con, self.data_dir, files)
        warn_incomplete(sources.json, self._warned)
        parts = []
        if sources.parquet:
            parts.append(columnar.parquet_select(sources.parquet))
        if sources.json:
            parts.append(columnar.json_select(sources.json))
        view = " UNION ALL ".join(parts) if parts else empty_select()
        return view, [*sources.parquet, *sources.json]

    def read_body(self, ref: str) -> str | None:
        """A body kept in a file of its own (`*_body_ref`, relative to the data dir); None if unreadable."""
        root = self.data_dir.resolve()
        path = (root / ref).resolve()
        # Refs are relative to the data dir; never follow one out of it.
        if not path.is_relative_to(root):
            log.warning("ignoring body ref outside the data dir: %s", ref)
            return None
        try:
            return path.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            log.warning("cannot read body %s: %s", ref, exc.strerror or exc)
            return None

    def query(self, sql: str) -> QueryResult:
        """Run SQL someone typed against the `requests` view, read-only and unable to open any
        other file (store.sandbox). Raises StoreError with DuckDB's message."""
        statements = read_only_statements(sql)
        try:
            with self.cursor() as con:  # the store's own connection makes the Parquet copies
                view, files = self._view(con, None)
            with sandboxed(files) as con:
                con.execute(f"CREATE TEMP VIEW requests AS {view}")
                for statement in statements[:-1]:
                    con.execute(statement)
                cursor = con.execute(statements[-1])
                columns = [d[0] for d in cursor.description or []]
                rows = cursor.fetchall() if cursor.description else []
        except duckdb.Error as exc:
            raise StoreError(str(exc)) from None
        return QueryResult(columns=columns, rows=rows)
