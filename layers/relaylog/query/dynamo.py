"""The query API over the AWS stack: the request index, rollups and scores in DynamoDB, full records in S3.

Answers have the shapes of relaylog.query.local. Request lists read the index (one partition per
day, or the session, prompt or user GSI) and filter in Python with local's semantics; stats, users
and the session list start from the rollups. What DynamoDB cannot answer cheaply (body search,
minute buckets, stats over two dimensions at once) is refused with Unsupported saying what can.
Items are in aws/layout.py.
"""

from __future__ import annotations

import gzip
import io
import operator
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import orjson
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from relaylog.aggregate import histogram
from relaylog.aggregate.rollup import DEFAULT_HOURLY_TTL_DAYS, short_value
from relaylog.aws import layout
from relaylog.aws.clients import make_client
from relaylog.prompts import Call, Version, template_of, versions
from relaylog.query import cells, sessions
from relaylog.query.backend import NotFound, Unsupported
from relaylog.query.cells import Cell
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
from relaylog.record import BODY_FIELDS, FIELDS, SUMMARY_FIELDS
from relaylog.store.schema import COLUMNS
from relaylog.store.stats import is_error

# Bodies larger than this are not put in the answer but linked (a presigned S3 URL): a Function
# URL's buffered answer is at most 6 MB, and JSON escaping can grow a body.
INLINE_BODY_MAX = 2 * 2**20
BODY_URL_SECONDS = 900

T = TypeVar("T")
R = TypeVar("R")

_FLOATS = frozenset(name for name, kind in COLUMNS.items() if kind == "DOUBLE")
_INTS = frozenset(name for name, kind in COLUMNS.items() if kind == "BIGINT")

# Query calls one request page may make: a month of day partitions and some more. A page cut
# short by this comes back with a next_cursor, so the client carries on where it stopped.
MAX_LIST_CALLS = 60
# Index items read to sort by cost or latency, or to list prompts: one Lambda call's worth.
MAX_RANGE_ITEMS = 20_000
# Sessions or users looked up one by one in a call (a Query each).
MAX_LOOKUPS = 2_000
BATCH_GET_KEYS = 100  # DynamoDB's limit per BatchGetItem
BATCH_GET_ATTEMPTS = 8
# Previews kept by request id (a few hundred bytes each): what a dashboard pages through in a while.
MAX_CACHED_PREVIEWS = 20_000
READERS = 16  # Queries at once; botocore pools 10 connections a client, more wait their turn
_END = "~"  # sorts after every created_at (they start with a digit)
_GONE = frozenset({"NoSuchKey", "AccessDenied", "404", "403"})
_SCORE_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
# Filter name -> index attribute, as local.EQUALS.
_EQUALS = {
    "model": "model",
    "provider": "provider",
    "user": "user_id",
    "session": "session_id",
    "prompt": "prompt_id",
    "key": "key_id",
    "error_type": "error_type",
}
# Filters a GSI answers directly, most selective first: filter name -> (index, attribute).
_GSIS = {"session": ("by_session", "session_id"), "prompt": ("by_prompt", "prompt_id"), "user": ("by_user", "user_id")}
_KEYS_ONLY = frozenset({"by_id", "by_user"})
# Dimensions of the rollups (aggregate/rollup.py) that stats can filter or group by.
_ROLLUP_DIMENSIONS = ("model", "provider", "user", "session", "key")
_STATS_HELP = (
    "stats on AWS come from rollups of one dimension: filter by since, until and at most one of"
    " model, provider, user, session, key or property, with by unset or the same dimension"
    " (relaylog query --stack runs anything else on Athena)"
)

_deserialise = TypeDeserializer().deserialize


# -- items ---------------------------------------------------------------------------------------


def plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """A low-level DynamoDB item as Python values (numbers as Decimal)."""
    return {name: _deserialise(value) for name, value in item.items()}


def _typed(name: str, value: Any) -> Any:
    """A record field with the type the local store gives it: DOUBLE columns float, BIGINT int."""
    if name in _FLOATS and isinstance(value, int | Decimal) and not isinstance(value, bool):
        return float(value)
    if name in _INTS and isinstance(value, Decimal):
        return int(value)
    return value


def summary(item: Mapping[str, Any]) -> dict[str, Any]:
    """An index item (plain values) as a request list row: every summary field, None when absent."""
    row = {name: _typed(name, item.get(name)) for name in SUMMARY_FIELDS}
    if row["properties"] is None:
        row["properties"] = {}  # left out of the item when empty
    return row


def _record(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A full record read from S3 with the columns and types of the local store's rows."""
    return {name: _typed(name, raw.get(name)) for name in FIELDS}


def _scores(item: Mapping[str, Any]) -> dict[str, Any]:
    """A scores item's map as the API shows it: by name, numbers as float, booleans as they are."""
    found = item.get("scores") or {}
    return {name: value if isinstance(value, bool) else float(value) for name, value in sorted(found.items())}


def _score_attribute(value: bool | float) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    exact = Decimal(repr(float(value)))
    if exact and not -130 <= exact.adjusted() <= 125:  # what a DynamoDB number can hold
        raise BadRequest(f"score value {value!r} is too large or too small to store")
    return {"N": f"{exact:f}"}


def matches(row: Mapping[str, Any], filters: Filters) -> bool:
    """local.where in Python, scores and search aside."""
    created = row["created_at"]
    if filters.since is not None and not created >= record_time(filters.since):
        return False
    if filters.until is not None and not created < record_time(filters.until):
        return False
    for name, column in _EQUALS.items():
        value = getattr(filters, name)
        if value is not None and row[column] != value:
            return False
    if filters.status == "ok" and is_error(row):
        return False
    if filters.status == "error" and not is_error(row):
        return False
    if isinstance(filters.status, int) and row["status"] != filters.status:
        return False
    return all(row["properties"].get(name) == value for name, value in filters.properties)


def _scored(scores: Mapping[str, Any], filters: Filters) -> bool:
    for wanted in filters.scores:
        value = scores.get(wanted.name)
        if value is None or not _SCORE_OPS[wanted.op](float(value), wanted.value):
            return False
    return True


def _no_search(filters: Filters) -> None:
    if filters.search is not None:
        raise Unsupported("body search runs on the local store only; on AWS use relaylog query --stack (Athena)")


def _parallel(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(READERS, len(items))) as pool:
        return list(pool.map(function, items))


def _shift(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def _days(first: str, last: str) -> list[str]:
    """Every day from first to last (YYYY-MM-DD), ascending."""
    days = []
    while first <= last:
        days.append(first)
        first = _shift(first, 1)
    return days


def _created_at(sk: str) -> str:
    return sk.partition("#")[0]


# -- reading the index in order -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """Index sort keys strictly between low and high: neither bound is ever an item's sk, except a
    cursor's, which the page before returned already."""

    low: str
    high: str

    def condition(self) -> tuple[str, dict[str, Any]]:
        return "sk BETWEEN :low AND :high", {":low": {"S": self.low}, ":high": {"S": self.high}}

    def holds(self, sk: str) -> bool:
        return self.low < sk < self.high


@dataclass(frozen=True, slots=True)
class Stream:
    query: dict[str, Any]  # Query arguments, ExclusiveStartKey aside
    end: str | None  # the position once it is read to the end: a day's edge; None for a GSI


@dataclass
class Scan:
    """Index items of a span in sort key order, stream after stream, one Query page at a time."""

    backend: DynamoBackend
    streams: list[Stream]
    span: Span
    max_calls: int | None = None
    page_size: int | None = None
    calls: int = 0
    read: int = 0  # items DynamoDB read (before a FilterExpression)
    position: str | None = None  # the sort key read last: where a cut-short scan goes on from
    exhausted: bool = False

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        for stream in self.streams:
            start: dict[str, Any] | None = None
            while True:
                if self.max_calls is not None and self.calls >= self.max_calls:
                    return
                extra: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
                if self.page_size is not None:
                    extra["Limit"] = self.page_size
                answer = self.backend.dynamodb.query(**stream.query, **extra)
                self.calls += 1
                self.read += answer.get("ScannedCount", 0)
                items = answer.get("Items", [])
                start = answer.get("LastEvaluatedKey")
                if start or items:
                    self.position = (start or items[-1])["sk"]["S"]
                if stream.query.get("IndexName") in _KEYS_ONLY:
                    items = self.backend.get_items(items)
                yield [item for item in map(plain, items) if self.span.holds(item["sk"])]
                if not start:
                    break
            if stream.end is not None:
                self.position = stream.end
        self.exhausted = True


# -- the back end ---------------------------------------------------------------------------------


class DynamoBackend:
    name = "aws"
    finest_bucket: Bucket = "hour"  # rollups are hourly and daily

    def __init__(self, table: str, bucket: str, dynamodb: Any = None, s3: Any = None) -> None:
        self.table = table
        self.bucket = bucket
        self.dynamodb = dynamodb or make_client("dynamodb")
        self.s3 = s3 or make_client("s3")
        self.index_days = int(os.environ.get(layout.ENV_INDEX_DAYS) or layout.DEFAULT_INDEX_DAYS)
        self.hourly_days = int(os.environ.get(layout.ENV_HOURLY_TTL_DAYS) or DEFAULT_HOURLY_TTL_DAYS)
        self._preview_cache: dict[str, dict[str, str | None]] = {}  # oldest first
        self._cache_lock = threading.Lock()

    # -- DynamoDB and S3 reads ------------------------------------------------------------------

    def _query_all(self, **query: Any) -> list[dict[str, Any]]:
        pages = self.dynamodb.get_paginator("query").paginate(TableName=self.table, **query)
        return [plain(item) for page in pages for item in page.get("Items", [])]

    def get_items(self, keys: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The base items of these keys (low-level, in their order; ones that are gone left out)."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for offset in range(0, len(keys), BATCH_GET_KEYS):
            pending: list[Mapping[str, Any]] = [
                {"pk": k["pk"], "sk": k["sk"]} for k in keys[offset : offset + BATCH_GET_KEYS]
            ]
            for attempt in range(BATCH_GET_ATTEMPTS):
                answer = self.dynamodb.batch_get_item(RequestItems={self.table: {"Keys": pending}})
                for item in answer.get("Responses", {}).get(self.table, []):
                    found[(item["pk"]["S"], item["sk"]["S"])] = item
                pending = answer.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                if not pending:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))  # throttled: back off before asking again
            else:
                raise RuntimeError(f"DynamoDB left {len(pending)} keys unread after {BATCH_GET_ATTEMPTS} attempts")
        return [item for k in keys if (item := found.get((k["pk"]["S"], k["sk"]["S"]))) is not None]

    def _scores_for(self, request_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = [{"pk": {"S": layout.score_pk(i)}, "sk": {"S": "scores"}} for i in dict.fromkeys(request_ids)]
        return {item["pk"].partition("#")[2]: _scores(item) for item in map(plain, self.get_items(keys))}

    def _read_object(self, key: str) -> bytes | None:
        """An S3 object's bytes; None when it is gone (S3 says AccessDenied to a reader that may not list)."""
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in _GONE:
                return None
            raise
        data: bytes = answer["Body"].read()
        return data

    def _index_item(self, request_id: str) -> dict[str, Any]:
        """The index item of a request (the newest, should an id have been logged twice); NotFound if none."""
        keys = self.dynamodb.query(
            TableName=self.table,
            IndexName="by_id",
            KeyConditionExpression="request_id = :id",
            ExpressionAttributeValues={":id": {"S": request_id}},
        ).get("Items", [])
        found = self.get_items(sorted(keys, key=lambda k: k["sk"]["S"])[-1:])
        if not found:
            raise NotFound(f"no request with id {request_id!r}")
        return plain(found[0])

    def _lines(self, source: str, wanted: Iterable[int]) -> dict[int, Any] | None:
        """The decoded JSON of these 0-based lines of an S3 object of records (read once, up to the
        last line wanted); None when the object is gone."""
        data = self._read_object(source)
        if data is None:
            return None
        lines = gzip.GzipFile(fileobj=io.BytesIO(data)) if data[:2] == b"\x1f\x8b" else io.BytesIO(data)
        wanted = set(wanted)
        found: dict[int, Any] = {}
        for number, text in enumerate(lines):
            if number in wanted:
                found[number] = orjson.loads(text)
                if len(found) == len(wanted):
                    break
        return found

    def _raw_record(self, item: Mapping[str, Any], lines: Mapping[int, Any] | None) -> dict[str, Any]:
        """The record of an index item among the lines read from its object; NotFound when it is not there."""
        request_id = item["request_id"]
        if lines is None:
            raise NotFound(f"the record of request {request_id!r} is no longer in S3 ({item['source']})")
        raw = lines.get(int(item["line"]))
        if not isinstance(raw, dict) or raw.get("request_id") != request_id:
            raise NotFound(f"the record of request {request_id!r} is not where the index says ({item['source']})")
        return raw

    def _full_record(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """The record an index item points at: line `line` of the S3 object `source`, bodies included."""
        record = _record(self._raw_record(item, self._lines(item["source"], [int(item["line"])])))
        for body in BODY_FIELDS:
            record[f"{body}_url"] = None
            ref = record[f"{body}_ref"]
            if record[body] is not None or not (isinstance(ref, str) and ref.startswith(layout.BODIES_PREFIX)):
                continue
            if self._size(ref) > INLINE_BODY_MAX:
                # A Function URL answer is at most 6 MB: a larger body is fetched by the browser itself.
                record[f"{body}_url"] = self.s3.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": ref}, ExpiresIn=BODY_URL_SECONDS
                )
                continue
            data = self._read_object(ref)
            record[body] = data.decode("utf-8", "replace") if data is not None else None
        return record

    def _size(self, key: str) -> int:
        try:
            size: int = self.s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError:
            return 0  # gone or unreadable: _read_object says which, as for any body
        return size

    # -- request lists ----------------------------------------------------------------------------

    def _since(self, filters: Filters) -> datetime:
        """The range's start: the index keeps RELAYLOG_INDEX_DAYS, so nothing older is there to read."""
        return filters.since or datetime.now(UTC) - timedelta(days=self.index_days)

    def _span(self, filters: Filters) -> Span:
        return Span(record_time(self._since(filters)), record_time(filters.until) if filters.until else _END)

    def _streams(self, filters: Filters, span: Span, descending: bool, only: str | None = None) -> list[Stream]:
        """Queries for the index items of a span, in order: one on a GSI when a filter names its key,
        else one per day partition. `only`: a FilterExpression (DynamoDB drops other items)."""
        if span.low >= span.high:
            return []
        condition, values = span.condition()
        common: dict[str, Any] = {"TableName": self.table, "ScanIndexForward": not descending}
        for name, (index, attribute) in _GSIS.items():
            value = getattr(filters, name)
            if value is not None:
                query = {
                    **common,
                    # A keys-only index holds no other attribute to filter on.
                    **({"FilterExpression": only} if only is not None and index not in _KEYS_ONLY else {}),
                    "IndexName": index,
                    "KeyConditionExpression": f"{attribute} = :key AND {condition}",
                    "ExpressionAttributeValues": {**values, ":key": {"S": value}},
                }
                return [Stream(query, None)]
        if only is not None:
            common["FilterExpression"] = only
        last = span.high[:10] if span.high != _END else datetime.now(UTC).strftime("%Y-%m-%d")
        days = _days(span.low[:10], last)
        streams = []
        for day in reversed(days) if descending else days:
            query = {
                **common,
                "KeyConditionExpression": f"pk = :pk AND {condition}",
                "ExpressionAttributeValues": {**values, ":pk": {"S": layout.requests_pk(day)}},
            }
            # Once this day is read, the next page starts on the next day: at a bound past all of this
            # day's keys ('2026-11-25~' < '2026-11-26T...', '2026-11-27' < '2026-11-27T...').
            edge = f"{_shift(day, -1)}{_END}" if descending else _shift(day, 1)
            streams.append(Stream(query, edge))
        return streams

    def _matching(self, items: Iterable[Mapping[str, Any]], filters: Filters) -> list[dict[str, Any]]:
        """The rows of these index items that pass the filters; with score filters, rows carry their scores."""
        rows = [row for row in map(summary, items) if matches(row, filters)]
        if not filters.scores or not rows:
            return rows
        scores = self._scores_for(row["request_id"] for row in rows)
        for row in rows:
            row["scores"] = scores.get(row["request_id"], {})
        return [row for row in rows if _scored(row["scores"], filters)]

    def _list_rows(self, rows: list[dict[str, Any]], items: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Request list rows with their scores and previews; `items`: their index items by request id."""
        scores = self._scores_for(row["request_id"] for row in rows if "scores" not in row)
        found = self._previews_of([items[row["request_id"]] for row in rows])
        for row in rows:
            row.setdefault("scores", scores.get(row["request_id"], {}))
            row.update(found[row["request_id"]])
        return rows

    def _previews_of(self, items: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str | None]]:
        """Previews by request id. The index holds no bodies, so the records are read from S3, each
        object once, and kept: records never change, and the dashboard asks for its first page every
        two seconds. A record gone from S3 has no previews."""
        found: dict[str, dict[str, str | None]] = {}
        by_source: dict[str, list[Mapping[str, Any]]] = {}
        with self._cache_lock:
            for item in items:
                cached = self._preview_cache.get(item["request_id"])
                if cached is not None:
                    found[item["request_id"]] = cached
                else:
                    by_source.setdefault(item["source"], []).append(item)
        sources = list(by_source)
        read = _parallel(lambda source: self._lines(source, (int(i["line"]) for i in by_source[source])), sources)
        made: dict[str, dict[str, str | None]] = {}
        for source, lines in zip(sources, read, strict=True):
            for item in by_source[source]:
                try:
                    made[item["request_id"]] = previews(self._raw_record(item, lines))
                except NotFound:
                    found[item["request_id"]] = dict.fromkeys(("request_preview", "response_preview"))
        with self._cache_lock:
            self._preview_cache.update(made)
            while len(self._preview_cache) > MAX_CACHED_PREVIEWS:
                del self._preview_cache[next(iter(self._preview_cache))]
        return {**found, **made}

    def list_requests(self, params: ListParams) -> dict[str, Any]:
        filters = params.filters
        _no_search(filters)
        if params.sort != "time":
            return self._by_value(params)
        descending = params.order == "desc"
        span = self._span(filters)
        if params.cursor is not None:
            at = layout.requests_sk(params.cursor.created_at, params.cursor.request_id)
            span = Span(span.low, min(span.high, at)) if descending else Span(max(span.low, at), span.high)
        # Without filters to apply here, a page of items is all a page needs.
        unfiltered = filters == Filters(since=filters.since, until=filters.until)
        scan = Scan(
            self,
            self._streams(filters, span, descending),
            span,
            max_calls=MAX_LIST_CALLS,
            page_size=params.limit + 1 if unfiltered else None,
        )
        rows: list[dict[str, Any]] = []
        items: dict[str, Mapping[str, Any]] = {}
        for page in scan.pages():
            rows.extend(self._matching(page, filters))
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
            created_at, _, request_id = scan.position.partition("#")
            next_cursor = encode_cursor(Cursor("time", params.order, None, created_at, request_id))
        return {"data": self._list_rows(rows, items), "next_cursor": next_cursor}

    def _by_value(self, params: ListParams) -> dict[str, Any]:
        """A page by cost or latency: every matching item of the range, sorted here, as local sorts
        (cost null as -1.0; a null latency never listed, as SQL's comparisons leave it out)."""
        filters = params.filters
        descending = params.order == "desc"
        span = self._span(filters)
        scan = Scan(self, self._streams(filters, span, descending), span)
        rows: list[dict[str, Any]] = []
        items: dict[str, Mapping[str, Any]] = {}
        for page in scan.pages():
            if scan.read > MAX_RANGE_ITEMS:
                raise Unsupported(
                    f"sorting by {params.sort} reads every request of the range, and this one has more than"
                    f" {MAX_RANGE_ITEMS}: narrow since/until or filter by session, prompt or user"
                )
            rows.extend(self._matching(page, filters))
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
        return {"data": self._list_rows(page, items), "next_cursor": next_cursor}

    # -- one request ------------------------------------------------------------------------------

    def get_request(self, request_id: str) -> dict[str, Any]:
        record = self._full_record(self._index_item(request_id))
        answer = self.dynamodb.get_item(
            TableName=self.table, Key={"pk": {"S": layout.score_pk(request_id)}, "sk": {"S": "scores"}}
        )
        scores = plain(answer.get("Item", {}))
        return {**record, "scores": _scores(scores), "feedback_comment": scores.get("feedback_comment")}

    def add_scores(self, request_id: str, scores: Mapping[str, bool | float], comment: str | None) -> dict[str, Any]:
        self._index_item(request_id)
        key = {"pk": {"S": layout.score_pk(request_id)}, "sk": {"S": "scores"}}
        inside, whole = _score_updates(scores, comment)
        # A SET inside the map needs the map: else it is created whole. Should another writer create it
        # between the two, the first form is right the third time.
        for update in (inside, whole, inside):
            try:
                answer = self.dynamodb.update_item(TableName=self.table, Key=key, ReturnValues="ALL_NEW", **update)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                continue
            return {"request_id": request_id, "scores": _scores(plain(answer["Attributes"]))}
        raise RuntimeError(f"scores of {request_id} not stored: the scores item kept changing")

    def request_template(self, request_id: str) -> str | None:
        item = self._index_item(request_id)
        hashed, prompt_id = item.get("template"), item.get("prompt_id")
        if hashed and prompt_id:
            text = self._template_texts(prompt_id).get(hashed)
            if text is not None:
                return text
        return template_of(self._full_record(item)["request_body"])

    # -- stats ------------------------------------------------------------------------------------

    def stats(self, params: StatsParams) -> dict[str, Any]:
        filters = params.filters
        _no_search(filters)
        if params.bucket == "minute":
            raise Unsupported("minute buckets need the local store; on AWS use bucket=hour or bucket=day")
        if params.by in ("status", "prompt"):
            raise Unsupported(f"by={params.by} is not rolled up; {_STATS_HELP}")
        equal = _rollup_filter(filters)
        if equal is not None and params.by not in (None, equal[0]):
            raise Unsupported(f"by={params.by} with a {equal[0]} filter needs two dimensions; {_STATS_HELP}")
        now = datetime.now(UTC)
        since = filters.since or now - timedelta(hours=24)
        until = filters.until or now
        if params.bucket == "hour" and since < now - timedelta(days=self.hourly_days):
            raise Unsupported(
                f"hourly rollups are kept {self.hourly_days} days (RELAYLOG_HOURLY_ROLLUP_DAYS); this range starts"
                " before that: use bucket=day"
            )
        periods = _periods(params.bucket, since, until)
        grain = "h" if params.bucket == "hour" else "d"
        everything = layout.rollup_sk("all", "")
        group = _rollup_sk(params.by, "") if params.by is not None else None  # a group's key follows it
        if equal is not None:
            sk, exact = _rollup_sk(*equal), True
        else:
            sk, exact = (group, False) if group is not None else (everything, True)

        def read(period: str) -> list[tuple[tuple[str, str | None], Cell]]:
            pk = layout.rollup_pk(grain, period)
            t = f"{period}T00:00:00Z" if grain == "d" else f"{period}:00:00Z"
            items = self._rollup_items(pk, sk, exact)
            if group is None:
                return [((t, None), _cell(item)) for item in items]
            found: list[tuple[tuple[str, str | None], Cell]] = [
                ((t, item["sk"][len(group) :]), _cell(item)) for item in items
            ]
            if equal is None:  # records without a value: all# less the others, exactly (ints and Decimals)
                rest = _remainder(self._rollup_items(pk, everything, True), items)
                if rest is not None:
                    found.append(((t, None), _cell(rest)))
            return found

        found = {key: cell for part in _parallel(read, periods) for key, cell in part}
        return cells.shape(params, found)

    def _rollup_items(self, pk: str, sk: str, exact: bool) -> list[dict[str, Any]]:
        op = "sk = :sk" if exact else "begins_with(sk, :sk)"
        return self._query_all(
            KeyConditionExpression=f"pk = :pk AND {op}",
            ExpressionAttributeValues={":pk": {"S": pk}, ":sk": {"S": sk}},
        )

    def _daily(
        self, dimension: str, filters: Filters, value: str | None
    ) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """value -> [(day, daily rollup item)] of one dimension over the range's days (whole days)."""
        first = self._since(filters).strftime("%Y-%m-%d")
        last = (filters.until - timedelta(microseconds=1) if filters.until else datetime.now(UTC)).strftime("%Y-%m-%d")
        prefix = layout.rollup_sk(dimension, "")
        sk, exact = (prefix + value, True) if value is not None else (prefix, False)
        days = _days(first, last)
        found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for day, items in zip(
            days, _parallel(lambda d: self._rollup_items(layout.rollup_pk("d", d), sk, exact), days), strict=True
        ):
            for item in items:
                found.setdefault(item["sk"][len(prefix) :], []).append((day, item))
        return found

    # -- sessions ---------------------------------------------------------------------------------

    def _session_rows(self, session_id: str, filters: Filters) -> list[dict[str, Any]]:
        """The rows of a session that pass the filters (all of them, unless a time is given)."""
        condition, values = "session_id = :s", {":s": {"S": session_id}}
        if filters.since is not None or filters.until is not None:
            within, bounds = self._span(filters).condition()
            condition, values = f"{condition} AND {within}", {**values, **bounds}
        items = self._query_all(
            IndexName="by_session", KeyConditionExpression=condition, ExpressionAttributeValues=values
        )
        return self._matching(items, filters)

    def sessions(self, params: PageParams) -> dict[str, Any]:
        """Sessions active in the range (daily rollups), looked at newest day first: a session last
        active on a later day always ends later than one last active on an earlier day."""
        filters = params.filters
        _no_search(filters)
        if filters.session is not None:
            latest = {filters.session: _END}
        else:
            latest = {
                value: max(day for day, _ in days) for value, days in self._daily("session", filters, None).items()
            }
        want = params.offset + params.limit + 1
        done: list[dict[str, Any]] = []
        for day, group in _newest_first(latest):
            if len(done) + len(group) > MAX_LOOKUPS:
                raise Unsupported(f"more than {MAX_LOOKUPS} sessions to look at: narrow since/until")
            for session_id, rows in zip(group, _parallel(lambda s: self._session_rows(s, filters), group), strict=True):
                if rows:
                    done.append(sessions.summary(session_id, rows))
            if sum(1 for s in done if s["last_at"] >= day) >= want:
                break
        done.sort(key=lambda s: s["session_id"])
        done.sort(key=lambda s: s["last_at"], reverse=True)
        return _page(done, params)

    def session(self, session_id: str) -> dict[str, Any]:
        rows = self._session_rows(session_id, Filters())
        if not rows:
            raise NotFound(f"no session with id {session_id!r}")
        return {**sessions.summary(session_id, rows), "tree": sessions.tree(rows)}

    # -- users ------------------------------------------------------------------------------------

    def _seen(self, user_id: str, filters: Filters, newest: bool) -> str | None:
        span = self._span(filters)
        condition, values = span.condition()
        answer = self.dynamodb.query(
            TableName=self.table,
            IndexName="by_user",
            KeyConditionExpression=f"user_id = :u AND {condition}",
            ExpressionAttributeValues={**values, ":u": {"S": user_id}},
            ScanIndexForward=not newest,
            Limit=1,
        )
        items = answer.get("Items", [])
        return _created_at(items[0]["sk"]["S"]) if items else None

    def users(self, params: PageParams, sort: str = "cost") -> dict[str, Any]:
        """Users from the daily rollups of the range (whole days); first and last seen from by_user."""
        filters = params.filters
        _no_search(filters)
        if filters != Filters(since=filters.since, until=filters.until, user=filters.user):
            raise Unsupported("users on AWS come from daily rollups: filter by since, until and user only")
        rows = [_user_row(user_id, days) for user_id, days in self._daily("user", filters, filters.user).items()]
        rows.sort(key=lambda r: r["user_id"])
        if sort == "last_seen":
            rows = self._by_last_seen(rows, filters, params.offset + params.limit + 1)
        else:
            column = "cost_usd" if sort == "cost" else "requests"
            rows.sort(key=lambda r: r[column], reverse=True)  # stable: ties stay by user_id
        answer = _page(rows, params)
        page = answer["data"]
        for row, first in zip(page, _parallel(lambda r: self._seen(r["user_id"], filters, False), page), strict=True):
            row["first_seen"] = first
        if sort != "last_seen":
            for row, last in zip(page, _parallel(lambda r: self._seen(r["user_id"], filters, True), page), strict=True):
                row["last_seen"] = last
        return answer

    def _by_last_seen(self, rows: list[dict[str, Any]], filters: Filters, want: int) -> list[dict[str, Any]]:
        """Rows (last_seen holding the last day active) by exact last_seen, newest first, looked up a
        day at a time until `want` are known: a later day always holds later calls."""
        by_user = {r["user_id"]: r for r in rows}
        done: list[dict[str, Any]] = []
        for _, group in _newest_first({r["user_id"]: r["last_seen"] for r in rows}):
            for user_id, last in zip(group, _parallel(lambda u: self._seen(u, filters, True), group), strict=True):
                done.append({**by_user[user_id], "last_seen": last})
            if len(done) >= want:
                break
        done.sort(key=lambda r: r["last_seen"] or "", reverse=True)
        return done

    # -- prompts ----------------------------------------------------------------------------------

    def prompts(self, params: PageParams) -> dict[str, Any]:
        filters = params.filters
        _no_search(filters)
        span = self._span(filters)
        scan = Scan(self, self._streams(filters, span, True, only="attribute_exists(prompt_id)"), span)
        found: dict[str, dict[str, Any]] = {}
        for page in scan.pages():
            if scan.read > MAX_RANGE_ITEMS:
                raise Unsupported(
                    f"listing prompts reads the requests of the range, and this one has more than {MAX_RANGE_ITEMS}:"
                    " narrow since/until"
                )
            for row in self._matching(page, filters):
                if row["prompt_id"] is None:  # read through by_user, which cannot filter on prompt_id
                    continue
                # Newest first: a prompt's first row is its last seen, each later one its first seen so far.
                at = row["created_at"]
                entry = found.setdefault(
                    row["prompt_id"],
                    {"prompt_id": row["prompt_id"], "requests": 0, "cost_usd": 0.0, "first_seen": at, "last_seen": at},
                )
                entry["requests"] += 1
                entry["cost_usd"] += row["cost_usd"] or 0.0
                entry["first_seen"] = at
        rows = sorted(found.values(), key=lambda r: r["prompt_id"])
        rows.sort(key=lambda r: r["last_seen"], reverse=True)
        return _page(rows, params)

    def _template_texts(self, prompt_id: str) -> dict[str, str]:
        """Template hash -> text of a prompt's versions."""
        items = self._query_all(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :t)",
            ExpressionAttributeValues={":pk": {"S": layout.prompt_pk(prompt_id)}, ":t": {"S": "T#"}},
        )
        return {item["sk"][2:]: item["template"] for item in items}

    def prompt_versions(self, prompt_id: str) -> list[Version]:
        items = self._query_all(
            IndexName="by_prompt",
            KeyConditionExpression="prompt_id = :p",
            ExpressionAttributeValues={":p": {"S": prompt_id}},
        )
        texts = self._template_texts(prompt_id) if items else {}
        calls = []
        for item in items:
            hashed = item.get("template")
            if hashed is None:  # no readable template: the aggregator found none in the body
                continue
            # A text too large for an item was not stored: the body then says it.
            text = texts.get(hashed) or template_of(self._full_record(item)["request_body"])
            if text is not None:
                row = summary(item)
                calls.append(Call(row["request_id"], row["created_at"], text, row["cost_usd"], row["latency_ms"]))
        if not calls:
            raise NotFound(f"no requests with prompt id {prompt_id!r} and a readable prompt")
        return versions(calls)


# -- helpers of the aggregate answers -------------------------------------------------------------


def _score_updates(scores: Mapping[str, bool | float], comment: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """UpdateItem arguments storing these scores: inside an existing map, and as a new map. The feedback
    comment goes with the latest feedback score, as in the local store (none given: none kept)."""
    values = {f":v{i}": _score_attribute(value) for i, value in enumerate(scores.values())}
    extra: dict[str, Any] = {}
    sets, remove = [], ""
    if "feedback" in scores:
        if comment is not None:
            sets.append("feedback_comment = :comment")
            extra[":comment"] = {"S": comment}
        else:
            remove = " REMOVE feedback_comment"
    inside = {
        "UpdateExpression": "SET "
        + ", ".join([*(f"scores.#n{i} = :v{i}" for i in range(len(scores))), *sets])
        + remove,
        "ConditionExpression": "attribute_exists(scores)",
        "ExpressionAttributeNames": {f"#n{i}": name for i, name in enumerate(scores)},
        "ExpressionAttributeValues": {**values, **extra},
    }
    whole = {
        "UpdateExpression": "SET " + ", ".join(["scores = :scores", *sets]) + remove,
        "ConditionExpression": "attribute_not_exists(scores)",
        "ExpressionAttributeValues": {":scores": {"M": dict(zip(scores, values.values(), strict=True))}, **extra},
    }
    return inside, whole


def _rollup_filter(filters: Filters) -> tuple[str, str] | None:
    """The one (dimension, value) equality filter stats can take from the rollups; Unsupported otherwise."""
    if filters.prompt or filters.error_type or filters.status is not None or filters.scores:
        raise Unsupported(f"stats cannot filter by prompt, error_type, status or score here; {_STATS_HELP}")
    equal = [(name, getattr(filters, name)) for name in _ROLLUP_DIMENSIONS if getattr(filters, name) is not None]
    equal += [(PROPERTY_PREFIX + name, value) for name, value in filters.properties]
    if len(equal) > 1:
        raise Unsupported(f"stats got {len(equal)} filters; {_STATS_HELP}")
    return equal[0] if equal else None


def _rollup_sk(dimension: str, value: str) -> str:
    """by/filter dimension (model, ..., property:NAME) and value -> the rollup item's sort key."""
    if dimension.startswith(PROPERTY_PREFIX):
        return layout.rollup_sk("property", short_value(f"{dimension[len(PROPERTY_PREFIX) :]}={value}"))
    return layout.rollup_sk(dimension, short_value(value))


def _periods(bucket: str, since: datetime, until: datetime) -> list[str]:
    """Rollup periods overlapping [since, until): whole days ('2026-11-26') or hours ('2026-11-26T21')."""
    step = timedelta(days=1) if bucket == "day" else timedelta(hours=1)
    moment = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        moment = moment.replace(hour=0)
    periods = []
    while moment < until:
        periods.append(moment.strftime("%Y-%m-%d" if bucket == "day" else "%Y-%m-%dT%H"))
        moment += step
    return periods


def _cell(item: Mapping[str, Any]) -> Cell:
    """A rollup item as a stats cell. Rollups count cost_unknown only where usage is known; the local
    store counts every null cost, and a record without usage has none."""

    def count(name: str) -> int:
        return int(item.get(name, 0))

    absent = count("usage_absent")
    return Cell(
        counts={
            "requests": count("requests"),
            "errors": count("errors"),
            "input_tokens": count("input_tokens"),
            "output_tokens": count("output_tokens"),
            "cache_read_tokens": count("cache_read_tokens"),
            "usage_unknown": absent,
            "cost_unknown": count("cost_unknown") + absent,
        },
        cost_usd=float(item.get("cost_usd", 0)),
        latency=histogram.counts_from_item(item, histogram.LATENCY),
        ttft=histogram.counts_from_item(item, histogram.TTFT),
    )


def _remainder(everything: Sequence[Mapping[str, Any]], parts: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The all# item less the items of one dimension: the records without a value in it (a record has
    at most one value per dimension). None when there are none."""
    if not everything:
        return None
    rest: dict[str, Any] = {
        name: value for name, value in everything[0].items() if isinstance(value, Decimal) and name != "expires_at"
    }
    for part in parts:
        for name in rest:
            rest[name] -= part.get(name, 0)
    rest = {name: value for name, value in rest.items() if value}
    return rest if rest.get("requests") else None


def _user_row(user_id: str, days: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """A user's line from their daily rollup items; last_seen holds the last day active until looked up."""

    def total(name: str) -> Decimal:
        return sum((Decimal(item.get(name, 0)) for _, item in days), Decimal(0))

    return {
        "user_id": user_id,
        "requests": int(total("requests")),
        "errors": int(total("errors")),
        "cost_usd": float(total("cost_usd")),
        "input_tokens": int(total("input_tokens")),
        "output_tokens": int(total("output_tokens")),
        "first_seen": None,
        "last_seen": max(day for day, _ in days),
    }


def _newest_first(latest: Mapping[str, str]) -> Iterator[tuple[str, list[str]]]:
    """(day, the keys last active that day), newest day first; a day as the created_at prefix it is."""
    by_day: dict[str, list[str]] = {}
    for key, day in latest.items():
        by_day.setdefault(day, []).append(key)
    for day in sorted(by_day, reverse=True):
        yield day, sorted(by_day[day])


def _page(rows: list[dict[str, Any]], params: PageParams) -> dict[str, Any]:
    """An offset page of sorted rows, with local's numeric cursor."""
    page = rows[params.offset : params.offset + params.limit + 1]
    more = len(page) > params.limit
    return {"data": page[: params.limit], "next_cursor": str(params.offset + params.limit) if more else None}
