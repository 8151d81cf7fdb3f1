"""Queries over a local data dir: DuckDB reading the raw JSON-lines record files in place.

Every call opens its own in-memory DuckDB connection with a view named `requests` (the record
columns, one row per call), so callers on different threads never share a connection and new
files written since the last call are always seen.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from relaylog.record import BODY_FIELDS, SUMMARY_FIELDS
from relaylog.store import StoreError, columnar
from relaylog.store import stats as stats_sql
from relaylog.store.files import raw_files, warn_incomplete
from relaylog.store.schema import empty_select
from relaylog.store.stats import Stats

log = logging.getLogger(__name__)

# Filter name -> column. Column names come only from this table, values are bound parameters.
FILTER_COLUMNS = {"model": "model", "provider": "provider", "user": "user_id", "session": "session_id"}

_CREATED = "TRY_CAST(created_at AS TIMESTAMPTZ)"


class AmbiguousId(StoreError):
    """An id prefix matched more than one request."""


@dataclass(frozen=True, slots=True)
class Filters:
    since: datetime | None = None
    # Exact matches; None means any.
    model: str | None = None
    provider: str | None = None
    user: str | None = None
    session: str | None = None


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def _where(filters: Filters) -> tuple[str, dict[str, Any]]:
    clauses = ["true"]
    params: dict[str, Any] = {}
    if filters.since is not None:
        clauses.append(f"{_CREATED} >= $since")
        params["since"] = filters.since
    for name, column in FILTER_COLUMNS.items():
        value = getattr(filters, name)
        if value is None:
            continue
        clauses.append(f"{column} = ${name}")
        params[name] = value
    return " AND ".join(clauses), params


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class LocalStore:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._database: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

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
        # Whole days: Parquet copies cover a day at a time, and a copy of part of a day, made
        # for one `since`, would be no use to the next.
        day = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) if since else None
        files = raw_files(self.data_dir, day)
        con = self.cursor()
        sources = columnar.resolve(con, self.data_dir, files)
        warn_incomplete(sources.json)
        parts = []
        if sources.parquet:
            parts.append(columnar.parquet_select(sources.parquet))
        if sources.json:
            parts.append(columnar.json_select(sources.json))
        view = " UNION ALL ".join(parts) if parts else empty_select()
        con.execute(f"CREATE OR REPLACE TEMP VIEW requests AS {view}")
        return con

    def _fetch(self, sql: str, params: dict[str, Any], since: datetime | None = None) -> list[dict[str, Any]]:
        try:
            with self.connect(since) as con:
                return _dicts(con.execute(sql, params))
        except duckdb.Error as exc:
            raise StoreError(str(exc)) from None

    def list_requests(self, limit: int = 50, filters: Filters = Filters()) -> list[dict[str, Any]]:
        """Most recent first, without bodies."""
        where, params = _where(filters)
        cols = ", ".join(f'"{c}"' for c in SUMMARY_FIELDS)
        sql = f"SELECT {cols} FROM requests WHERE {where} ORDER BY {_CREATED} DESC NULLS LAST LIMIT $limit"
        return self._fetch(sql, {**params, "limit": limit}, filters.since)

    def get_request(self, request_id: str) -> dict[str, Any] | None:
        """One full record by id or unique id prefix, with bodies read from their ref files.

        Raises AmbiguousId when a prefix matches several requests.
        """
        # An exact match wins; then the newest, so an id logged twice shows its latest record.
        sql = (
            "SELECT *, count(DISTINCT request_id) OVER () AS _ids FROM requests"
            " WHERE starts_with(request_id, $id)"
            f" ORDER BY request_id = $id DESC, {_CREATED} DESC NULLS LAST LIMIT 1"
        )
        rows = self._fetch(sql, {"id": request_id})
        if not rows:
            return None
        first = rows[0]
        if first.pop("_ids") > 1 and first["request_id"] != request_id:
            raise AmbiguousId(f"id prefix {request_id!r} matches more than one request; give more characters")
        for body in BODY_FIELDS:
            ref = first[f"{body}_ref"]
            if first[body] is None and ref:
                first[body] = self.read_body(ref)
        return first

    def read_body(self, ref: str) -> str | None:
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

    def stats(self, by: str | None = None, since: datetime | None = None) -> Stats:
        """Totals, and one row per `by` value (model, user, provider, session, property:NAME).

        Raises ValueError for a bad `by`.
        """
        key, params = stats_sql.group_key(by) if by else ("NULL", {})
        where, where_params = _where(Filters(since=since))
        sql = stats_sql.SQL.format(key=key, where=where)
        rows = self._fetch(sql, {**params, **where_params}, since)
        # The empty grouping set always yields the total row, even over no records.
        total = stats_sql.metrics(next(r for r in rows if r["is_total"]))
        groups = [{"key": r["group_key"], **stats_sql.metrics(r)} for r in rows if not r["is_total"]]
        groups.sort(key=lambda g: (-g["requests"], g["key"] is None, g["key"] or ""))
        return Stats(
            by=by,
            since=since.isoformat() if since else None,
            total=total,
            groups=groups if by else [],
        )

    def query(self, sql: str) -> QueryResult:
        """Run any SQL against the `requests` view. Raises StoreError with DuckDB's message."""
        try:
            with self.connect() as con:
                cursor = con.execute(sql)
                columns = [d[0] for d in cursor.description or []]
                rows = cursor.fetchall() if cursor.description else []
        except duckdb.Error as exc:
            raise StoreError(str(exc)) from None
        return QueryResult(columns=columns, rows=rows)
