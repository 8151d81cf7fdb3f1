"""Records → additive rollup deltas, per hour and per day, keyed as DynamoDB items (aws/layout.py).

Dimensions: all, model, provider, user, session, key (key_id) and each property
(`property#<name>=<value>`). Every delta adds the numbers named in NUMBERS and two histograms
(latency, ttft; see relaylog/histogram.py); the DynamoDB layer writes each as a top-level attribute.

How the inner loop stays lean (bench/rollup.py): each record becomes one tuple of numbers,
appended to a list per group, and a group is summed column by column in C (`map(sum, zip(*rows))`).
Model, provider and key have few values, so records are summed once per (model, provider, key) and
those few sums merged; daily deltas are merged from the hourly ones. Deltas come out sorted by
(pk, sk) without a sort: days before hours ('d' < 'h'), dimensions in the order of their `sk`
prefixes, values sorted.
"""

from __future__ import annotations

import gc
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from typing import Any, NamedTuple

from ..aws import layout
from ..histogram import BOUNDS, LATENCY, TTFT
from ..record import FIELDS
from ..rollups import DEFAULT_HOURLY_TTL_DAYS, MAX_VALUE_CHARS, short_value

TOKEN_FIELDS: tuple[str, ...] = tuple(name for name in FIELDS if name.endswith("_tokens"))

# The summed numbers of a delta, in this order; each is a top-level attribute of the item:
# requests; errors (status 0 or >= 400, or error_type set); each token field (a null adds nothing);
# usage_absent (input_tokens null, `relaylog stats`' usage_unknown); cost_usd; cost_unknown (cost
# null although usage is known; a record without usage has no cost either, so `stats`' cost_unknown
# is cost_unknown + usage_absent); latency_ms_sum (mean = sum / requests); ttft_ms_sum and
# ttft_count (records with a ttft_ms).
NUMBERS: tuple[str, ...] = (
    "requests", "errors", *TOKEN_FIELDS, "usage_absent", "cost_usd", "cost_unknown",
    "latency_ms_sum", "ttft_ms_sum", "ttft_count",
)  # fmt: skip
_N = len(NUMBERS)
_LAT = _N  # a record's row also carries its latency and ttft bucket (None when not measured)
_TTFT = _N + 1

# Cost is summed exactly, as integer picodollars (1e-12 USD): each record's cost rounded to the
# picodollar, which is the decimal of the float's repr unless that carries binary noise further
# down. Bounded decimals also keep every total within DynamoDB's 38 significant digits (a number
# past that fails the whole transaction). Latency sums are written rounded to the microsecond.
COST_DECIMALS = 12
_PICO = 10**COST_DECIMALS
LATENCY_DECIMALS = 3

_KEYS = (
    "dt", "hour", "model", "provider", "user_id", "session_id", "key_id", "properties",
    "status", "error_type", "latency_ms", "ttft_ms", "cost_usd",
)  # fmt: skip
# The fields rollup() reads: a line without them is not a record it can count.
REQUIRED: frozenset[str] = frozenset((*_KEYS, *TOKEN_FIELDS))
_read = itemgetter(*_KEYS)
_tokens = itemgetter(*TOKEN_FIELDS)
# Usage is absent when input_tokens is null, as in `relaylog stats` (usage_unknown); a null token
# field of a record with usage adds nothing.
_INPUT = TOKEN_FIELDS.index("input_tokens")

Row = tuple[Any, ...]  # a record's NUMBERS, then its latency and ttft buckets
# A group's sums: (numbers aligned with NUMBERS, latency bucket → count, ttft bucket → count).
Summary = tuple[tuple[Any, ...], Mapping[int, int], Mapping[int, int]]


class Delta(NamedTuple):
    """What one rollup item gains from one object's records."""

    pk: str
    sk: str
    grain: str  # 'h' or 'd'
    period: str  # '2026-11-26T21' or '2026-11-26'
    dim: str
    value: str
    numbers: tuple[Any, ...]  # aligned with NUMBERS; ints, except float latency sums and cost in picodollars
    latency: Mapping[int, int]  # histogram bucket → count
    ttft: Mapping[int, int]
    expires_at: int | None  # epoch seconds (hourly items), None for daily items

    def additions(self) -> dict[str, int | Decimal]:
        """Attribute → exact amount to ADD (cost in USD), zeros left out: a missing attribute reads as 0."""
        out: dict[str, int | Decimal] = {}
        for name, value in zip(NUMBERS, self.numbers, strict=True):
            if not value:
                continue
            if name == "cost_usd":
                out[name] = Decimal(value).scaleb(-COST_DECIMALS)
            elif isinstance(value, float):
                out[name] = Decimal(repr(round(value, LATENCY_DECIMALS)))
            else:
                out[name] = value
        out.update((f"{LATENCY}{index}", count) for index, count in self.latency.items())
        out.update((f"{TTFT}{index}", count) for index, count in self.ttft.items())
        return out


_delta = Delta._make  # half the cost of Delta(...), which parses its arguments in Python


def _sum(rows: Sequence[Row]) -> Summary:
    if len(rows) == 1:
        row = rows[0]
        lat, ttft = row[_LAT], row[_TTFT]
        return row[:_N], {} if lat is None else {lat: 1}, {} if ttft is None else {ttft: 1}
    columns = list(zip(*rows, strict=True))
    return tuple(map(sum, columns[:_N])), _count(columns[_LAT]), _count(columns[_TTFT])


def _count(buckets: Iterable[int | None]) -> Mapping[int, int]:
    # A plain loop: Counter() costs more than it saves on the few rows of a typical group.
    counts: dict[int, int] = {}
    for index in buckets:
        if index is not None:
            counts[index] = counts.get(index, 0) + 1
    return counts


def _merge(parts: Sequence[Summary]) -> Summary:
    if len(parts) == 1:
        return parts[0]
    numbers = tuple(map(sum, zip(*(part[0] for part in parts), strict=True)))
    latency: Counter[int] = Counter()
    ttft: Counter[int] = Counter()
    for _, part_latency, part_ttft in parts:
        latency.update(part_latency)
        ttft.update(part_ttft)
    return numbers, latency, ttft


def _grouped(groups: Mapping[Any, Sequence[Summary]]) -> dict[Any, Summary]:
    return {value: _merge(parts) for value, parts in groups.items()}


class _Hour:
    """The rows of one hour, grouped for each dimension."""

    __slots__ = ("few", "users", "sessions", "properties")

    def __init__(self) -> None:
        self.few: defaultdict[tuple[Any, Any, Any], list[Row]] = defaultdict(list)  # (model, provider, key_id)
        self.users: defaultdict[str, list[Row]] = defaultdict(list)
        self.sessions: defaultdict[str, list[Row]] = defaultdict(list)
        self.properties: defaultdict[str, list[Row]] = defaultdict(list)  # 'name=value' → rows

    def dimensions(self) -> dict[str, dict[str, Summary]]:
        """dim → value → summary, with dims in the order of their sort keys."""
        few = {key: _sum(rows) for key, rows in self.few.items()}
        by: tuple[dict[Any, list[Summary]], ...] = ({}, {}, {})  # model, provider, key
        for key, summary in few.items():
            for index, value in enumerate(key):
                if value:
                    by[index].setdefault(value, []).append(summary)
        models, providers, keys = (_grouped(groups) for groups in by)
        return {
            "all": {"": _merge(list(few.values()))},
            "key": keys,
            "model": models,
            "property": {value: _sum(rows) for value, rows in self.properties.items()},
            "provider": providers,
            "session": {value: _sum(rows) for value, rows in self.sessions.items()},
            "user": {value: _sum(rows) for value, rows in self.users.items()},
        }


# Sorted as their sort keys sort: "all#" < "key#" < ... ('#' sorts before any letter).
_DIMENSION_ORDER = ("all", "key", "model", "property", "provider", "session", "user")


def rollup(records: Iterable[Mapping[str, Any]], hourly_ttl_days: int = DEFAULT_HOURLY_TTL_DAYS) -> list[Delta]:
    """The deltas of these records (each holding the REQUIRED fields), sorted by (pk, sk)."""
    # Everything built here is acyclic and lives until the call returns, which is what sets off
    # the cyclic collector's full passes over every live object (the caller's records too): with
    # it running, half of the time went there (bench/rollup.py). Reference counting frees it all.
    if not gc.isenabled():
        return _rollup(records, hourly_ttl_days)
    gc.disable()
    try:
        return _rollup(records, hourly_ttl_days)
    finally:
        gc.enable()


def _rollup(records: Iterable[Mapping[str, Any]], hourly_ttl_days: int) -> list[Delta]:
    hours: defaultdict[str, _Hour] = defaultdict(_Hour)
    for record in records:
        (dt, hr, model, provider, user, session, key_id, properties,
         status, error_type, latency, ttft, cost) = _read(record)  # fmt: skip
        tokens = _tokens(record)
        absent = tokens[_INPUT] is None
        row = (
            1,
            1 if not status or status >= 400 or error_type is not None else 0,
            *[t or 0 for t in tokens],
            1 if absent else 0,
            0 if cost is None else round(cost * _PICO),
            1 if cost is None and not absent else 0,
            latency or 0,
            ttft or 0,
            0 if ttft is None else 1,
            None if latency is None else bisect_right(BOUNDS, latency),
            None if ttft is None else bisect_right(BOUNDS, ttft),
        )
        hour = hours[f"{dt}T{hr}"]
        hour.few[(model, provider, key_id)].append(row)
        if user:
            hour.users[user].append(row)
        if session:
            hour.sessions[session].append(row)
        if properties:
            for name, value in properties.items():
                hour.properties[f"{name}={value}"].append(row)

    hourly = {period: hours[period].dimensions() for period in sorted(hours)}
    periods_of_day: dict[str, list[str]] = {}
    for period in hourly:
        periods_of_day.setdefault(period[:10], []).append(period)

    deltas: list[Delta] = []
    for day, periods in periods_of_day.items():
        _emit(deltas, "d", day, _daily([hourly[period] for period in periods]), None)
    for period, dims in hourly.items():
        _emit(deltas, "h", period, dims, _expiry(period, hourly_ttl_days))
    return deltas


def _daily(hours: Sequence[Mapping[str, Mapping[str, Summary]]]) -> Mapping[str, Mapping[str, Summary]]:
    if len(hours) == 1:
        return hours[0]  # the usual object: all its records from one hour
    daily: dict[str, dict[str, list[Summary]]] = {dim: {} for dim in _DIMENSION_ORDER}
    for dims in hours:
        for dim, values in dims.items():
            merged = daily[dim]
            for value, summary in values.items():
                parts = merged.get(value)
                if parts is None:
                    merged[value] = [summary]
                else:
                    parts.append(summary)
    return {dim: _grouped(values) for dim, values in daily.items()}


def _emit(
    out: list[Delta], grain: str, period: str, dims: Mapping[str, Mapping[str, Summary]], expires_at: int | None
) -> None:
    pk = layout.rollup_pk(grain, period)
    for dim in _DIMENSION_ORDER:
        values = dims[dim]
        if max(map(len, values), default=0) > MAX_VALUE_CHARS:
            values = {short_value(value): summary for value, summary in values.items()}
        for value in sorted(values):
            numbers, latency, ttft = values[value]
            sk = layout.rollup_sk(dim, value)
            out.append(_delta((pk, sk, grain, period, dim, value, numbers, latency, ttft, expires_at)))


def _expiry(period: str, days: int) -> int:
    """Epoch seconds `days` after the hour ends."""
    start = datetime.fromisoformat(f"{period}:00:00+00:00")
    return int((start + timedelta(hours=1, days=days)).timestamp())
