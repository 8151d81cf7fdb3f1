"""The query API over a local data dir: DuckDB on the record files (and their Parquet copies).

Column names and operators come only from the tables below; every value from the caller is a bound
parameter. Times compare as strings: created_at is always `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from relaylog.aggregate import histogram
from relaylog.prompts import Call, Version, template_of, versions
from relaylog.query import cells, sessions
from relaylog.query.backend import NotFound
from relaylog.query.cells import COUNTS, Cell
from relaylog.query.params import (
    PROPERTY_PREFIX,
    BadRequest,
    Bucket,
    Cursor,
    Filters,
    ListParams,
    PageParams,
    StatsParams,
    encode_cursor,
    record_time,
)
from relaylog.query.preview import previews
from relaylog.record import SUMMARY_FIELDS
from relaylog.store import StoreError
from relaylog.store.local import AmbiguousId, LocalStore
from relaylog.store.scores import append_scores, as_json, create_scores_view, score_lines
from relaylog.store.stats import ERROR_SQL

EQUALS = {
    "model": "model",
    "provider": "provider",
    "user": "user_id",
    "session": "session_id",
    "prompt": "prompt_id",
    "key": "key_id",
    "error_type": "error_type",
}
GROUP_COLUMNS = {
    "model": "model",
    "provider": "provider",
    "user": "user_id",
    "session": "session_id",
    "key": "key_id",
    "status": "CAST(status AS VARCHAR)",
    "prompt": "prompt_id",
}
SORT_COLUMNS = {"time": None, "cost": "coalesce(cost_usd, -1.0)", "latency": "latency_ms"}
OPERATORS = {"=": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
# Bucket labels: day and hour from the partition columns, cheaper to read than cutting created_at.
BUCKET_LABELS = {"minute": "substr(created_at, 1, 16)", "hour": "dt || 'T' || hour", "day": "dt"}
USER_SORT_COLUMNS = {"cost": "cost_usd", "requests": "requests", "last_seen": "last_seen"}
NEWEST_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7))
_SUMMARY = ", ".join(f'"{c}"' for c in SUMMARY_FIELDS)
_ERROR = ERROR_SQL


def where(filters: Filters) -> tuple[str, dict[str, Any]]:
    clauses = ["true"]
    params: dict[str, Any] = {}
    if filters.since is not None:
        clauses.append("created_at >= $since")
        params["since"] = record_time(filters.since)
    if filters.until is not None:
        clauses.append("created_at < $until")
        params["until"] = record_time(filters.until)
    for name, column in EQUALS.items():
        value = getattr(filters, name)
        if value is not None:
            clauses.append(f"{column} = ${name}")
            params[name] = value
    if filters.status == "ok":
        clauses.append(f"NOT {_ERROR}")
    elif filters.status == "error":
        clauses.append(_ERROR)
    elif filters.status is not None:
        clauses.append("status = $status")
        params["status"] = filters.status
    for i, (name, value) in enumerate(filters.properties):
        clauses.append(f"properties[$pn{i}] = $pv{i}")
        params[f"pn{i}"], params[f"pv{i}"] = name, value
    for i, score in enumerate(filters.scores):
        clauses.append(
            f"request_id IN (SELECT request_id FROM scores WHERE name = $sn{i} AND value {OPERATORS[score.op]} $sv{i})"
        )
        params[f"sn{i}"], params[f"sv{i}"] = score.name, score.value
    if filters.search is not None:
        # Bodies kept in files of their own (too large for the record) are not searched.
        clauses.append("(position($q IN lower(request_body)) > 0 OR position($q IN lower(response_body)) > 0)")
        params["q"] = filters.search.lower()
    return " AND ".join(clauses), params


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _bucket_sql(column: str) -> str:
    """The histogram bucket of a latency in ms, as aggregate.histogram.bucket computes it."""
    per = histogram.PER_DOUBLING
    return (
        f"CASE WHEN {column} < 1 THEN 0"
        f" ELSE least({histogram.TOP}, CAST(floor({per} * log2({column})) AS INTEGER) + 1) END"
    )


def _bucket_time(label: str) -> str:
    """A bucket label as the RFC 3339 instant it starts at."""
    return {10: label + "T00:00:00Z", 13: label + ":00:00Z", 16: label + ":00Z"}[len(label)]


class LocalBackend:
    name = "local"
    finest_bucket: Bucket = "minute"

    def __init__(self, store: LocalStore) -> None:
        self.store = store

    def _fetch(self, sql: str, params: Mapping[str, Any], since: datetime | None) -> list[dict[str, Any]]:
        try:
            with self.store.connect(since) as con:
                create_scores_view(con, self.store.data_dir)
                return _dicts(con.execute(sql, dict(params)))
        except duckdb.Error as exc:
            raise StoreError(str(exc)) from None

    def _scores_query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """SQL over the `scores` view alone: no record files are listed or read."""
        try:
            with self.store.cursor() as con:
                create_scores_view(con, self.store.data_dir)
                return con.execute(sql, dict(params)).fetchall()
        except duckdb.Error as exc:
            raise StoreError(str(exc)) from None

    def _scores_for(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        rows = self._scores_query(
            "SELECT request_id, name, value, kind FROM scores WHERE request_id IN (SELECT unnest($ids)) ORDER BY name",
            {"ids": ids},
        )
        found: dict[str, list[tuple[str, float, str]]] = {}
        for request_id, name, value, kind in rows:
            found.setdefault(request_id, []).append((name, value, kind))
        return {request_id: as_json(entries) for request_id, entries in found.items()}

    def list_requests(self, params: ListParams) -> dict[str, Any]:
        clause, values = where(params.filters)
        sort = SORT_COLUMNS[params.sort]
        keys = ["created_at", "request_id"] if sort is None else [sort, "created_at", "request_id"]
        direction = "DESC" if params.order == "desc" else "ASC"
        if params.cursor is not None:
            cursor = params.cursor
            bound = (
                [cursor.created_at, cursor.request_id]
                if sort is None
                else [cursor.value, cursor.created_at, cursor.request_id]
            )
            placeholders = [f"$c{i}" for i in range(len(bound))]
            clause += f" AND ({', '.join(keys)}) {'<' if direction == 'DESC' else '>'} ({', '.join(placeholders)})"
            values.update({p[1:]: v for p, v in zip(placeholders, bound, strict=True)})
        order = ", ".join(f"{k} {direction}" for k in keys)
        values["limit"] = params.limit + 1
        if sort is None and direction == "DESC":
            rows = self._newest(clause, order, values, params)
        elif sort is None:
            rows = self._page_rows(clause, order, values, params.filters.since)
        else:
            rows = self._top_rows(sort, direction, clause, order, values, params.filters.since)
        next_cursor = None
        if len(rows) > params.limit:
            rows = rows[: params.limit]
            last = rows[-1]
            value = None if sort is None else (last["cost_usd"] if params.sort == "cost" else last["latency_ms"])
            if params.sort == "cost" and value is None:
                value = -1.0
            next_cursor = encode_cursor(
                Cursor(params.sort, params.order, value, last["created_at"], last["request_id"])
            )
        scores = self._scores_for([r["request_id"] for r in rows])
        for row in rows:
            row["scores"] = scores.get(row["request_id"], {})
        return {"data": rows, "next_cursor": next_cursor}

    def _newest(self, clause: str, order: str, values: dict[str, Any], params: ListParams) -> list[dict[str, Any]]:
        """The newest page, looking back over a widening window: the last hour, day, week, then
        everything. A page of recent calls reads only the newest files instead of all of them."""
        anchor = params.filters.until or datetime.now(UTC)
        if params.cursor is not None:
            anchor = datetime.fromisoformat(params.cursor.created_at.replace("Z", "+00:00"))
        floor = params.filters.since
        for span in NEWEST_WINDOWS:
            start = anchor - span
            if floor is not None and start <= floor:
                break
            window = {**values, "window": record_time(start)}
            rows = self._page_rows(f"{clause} AND created_at >= $window", order, window, start)
            if len(rows) == values["limit"]:
                return rows
        return self._page_rows(clause, order, values, floor)

    def _top_rows(
        self, sort: str, direction: str, clause: str, order: str, values: dict[str, Any], since: datetime | None
    ) -> list[dict[str, Any]]:
        """A page by cost or latency: first the page's last value from that one column (a cheap
        sort of numbers), then a full sort of only the rows at or beyond it."""
        edge = "min" if direction == "DESC" else "max"
        sql = (
            f"SELECT {edge}(v) AS edge FROM"
            f" (SELECT {sort} AS v FROM requests WHERE {clause} ORDER BY v {direction} LIMIT $limit)"
        )
        found = self._fetch(sql, values, since)
        if not found or found[0]["edge"] is None:
            return []
        beyond = f"{clause} AND {sort} {'>=' if direction == 'DESC' else '<='} $edge"
        return self._page_rows(beyond, order, {**values, "edge": found[0]["edge"]}, since)

    def _page_rows(
        self, clause: str, order: str, values: dict[str, Any], since: datetime | None
    ) -> list[dict[str, Any]]:
        """A page's rows: first the ids in order (few columns to sort), then their summary columns and
        bodies, found by id within the page's time span (so only the row groups holding them are
        read); the bodies only to make the previews (measured on 100,000 records with 3 KB bodies:
        36-50 ms a page either way)."""
        try:
            with self.store.connect(since) as con:
                create_scores_view(con, self.store.data_dir)
                sql = f"SELECT request_id, created_at FROM requests WHERE {clause} ORDER BY {order} LIMIT $limit"
                keys = con.execute(sql, values).fetchall()
                if not keys:
                    return []
                times = [created_at for _, created_at in keys]
                found = _dicts(
                    con.execute(
                        f"SELECT {_SUMMARY}, request_body, response_body FROM requests"
                        " WHERE created_at BETWEEN $low AND $high"
                        " AND request_id IN (SELECT unnest($ids))",
                        {"low": min(times), "high": max(times), "ids": [request_id for request_id, _ in keys]},
                    )
                )
        except duckdb.Error as exc:
            raise StoreError(str(exc)) from None
        by_key = {(row["request_id"], row["created_at"]): row for row in found}
        rows = [by_key[key] for key in keys]
        for row in rows:
            row.update(previews(row))
            del row["request_body"], row["response_body"]
        return rows

    def get_request(self, request_id: str) -> dict[str, Any]:
        try:
            record = self.store.get_request(request_id)
        except AmbiguousId as exc:
            raise BadRequest(str(exc)) from None
        if record is None:
            raise NotFound(f"no request with id {request_id!r}")
        record["scores"] = self._scores_for([record["request_id"]]).get(record["request_id"], {})
        # Locally every body is in the answer; on AWS one too large for it is a link (query.dynamo).
        record["request_body_url"] = record["response_body_url"] = None
        comments = self._scores_query(
            "SELECT comment FROM scores WHERE request_id = $id AND name = 'feedback'", {"id": record["request_id"]}
        )
        record["feedback_comment"] = comments[0][0] if comments else None
        return record

    def _exists(self, request_id: str) -> bool:
        rows = self._fetch("SELECT 1 FROM requests WHERE request_id = $id LIMIT 1", {"id": request_id}, None)
        return bool(rows)

    def add_scores(self, request_id: str, scores: Mapping[str, bool | float], comment: str | None) -> dict[str, Any]:
        if not self._exists(request_id):
            raise NotFound(f"no request with id {request_id!r}")
        append_scores(self.store.data_dir, score_lines(request_id, scores, comment, datetime.now(UTC)))
        return {"request_id": request_id, "scores": self._scores_for([request_id]).get(request_id, {})}

    def stats(self, params: StatsParams) -> dict[str, Any]:
        clause, values = where(params.filters)
        bucket = BUCKET_LABELS[params.bucket]
        if params.by is None:
            key = "NULL"
        elif params.by.startswith(PROPERTY_PREFIX):
            key = "properties[$group_property]"
            values["group_property"] = params.by[len(PROPERTY_PREFIX) :]
        else:
            key = GROUP_COLUMNS[params.by]
        sql = f"""
            SELECT t, k, count(*) AS requests, count(*) FILTER (WHERE {_ERROR}) AS errors,
              coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
              coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
              count(*) FILTER (WHERE input_tokens IS NULL) AS usage_unknown,
              coalesce(sum(cost_usd), 0.0) AS cost_usd, count(*) FILTER (WHERE cost_usd IS NULL) AS cost_unknown,
              histogram({_bucket_sql("latency_ms")}) FILTER (WHERE latency_ms IS NOT NULL) AS latency,
              histogram({_bucket_sql("ttft_ms")}) FILTER (WHERE ttft_ms IS NOT NULL) AS ttft
            FROM (SELECT *, {bucket} AS t, {key} AS k FROM requests WHERE {clause})
            GROUP BY t, k"""
        found: dict[tuple[str, str | None], Cell] = {}
        for row in self._fetch(sql, values, params.filters.since):
            found[(_bucket_time(row["t"]), row["k"])] = Cell(
                counts={name: int(row[name]) for name in COUNTS},
                cost_usd=float(row["cost_usd"]),
                latency=dict(row["latency"] or {}),
                ttft=dict(row["ttft"] or {}),
            )
        return cells.shape(params, found)

    def sessions(self, params: PageParams) -> dict[str, Any]:
        clause, values = where(params.filters)
        sql = f"""
            SELECT session_id,
              arg_max(session_name, created_at) FILTER (WHERE session_name IS NOT NULL) AS session_name,
              count(*) AS requests, count(*) FILTER (WHERE {_ERROR}) AS errors,
              coalesce(sum(cost_usd), 0.0) AS cost_usd,
              coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
              min(created_at) AS first_at, max(created_at) AS last_at,
              round((max(epoch_us(CAST(created_at AS TIMESTAMPTZ)) + latency_ms * 1000)
                - epoch_us(CAST(min(created_at) AS TIMESTAMPTZ))) / 1000, 3) AS duration_ms,
              coalesce(list_sort(list(DISTINCT user_id) FILTER (WHERE user_id IS NOT NULL)), []) AS users
            FROM requests WHERE session_id IS NOT NULL AND {clause}
            GROUP BY session_id ORDER BY last_at DESC, session_id LIMIT $limit OFFSET $offset"""
        return self._page(sql, values, params)

    def _page(self, sql: str, values: dict[str, Any], params: PageParams) -> dict[str, Any]:
        rows = self._fetch(sql, {**values, "limit": params.limit + 1, "offset": params.offset}, params.filters.since)
        more = len(rows) > params.limit
        return {"data": rows[: params.limit], "next_cursor": str(params.offset + params.limit) if more else None}

    def session(self, session_id: str) -> dict[str, Any]:
        rows = self._fetch(f"SELECT {_SUMMARY} FROM requests WHERE session_id = $id", {"id": session_id}, None)
        if not rows:
            raise NotFound(f"no session with id {session_id!r}")
        return {**sessions.summary(session_id, rows), "tree": sessions.tree(rows)}

    def users(self, params: PageParams, sort: str = "cost") -> dict[str, Any]:
        clause, values = where(params.filters)
        sql = f"""
            SELECT user_id, count(*) AS requests, count(*) FILTER (WHERE {_ERROR}) AS errors,
              coalesce(sum(cost_usd), 0.0) AS cost_usd,
              coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
              min(created_at) AS first_seen, max(created_at) AS last_seen
            FROM requests WHERE user_id IS NOT NULL AND {clause}
            GROUP BY user_id ORDER BY {USER_SORT_COLUMNS[sort]} DESC, user_id LIMIT $limit OFFSET $offset"""
        return self._page(sql, values, params)

    def prompts(self, params: PageParams) -> dict[str, Any]:
        clause, values = where(params.filters)
        sql = f"""
            SELECT prompt_id, count(*) AS requests, coalesce(sum(cost_usd), 0.0) AS cost_usd,
              min(created_at) AS first_seen, max(created_at) AS last_seen
            FROM requests WHERE prompt_id IS NOT NULL AND {clause}
            GROUP BY prompt_id ORDER BY last_seen DESC, prompt_id LIMIT $limit OFFSET $offset"""
        return self._page(sql, values, params)

    def prompt_versions(self, prompt_id: str) -> list[Version]:
        rows = self._fetch(
            "SELECT request_id, created_at, request_body, request_body_ref, cost_usd, latency_ms"
            " FROM requests WHERE prompt_id = $id",
            {"id": prompt_id},
            None,
        )
        calls = []
        for row in rows:
            body = row["request_body"]
            if body is None and row["request_body_ref"]:
                body = self.store.read_body(row["request_body_ref"])
            template = template_of(body)
            if template is not None:
                calls.append(Call(row["request_id"], row["created_at"], template, row["cost_usd"], row["latency_ms"]))
        if not calls:
            raise NotFound(f"no requests with prompt id {prompt_id!r} and a readable prompt")
        return versions(calls)

    def request_template(self, request_id: str) -> str | None:
        return template_of(self.get_request(request_id)["request_body"])
