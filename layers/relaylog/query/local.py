"""The query back end over a local data dir: DuckDB on the record files (and their Parquet copies),
for the query API and the `relaylog` command alike.

Filters are relaylog.query.filters' SQL; column names and operators come only from tables, and
every value from the caller is a bound parameter. Times compare as strings: created_at is always
`YYYY-MM-DDTHH:MM:SS.ffffffZ`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from relaylog import histogram
from relaylog.prompts import Call, Version, template_of, versions
from relaylog.query import cells, sessions
from relaylog.query.backend import NotFound
from relaylog.query.cells import COUNTS, QUANTILES, Cell, Exact, Percentiles
from relaylog.query.filters import ERROR_SQL, group_sql, record_time, where
from relaylog.query.params import BadRequest, Bucket, Cursor, ListParams, PageParams, StatsParams, encode_cursor
from relaylog.query.preview import previews
from relaylog.record import BODY_FIELDS, SUMMARY_FIELDS
from relaylog.store import StoreError
from relaylog.store.local import LocalStore
from relaylog.store.scores import append_scores, as_json, create_scores_view, score_lines

SORT_COLUMNS = {"time": None, "cost": "coalesce(cost_usd, -1.0)", "latency": "latency_ms"}
# Bucket labels: day and hour from the partition columns, cheaper to read than cutting created_at.
BUCKET_LABELS = {"minute": "substr(created_at, 1, 16)", "hour": "dt || 'T' || hour", "day": "dt"}
USER_SORT_COLUMNS = {"cost": "cost_usd", "requests": "requests", "last_seen": "last_seen"}
NEWEST_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7))
_SUMMARY = ", ".join(f'"{c}"' for c in SUMMARY_FIELDS)
_QUANTILES = ", ".join(str(q) for q in QUANTILES)


def _dicts(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _bucket_sql(column: str) -> str:
    """The histogram bucket of a latency in ms, as relaylog.histogram.bucket computes it."""
    per = histogram.PER_DOUBLING
    return (
        f"CASE WHEN {column} < 1 THEN 0"
        f" ELSE least({histogram.TOP}, CAST(floor({per} * log2({column})) AS INTEGER) + 1) END"
    )


def _bucket_time(label: str) -> str:
    """A bucket label as the RFC 3339 instant it starts at."""
    return {10: label + "T00:00:00Z", 13: label + ":00:00Z", 16: label + ":00Z"}[len(label)]


def _stats_sql(params: StatsParams, clause: str, values: dict[str, Any]) -> str:
    """One scan for the cells, by (bucket, group). With `exact`, grouping sets add each group's and
    the whole's exact percentiles to the same scan; without buckets too, no histograms are made (the
    percentiles are exact, and there is no series to read them for)."""
    key = "NULL" if params.by is None else group_sql(params.by, values)
    bucket = None if params.bucket is None else BUCKET_LABELS[params.bucket]
    columns = [
        "count(*) AS requests",
        f"count(*) FILTER (WHERE {ERROR_SQL}) AS errors",
        "coalesce(sum(input_tokens), 0) AS input_tokens",
        "coalesce(sum(output_tokens), 0) AS output_tokens",
        "coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens",
        "count(*) FILTER (WHERE input_tokens IS NULL) AS usage_unknown",
        "coalesce(sum(cost_usd), 0.0) AS cost_usd",
        "count(*) FILTER (WHERE cost_usd IS NULL) AS cost_unknown",
    ]
    if not (params.exact and bucket is None):
        columns += [
            f"histogram({_bucket_sql('latency_ms')}) FILTER (WHERE latency_ms IS NOT NULL) AS latency",
            f"histogram({_bucket_sql('ttft_ms')}) FILTER (WHERE ttft_ms IS NOT NULL) AS ttft",
        ]
    groups = "t, k" if bucket else "k"
    if params.exact:
        groups = "GROUPING SETS ((t, k), (k), ())" if bucket else "GROUPING SETS ((k), ())"
        columns += [
            f"{'grouping(t)' if bucket else '0'} AS gt",
            "grouping(k) AS gk",
            f"quantile_cont(latency_ms, [{_QUANTILES}]) AS latency_exact",
            f"quantile_cont(ttft_ms, [{_QUANTILES}]) AS ttft_exact",
        ]
    return (
        f"SELECT {'t' if bucket else 'NULL AS t'}, k, {', '.join(columns)}"
        f" FROM (SELECT *, {key} AS k{f', {bucket} AS t' if bucket else ''} FROM requests WHERE {clause})"
        f" GROUP BY {groups}"
    )


class LocalBackend:
    name = "local"
    finest_bucket: Bucket = "minute"
    exact_percentiles = True  # every value is in the records

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
            rows = self._page_rows(clause, order, values, params.filters.since, params.previews)
        else:
            rows = self._top_rows(sort, direction, clause, order, values, params)
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
            rows = self._page_rows(f"{clause} AND created_at >= $window", order, window, start, params.previews)
            if len(rows) == values["limit"]:
                return rows
        return self._page_rows(clause, order, values, floor, params.previews)

    def _top_rows(
        self, sort: str, direction: str, clause: str, order: str, values: dict[str, Any], params: ListParams
    ) -> list[dict[str, Any]]:
        """A page by cost or latency: first the page's last value from that one column (a cheap
        sort of numbers), then a full sort of only the rows at or beyond it."""
        edge = "min" if direction == "DESC" else "max"
        sql = (
            f"SELECT {edge}(v) AS edge FROM"
            f" (SELECT {sort} AS v FROM requests WHERE {clause} ORDER BY v {direction} LIMIT $limit)"
        )
        since = params.filters.since
        found = self._fetch(sql, values, since)
        if not found or found[0]["edge"] is None:
            return []
        beyond = f"{clause} AND {sort} {'>=' if direction == 'DESC' else '<='} $edge"
        return self._page_rows(beyond, order, {**values, "edge": found[0]["edge"]}, since, params.previews)

    def _page_rows(
        self, clause: str, order: str, values: dict[str, Any], since: datetime | None, with_previews: bool
    ) -> list[dict[str, Any]]:
        """A page's rows: first the ids in order (few columns to sort), then their summary columns (and
        bodies, for the previews), found by id within the page's time span, so only the row groups
        holding them are read (measured on 100,000 records with 3 KB bodies: 36-50 ms a page with
        the bodies or without)."""
        bodies = ", request_body, response_body" if with_previews else ""
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
                        f"SELECT {_SUMMARY}{bodies} FROM requests"
                        " WHERE created_at BETWEEN $low AND $high"
                        " AND request_id IN (SELECT unnest($ids))",
                        {"low": min(times), "high": max(times), "ids": [request_id for request_id, _ in keys]},
                    )
                )
        except duckdb.Error as exc:
            raise StoreError(str(exc)) from None
        by_key = {(row["request_id"], row["created_at"]): row for row in found}
        rows = [by_key[key] for key in keys]
        if with_previews:
            for row in rows:
                row.update(previews(row))
                del row["request_body"], row["response_body"]
        return rows

    def get_request(self, request_id: str) -> dict[str, Any]:
        """By id or a unique prefix of one (BadRequest when it names several), bodies read from their
        ref files."""
        # An exact match wins; then the newest, so an id logged twice shows its latest record.
        rows = self._fetch(
            "SELECT *, count(DISTINCT request_id) OVER () AS _ids FROM requests WHERE starts_with(request_id, $id)"
            " ORDER BY request_id = $id DESC, created_at DESC NULLS LAST LIMIT 1",
            {"id": request_id},
            None,
        )
        if not rows:
            raise NotFound(f"no request with id {request_id!r}")
        record = rows[0]
        if record.pop("_ids") > 1 and record["request_id"] != request_id:
            raise BadRequest(f"id prefix {request_id!r} matches more than one request; give more characters")
        for body in BODY_FIELDS:
            ref = record[f"{body}_ref"]
            if record[body] is None and ref:
                record[body] = self.store.read_body(ref)
        record["scores"] = self._scores_for([record["request_id"]]).get(record["request_id"], {})
        # Locally every body is in the answer; on AWS one too large for it may be a link (query.dynamo).
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
        sql = _stats_sql(params, clause, values)
        found: dict[tuple[str | None, str | None], Cell] = {}
        none: list[float | None] = [None] * len(QUANTILES)  # quantile_cont over no values is NULL
        total: Percentiles = (none, none)
        groups: dict[str | None, Percentiles] = {}
        for row in self._fetch(sql, values, params.filters.since):
            if params.exact:
                exact = (row["latency_exact"] or none, row["ttft_exact"] or none)
                if row["gk"]:  # the whole
                    total = exact
                    continue
                if params.bucket is None or row["gt"]:  # a group (without buckets, also its cell)
                    groups[row["k"]] = exact
                if row["gt"]:
                    continue
            found[(None if row["t"] is None else _bucket_time(row["t"]), row["k"])] = Cell(
                counts={name: int(row[name]) for name in COUNTS},
                cost_usd=float(row["cost_usd"]),
                latency=dict(row.get("latency") or {}),
                ttft=dict(row.get("ttft") or {}),
            )
        return cells.shape(params, found, Exact(total, groups) if params.exact else None)

    def sessions(self, params: PageParams) -> dict[str, Any]:
        clause, values = where(params.filters)
        sql = f"""
            SELECT session_id,
              arg_max(session_name, created_at) FILTER (WHERE session_name IS NOT NULL) AS session_name,
              count(*) AS requests, count(*) FILTER (WHERE {ERROR_SQL}) AS errors,
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
            SELECT user_id, count(*) AS requests, count(*) FILTER (WHERE {ERROR_SQL}) AS errors,
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
