"""Query-string parameters of the query API, parsed into typed values or refused with a message.

Nothing here builds SQL: names are checked against fixed vocabularies and values travel on as
plain Python values, which the back ends bind as parameters.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from relaylog.query.filters import (
    GROUP_DIMENSIONS,
    PROPERTY_NAME,
    PROPERTY_PREFIX,
    SCORE_OPERATORS,
    Filters,
    ScoreFilter,
    ScoreOp,
)
from relaylog.store.since import parse_since


class BadRequest(ValueError):
    """The caller sent something the API cannot use; the message says what and how to fix it."""


MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_VALUE = 512
SCORE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# The longer operators first, so `>=` is not read as `>` and a value starting with `=`.
_OPERATORS = "|".join(sorted(SCORE_OPERATORS, key=len, reverse=True))
_SCORE_FILTER = re.compile(rf"({SCORE_NAME.pattern})({_OPERATORS})(.{{1,64}})")

Sort = Literal["time", "cost", "latency"]
Order = Literal["desc", "asc"]
Bucket = Literal["minute", "hour", "day"]
SORTS: tuple[Sort, ...] = ("time", "cost", "latency")
USER_SORTS = ("cost", "requests", "last_seen")
ORDERS: tuple[Order, ...] = ("desc", "asc")
BUCKETS: tuple[Bucket, ...] = ("minute", "hour", "day")
# Points a time series may have before the caller is asked for a coarser bucket.
MAX_BUCKETS = 2000
_BUCKET_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the previous page ended, in the page's own sort order."""

    sort: Sort
    order: Order
    value: float | None  # the sort column's value (None for time: created_at is the value)
    created_at: str
    request_id: str


@dataclass(frozen=True, slots=True)
class ListParams:
    filters: Filters = field(default_factory=Filters)
    limit: int = DEFAULT_PAGE
    sort: Sort = "time"
    order: Order = "desc"
    cursor: Cursor | None = None
    # Each row's request_preview and response_preview, made from its bodies (which are read for them).
    previews: bool = True


@dataclass(frozen=True, slots=True)
class StatsParams:
    filters: Filters
    bucket: Bucket | None  # None: no time series, only the totals and the groups
    by: str | None  # a GROUP_DIMENSIONS entry or property:NAME
    top: int  # groups with a time series of their own
    # Percentiles of the totals and groups computed from every value, where the back end keeps them
    # (Backend.exact_percentiles); otherwise, and always for the series, read from histograms. With
    # exact and no bucket, no histograms are made (`histograms` is None).
    exact: bool = False


@dataclass(frozen=True, slots=True)
class PageParams:
    filters: Filters
    limit: int
    offset: int


FILTER_NAMES = (
    "since",
    "until",
    "model",
    "provider",
    "user",
    "session",
    "prompt",
    "key",
    "error_type",
    "status",
    "property",
    "score",
    "search",
)


class Query:
    """The query string as (name, value) pairs; every name must be used, or it is refused."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in pairs:
            self._values.setdefault(name, []).append(value)

    def check_known(self, allowed: Sequence[str]) -> None:
        unknown = sorted(set(self._values) - set(allowed))
        if unknown:
            raise BadRequest(f"unknown parameter {unknown[0]!r}; this endpoint takes: {', '.join(allowed)}")

    def all(self, name: str) -> list[str]:
        values = self._values.get(name, [])
        for value in values:
            if len(value) > MAX_VALUE:
                raise BadRequest(f"{name} is longer than {MAX_VALUE} characters")
        return values

    def one(self, name: str) -> str | None:
        values = self.all(name)
        if len(values) > 1:
            raise BadRequest(f"{name} given {len(values)} times; give it once")
        return values[0] if values else None


def _time(query: Query, name: str, now: datetime) -> datetime | None:
    text = query.one(name)
    if text is None or text == "":
        return None
    try:
        return parse_since(text, now)
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from None


def _int(text: str | None, name: str, low: int, high: int, default: int) -> int:
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {text!r}")
    return int(text)


def _choice(text: str | None, name: str, choices: Sequence[str], default: str) -> Any:
    if text is None:
        return default
    if text not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}, got {text!r}")
    return text


def _status(text: str | None) -> int | Literal["ok", "error"] | None:
    if text is None or text in ("ok", "error"):
        return text  # type: ignore[return-value]
    if text.isascii() and text.isdigit() and 0 <= int(text) <= 599:
        return int(text)
    raise BadRequest(f"status must be ok, error or an HTTP status code, got {text!r}")


def _property(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not PROPERTY_NAME.fullmatch(name):
        raise BadRequest(f"property must be NAME=VALUE with NAME a header-name token, got {text!r}")
    return name.lower(), value


def score_value(value: Any, what: str) -> float:
    """A score as a number: true/false count as 1/0; anything else must be finite."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    raise BadRequest(f"{what} must be a finite number or true/false, got {value!r}")


def _score(text: str) -> ScoreFilter:
    match = _SCORE_FILTER.fullmatch(text)
    if not match:
        raise BadRequest(f"score must look like NAME=VALUE or NAME>=NUMBER (ops = != > >= < <=), got {text!r}")
    raw = match[3]
    if raw in ("true", "false"):
        value = 1.0 if raw == "true" else 0.0
    else:
        try:
            value = score_value(float(raw), "score value")
        except ValueError:
            raise BadRequest(f"score value must be a number or true/false, got {raw!r}") from None
    op: ScoreOp = match[2]  # type: ignore[assignment]  # the pattern admits only SCORE_OPERATORS
    return ScoreFilter(match[1], op, value)


def parse_filters(query: Query, now: datetime | None = None) -> Filters:
    now = now or datetime.now(UTC)
    since, until = _time(query, "since", now), _time(query, "until", now)
    if since and until and since >= until:
        raise BadRequest("since must be before until")
    search = query.one("search")
    return Filters(
        since=since,
        until=until,
        model=query.one("model"),
        provider=query.one("provider"),
        user=query.one("user"),
        session=query.one("session"),
        prompt=query.one("prompt"),
        key=query.one("key"),
        error_type=query.one("error_type"),
        status=_status(query.one("status")),
        properties=tuple(_property(p) for p in query.all("property")),
        scores=tuple(_score(s) for s in query.all("score")),
        search=search if search else None,
    )


def encode_cursor(cursor: Cursor) -> str:
    raw = orjson.dumps([cursor.sort, cursor.order, cursor.value, cursor.created_at, cursor.request_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, sort: Sort, order: Order) -> Cursor:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        s, o, value, created_at, request_id = orjson.loads(raw)
        valid = (
            isinstance(created_at, str)
            and isinstance(request_id, str)
            and (value is None or (isinstance(value, int | float) and math.isfinite(value)))
        )
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
        valid = False
    if not valid:
        raise BadRequest("cursor is not one this API returned; start again without it")
    if (s, o) != (sort, order):
        raise BadRequest(f"cursor was made for sort={s}&order={o}; pass the same sort and order")
    return Cursor(sort, order, value, created_at, request_id)


def parse_list(query: Query, now: datetime | None = None) -> ListParams:
    query.check_known([*FILTER_NAMES, "limit", "sort", "order", "cursor"])
    sort: Sort = _choice(query.one("sort"), "sort", SORTS, "time")
    order: Order = _choice(query.one("order"), "order", ORDERS, "desc")
    cursor_text = query.one("cursor")
    return ListParams(
        filters=parse_filters(query, now),
        limit=_int(query.one("limit"), "limit", 1, MAX_PAGE, DEFAULT_PAGE),
        sort=sort,
        order=order,
        cursor=decode_cursor(cursor_text, sort, order) if cursor_text else None,
    )


def parse_group_by(text: str | None) -> str | None:
    if text is None or text == "":
        return None
    if text in GROUP_DIMENSIONS:
        return text
    if text.startswith(PROPERTY_PREFIX) and PROPERTY_NAME.fullmatch(text[len(PROPERTY_PREFIX) :]):
        return PROPERTY_PREFIX + text[len(PROPERTY_PREFIX) :].lower()
    raise BadRequest(f"by must be one of {', '.join(GROUP_DIMENSIONS)} or property:NAME, got {text!r}")


def auto_bucket(since: datetime, until: datetime, finest: Bucket = "minute") -> Bucket:
    """At most 180 minutes or 168 hours, else days; never finer than the back end keeps (`finest`)."""
    span = until - since
    bucket: Bucket = "minute" if span <= timedelta(hours=3) else "hour" if span <= timedelta(days=7) else "day"
    return max(bucket, finest, key=BUCKETS.index)


def parse_stats(query: Query, now: datetime | None = None, finest: Bucket = "minute") -> StatsParams:
    query.check_known([*FILTER_NAMES, "bucket", "by", "top"])
    now = now or datetime.now(UTC)
    filters = parse_filters(query, now)
    # Stats always cover a bounded span: the last 24 hours unless told otherwise.
    since = filters.since or (filters.until or now) - timedelta(hours=24)
    filters = replace(filters, since=since)
    until = filters.until or now
    bucket_text = query.one("bucket")
    bucket: Bucket = (
        auto_bucket(since, until, finest) if bucket_text is None else _choice(bucket_text, "bucket", BUCKETS, "")
    )
    points = (until - since).total_seconds() / _BUCKET_SECONDS[bucket]
    if points > MAX_BUCKETS:
        raise BadRequest(f"{int(points)} {bucket} buckets is more than {MAX_BUCKETS}; use a coarser bucket")
    return StatsParams(filters, bucket, parse_group_by(query.one("by")), _int(query.one("top"), "top", 1, 50, 10))


def parse_page(query: Query, extra: Sequence[str] = (), now: datetime | None = None) -> PageParams:
    """Aggregate lists (sessions, users, prompts): filters plus limit and a numeric cursor."""
    query.check_known([*FILTER_NAMES, "limit", "cursor", *extra])
    cursor = query.one("cursor")
    return PageParams(
        filters=parse_filters(query, now),
        limit=_int(query.one("limit"), "limit", 1, MAX_PAGE, DEFAULT_PAGE),
        offset=_int(cursor, "cursor", 0, 10_000_000, 0),
    )
