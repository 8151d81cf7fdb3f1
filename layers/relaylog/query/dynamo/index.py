"""Request lists from the request index: its items read in sort key order (day partitions, or the
session, prompt or user GSI), filtered in Python with relaylog.query.filters' meaning."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from relaylog.aws import layout
from relaylog.query.backend import Unsupported
from relaylog.query.dynamo.items import END, created_at, days, shift, summary
from relaylog.query.dynamo.records import Records
from relaylog.query.dynamo.scan import KEYS_ONLY, Scan, Span, Stream
from relaylog.query.dynamo.scores import Scores
from relaylog.query.dynamo.table import Table
from relaylog.query.filters import Filters, matches, record_time, scored
from relaylog.query.params import BadRequest, Cursor, ListParams, encode_cursor

# Rounds of Query calls one request page may make (a round reads a day's shards at once): a month
# of days and some more. A page cut short by this comes back with a next_cursor, so the client
# carries on where it stopped.
MAX_LIST_CALLS = 60
# Index items read to sort by cost or latency, or to list prompts: one Lambda call's worth.
MAX_RANGE_ITEMS = 20_000
# Filters a GSI answers directly, most selective first: filter name -> (index, attribute).
_GSIS = {"session": ("by_session", "session_id"), "prompt": ("by_prompt", "prompt_id"), "user": ("by_user", "user_id")}


class RequestIndex:
    """`index_days`: how long the index keeps an item (RELAYLOG_INDEX_DAYS): nothing older is there."""

    def __init__(self, table: Table, scores: Scores, records: Records, index_days: int) -> None:
        self.table = table
        self.scores = scores
        self.records = records
        self.index_days = index_days

    def since(self, filters: Filters) -> datetime:
        """The range's start: the filter's, else as far back as the index goes."""
        return filters.since or datetime.now(UTC) - timedelta(days=self.index_days)

    def span(self, filters: Filters) -> Span:
        return Span(record_time(self.since(filters)), record_time(filters.until) if filters.until else END)

    def streams(self, filters: Filters, span: Span, descending: bool, only: str | None = None) -> list[Stream]:
        """Queries for the index items of a span, in order: one on a GSI when a filter names its key,
        else one per shard of each day. `only`: a FilterExpression (DynamoDB drops other items)."""
        if span.low >= span.high:
            return []
        condition, values = span.condition()
        common: dict[str, Any] = {"ScanIndexForward": not descending}
        for name, (index, attribute) in _GSIS.items():
            value = getattr(filters, name)
            if value is not None:
                query = {
                    **common,
                    # A keys-only index holds no other attribute to filter on.
                    **({"FilterExpression": only} if only is not None and index not in KEYS_ONLY else {}),
                    "IndexName": index,
                    "KeyConditionExpression": f"{attribute} = :key AND {condition}",
                    "ExpressionAttributeValues": {**values, ":key": {"S": value}},
                }
                return [Stream([query], None)]
        if only is not None:
            common["FilterExpression"] = only
        last = span.high[:10] if span.high != END else datetime.now(UTC).strftime("%Y-%m-%d")
        shards = self.table.index_shards(span.low[:10], last)
        streams = []
        for day in reversed(days(span.low[:10], last)) if descending else days(span.low[:10], last):
            queries = [
                {
                    **common,
                    "KeyConditionExpression": f"pk = :pk AND {condition}",
                    "ExpressionAttributeValues": {**values, ":pk": {"S": partition}},
                }
                for partition in layout.day_partitions(day, shards.get(day, 1))
            ]
            # Once this day is read, the next page starts on the next day: at a bound past all of this
            # day's keys ('2026-11-25~' < '2026-11-26T...', '2026-11-27' < '2026-11-27T...').
            edge = f"{shift(day, -1)}{END}" if descending else shift(day, 1)
            streams.append(Stream(queries, edge))
        return streams

    def matching(self, items: Iterable[Mapping[str, Any]], filters: Filters) -> list[dict[str, Any]]:
        """The rows of these index items that pass the filters; with score filters, rows carry their scores."""
        rows = [row for row in map(summary, items) if matches(row, filters)]
        if not filters.scores or not rows:
            return rows
        found = self.scores.of(row["request_id"] for row in rows)
        for row in rows:
            row["scores"] = found.get(row["request_id"], {})
        return [row for row in rows if scored(row["scores"], filters)]

    def session_rows(self, session_id: str, filters: Filters) -> list[dict[str, Any]]:
        """The rows of a session that pass the filters (all of them, unless a time is given)."""
        condition, values = "session_id = :s", {":s": {"S": session_id}}
        if filters.since is not None or filters.until is not None:
            within, bounds = self.span(filters).condition()
            condition, values = f"{condition} AND {within}", {**values, **bounds}
        items = self.table.query_all(
            IndexName="by_session", KeyConditionExpression=condition, ExpressionAttributeValues=values
        )
        return self.matching(items, filters)

    def seen(self, user_id: str, filters: Filters, newest: bool) -> str | None:
        """When a user's first (or last) call in the range was made."""
        condition, values = self.span(filters).condition()
        answer = self.table.query(
            IndexName="by_user",
            KeyConditionExpression=f"user_id = :u AND {condition}",
            ExpressionAttributeValues={**values, ":u": {"S": user_id}},
            ScanIndexForward=not newest,
            Limit=1,
        )
        items = answer.get("Items", [])
        return created_at(items[0]["sk"]["S"]) if items else None

    def list_requests(self, params: ListParams) -> dict[str, Any]:
        filters = params.filters
        if params.sort != "time":
            return self._by_value(params)
        descending = params.order == "desc"
        span = self.span(filters)
        if params.cursor is not None:
            at = layout.requests_sk(params.cursor.created_at, params.cursor.request_id)
            span = Span(span.low, min(span.high, at)) if descending else Span(max(span.low, at), span.high)
        # Without filters to apply here, a page of items is all a page needs.
        unfiltered = filters == Filters(since=filters.since, until=filters.until)
        scan = Scan(
            self.table,
            self.streams(filters, span, descending),
            span,
            max_calls=MAX_LIST_CALLS,
            page_size=params.limit + 1 if unfiltered else None,
        )
        rows: list[dict[str, Any]] = []
        items: dict[str, Mapping[str, Any]] = {}
        for page in scan.pages():
            rows.extend(self.matching(page, filters))
            items.update((item["request_id"], item) for item in page)
            if len(rows) > params.limit:
                break
        next_cursor = None
        if len(rows) > params.limit:
            rows = rows[: params.limit]
            last = rows[-1]
            next_cursor = encode_cursor(Cursor("time", params.order, None, last["created_at"], last["request_id"]))
        elif not scan.exhausted and scan.position is not None:
            # Cut short: the page so far, and a cursor at the last item read.
            at, _, request_id = scan.position.partition("#")
            next_cursor = encode_cursor(Cursor("time", params.order, None, at, request_id))
        return {"data": self._list_rows(rows, items, params.previews), "next_cursor": next_cursor}

    def _by_value(self, params: ListParams) -> dict[str, Any]:
        """A page by cost or latency: every matching item of the range, sorted here, as local sorts
        (cost null as -1.0; a null latency never listed, as SQL's comparisons leave it out)."""
        filters = params.filters
        descending = params.order == "desc"
        span = self.span(filters)
        scan = Scan(self.table, self.streams(filters, span, descending), span)
        rows: list[dict[str, Any]] = []
        items: dict[str, Mapping[str, Any]] = {}
        for page in scan.pages():
            if scan.read > MAX_RANGE_ITEMS:
                raise Unsupported(
                    f"sorting by {params.sort} reads every request of the range, and this one has more than"
                    f" {MAX_RANGE_ITEMS}: narrow since/until or filter by session, prompt or user"
                )
            rows.extend(self.matching(page, filters))
            items.update((item["request_id"], item) for item in page)

        def value(row: Mapping[str, Any]) -> float | None:
            if params.sort == "cost":
                return row["cost_usd"] if row["cost_usd"] is not None else -1.0
            latency: float | None = row["latency_ms"]
            return latency

        keyed = [((v, row["created_at"], row["request_id"]), row) for row in rows if (v := value(row)) is not None]
        if params.cursor is not None:
            c = params.cursor
            if c.value is None:
                raise BadRequest("cursor is not one this API returned; start again without it")
            bound = (c.value, c.created_at, c.request_id)
            keyed = [(k, row) for k, row in keyed if (k < bound if descending else k > bound)]
        keyed.sort(key=lambda kv: kv[0], reverse=descending)
        page = [row for _, row in keyed[: params.limit + 1]]
        next_cursor = None
        if len(page) > params.limit:
            page = page[: params.limit]
            last = page[-1]
            next_cursor = encode_cursor(
                Cursor(params.sort, params.order, value(last), last["created_at"], last["request_id"])
            )
        return {"data": self._list_rows(page, items, params.previews), "next_cursor": next_cursor}

    def _list_rows(
        self, rows: list[dict[str, Any]], items: Mapping[str, Mapping[str, Any]], with_previews: bool
    ) -> list[dict[str, Any]]:
        """Request list rows with their scores, and previews if asked; `items`: their index items by id."""
        found = self.scores.of(row["request_id"] for row in rows if "scores" not in row)
        made = self.records.previews_of([items[row["request_id"]] for row in rows]) if with_previews else {}
        for row in rows:
            row.setdefault("scores", found.get(row["request_id"], {}))
            row.update(made.get(row["request_id"], {}))
        return rows
