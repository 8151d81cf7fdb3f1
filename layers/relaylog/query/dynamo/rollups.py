"""Stats from the rollup items: hourly or daily cells of one dimension (aggregate/rollup.py writes
them), shaped by relaylog.query.cells as the local store's are."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from relaylog import histogram
from relaylog.aws import layout
from relaylog.query import cells
from relaylog.query.backend import Unsupported
from relaylog.query.cells import Cell
from relaylog.query.dynamo.items import days
from relaylog.query.dynamo.table import Table, parallel
from relaylog.query.filters import PROPERTY_PREFIX, Filters
from relaylog.query.params import Bucket, StatsParams
from relaylog.rollups import short_value

# Dimensions of the rollups (aggregate/rollup.py) that stats can filter or group by.
_DIMENSIONS = ("model", "provider", "user", "session", "key")
# Without buckets (`relaylog stats`), spans up to this long are read from hourly items (whole hours),
# longer ones from daily items (whole days): fewer items to read.
_HOURS_UP_TO = timedelta(days=7)
_HELP = (
    "stats on AWS come from rollups of one dimension: filter by since, until and at most one of"
    " model, provider, user, session, key or property, with by unset or the same dimension"
    " (relaylog query --stack runs anything else on Athena)"
)


def rollup_sk(dimension: str, value: str) -> str:
    """by/filter dimension (model, ..., property:NAME) and value -> the rollup item's sort key."""
    if dimension.startswith(PROPERTY_PREFIX):
        return layout.rollup_sk("property", short_value(f"{dimension[len(PROPERTY_PREFIX) :]}={value}"))
    return layout.rollup_sk(dimension, short_value(value))


class Rollups:
    """`hourly_days`: how long hourly items are kept (RELAYLOG_HOURLY_ROLLUP_DAYS); `index_days`: the
    span read when none is given, as for the request index."""

    def __init__(self, table: Table, hourly_days: int, index_days: int) -> None:
        self.table = table
        self.hourly_days = hourly_days
        self.index_days = index_days

    def stats(self, params: StatsParams) -> dict[str, Any]:
        filters = params.filters
        if params.exact:
            raise Unsupported("exact percentiles need every value; the rollups keep histograms (within 9%)")
        if params.bucket == "minute":
            raise Unsupported("minute buckets need the local store; on AWS use bucket=hour or bucket=day")
        if params.by in ("status", "prompt"):
            raise Unsupported(f"by={params.by} is not rolled up; {_HELP}")
        equal = _rollup_filter(filters)
        if equal is not None and params.by not in (None, equal[0]):
            raise Unsupported(f"by={params.by} with a {equal[0]} filter needs two dimensions; {_HELP}")
        now = datetime.now(UTC)
        default = timedelta(hours=24) if params.bucket is not None else timedelta(days=self.index_days)
        since = filters.since or now - default
        until = filters.until or now
        hours_kept = now - timedelta(days=self.hourly_days)
        grain: Bucket = params.bucket or ("hour" if since >= max(hours_kept, now - _HOURS_UP_TO) else "day")
        if grain == "hour" and since < hours_kept:
            raise Unsupported(
                f"hourly rollups are kept {self.hourly_days} days (RELAYLOG_HOURLY_ROLLUP_DAYS); this range starts"
                " before that: use bucket=day"
            )
        everything = layout.rollup_sk("all", "")
        group = rollup_sk(params.by, "") if params.by is not None else None  # a group's key follows it
        if equal is not None:
            sk, exact = rollup_sk(*equal), True
        else:
            sk, exact = (group, False) if group is not None else (everything, True)

        def read(period: str) -> list[tuple[tuple[str | None, str | None], Cell]]:
            pk = layout.rollup_pk("h" if grain == "hour" else "d", period)
            t = None if params.bucket is None else f"{period}T00:00:00Z" if grain == "day" else f"{period}:00:00Z"
            items = self.table.items(pk, sk, exact)
            if group is None:
                return [((t, None), _cell(item)) for item in items]
            found: list[tuple[tuple[str | None, str | None], Cell]] = [
                ((t, item["sk"][len(group) :]), _cell(item)) for item in items
            ]
            if equal is None:  # records without a value: all# less the others, exactly (ints and Decimals)
                rest = _remainder(self.table.items(pk, everything, True), items)
                if rest is not None:
                    found.append(((t, None), _cell(rest)))
            return found

        found: dict[tuple[str | None, str | None], Cell] = {}
        for part in parallel(read, _periods(grain, since, until)):
            for key, cell in part:
                if key in found:  # without buckets, one cell per group over every period
                    found[key].add(cell)
                else:
                    found[key] = cell
        # The answer says which span it covers, the one chosen here when none was given.
        return cells.shape(replace(params, filters=replace(filters, since=since)), found)

    def daily(self, dimension: str, filters: Filters, since: datetime) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """value -> [(day, daily rollup item)] of one dimension over the whole days from `since` to the
        range's end; with a filter on that dimension, of its value only."""
        first = since.strftime("%Y-%m-%d")
        last = (filters.until - timedelta(microseconds=1) if filters.until else datetime.now(UTC)).strftime("%Y-%m-%d")
        prefix = layout.rollup_sk(dimension, "")
        value = getattr(filters, dimension)
        sk, exact = (rollup_sk(dimension, value), True) if value is not None else (prefix, False)
        span = days(first, last)
        found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        read = parallel(lambda d: self.table.items(layout.rollup_pk("d", d), sk, exact), span)
        for day, items in zip(span, read, strict=True):
            for item in items:
                found.setdefault(item["sk"][len(prefix) :], []).append((day, item))
        return found


def _rollup_filter(filters: Filters) -> tuple[str, str] | None:
    """The one (dimension, value) equality filter stats can take from the rollups; Unsupported otherwise."""
    if filters.prompt or filters.error_type or filters.status is not None or filters.scores:
        raise Unsupported(f"stats cannot filter by prompt, error_type, status or score here; {_HELP}")
    equal = [(name, getattr(filters, name)) for name in _DIMENSIONS if getattr(filters, name) is not None]
    equal += [(PROPERTY_PREFIX + name, value) for name, value in filters.properties]
    if len(equal) > 1:
        raise Unsupported(f"stats got {len(equal)} filters; {_HELP}")
    return equal[0] if equal else None


def _periods(grain: Bucket, since: datetime, until: datetime) -> list[str]:
    """Rollup periods overlapping [since, until): whole days ('2026-11-26') or hours ('2026-11-26T21')."""
    step = timedelta(days=1) if grain == "day" else timedelta(hours=1)
    moment = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if grain == "day":
        moment = moment.replace(hour=0)
    periods = []
    while moment < until:
        periods.append(moment.strftime("%Y-%m-%d" if grain == "day" else "%Y-%m-%dT%H"))
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
