"""Records → additive rollup deltas, per hour and per day, for every dimension relaylog slices by.

Records are first summed per group of identical dimension values, then each group is fanned out to
its rollup items: the per-record work is one dictionary of additions, whatever the dimensions.
Every attribute is a top-level number, because DynamoDB's ADD cannot create a map's first key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from operator import add
from typing import Any

from ..aws import layout
from ..usage import EMPTY_FIELDS
from .histogram import bucket

TOKEN_FIELDS: tuple[str, ...] = tuple(EMPTY_FIELDS)
DEFAULT_HOURLY_TTL_DAYS = 35

Numbers = dict[str, int | float | Decimal]


@dataclass(frozen=True, slots=True)
class Item:
    """One rollup item: its key, what it describes, and the additions to apply."""

    pk: str
    sk: str
    grain: str
    period: str
    dimension: str
    value: str
    add: Numbers
    expires_at: int | None


def is_error(record: Mapping[str, Any]) -> bool:
    status = record.get("status") or 0
    return status == 0 or status >= 400 or record.get("error_type") is not None


# The additive numbers of an item, in a fixed order so sums run as one C-level map(add, ...);
# histogram buckets are sparse and kept apart.
SLOTS: tuple[str, ...] = (
    "requests", "errors", *TOKEN_FIELDS, "usage_absent", "cost_usd", "cost_unknown",
    "latency_ms_sum", "ttft_ms_sum", "ttft_count",
)  # fmt: skip
_ZERO: tuple[int, ...] = (0,) * len(SLOTS)


class _Sum:
    __slots__ = ("numbers", "buckets")

    def __init__(self, numbers: list[Any], buckets: dict[str, int]) -> None:
        self.numbers = numbers
        self.buckets = buckets

    def add(self, other: _Sum) -> None:
        # New containers, never changed in place: shared() copies are then free.
        self.numbers = list(map(add, self.numbers, other.numbers))
        buckets = dict(self.buckets)
        for name, count in other.buckets.items():
            buckets[name] = buckets.get(name, 0) + count
        self.buckets = buckets

    def shared(self) -> _Sum:
        return _Sum(self.numbers, self.buckets)

    def as_numbers(self) -> Numbers:
        out: Numbers = {name: value for name, value in zip(SLOTS, self.numbers, strict=True) if value}
        out.update(self.buckets)
        return out


def _measure(record: Mapping[str, Any]) -> _Sum:
    tokens = [record.get(name) for name in TOKEN_FIELDS]
    usage_known = any(t is not None for t in tokens)
    cost = record.get("cost_usd")
    latency = record.get("latency_ms")
    ttft = record.get("ttft_ms")
    buckets = {}
    if latency is not None:
        buckets[f"lat_{bucket(latency)}"] = 1
    if ttft is not None:
        buckets[f"ttft_{bucket(ttft)}"] = 1
    numbers = [
        1,
        1 if is_error(record) else 0,
        *(t or 0 for t in tokens),
        0 if usage_known else 1,
        # Exact decimal sums: what each record says, to the digit.
        Decimal(repr(cost)) if cost is not None else 0,
        1 if cost is None and usage_known else 0,
        latency or 0,
        ttft or 0,
        0 if ttft is None else 1,
    ]
    return _Sum(numbers, buckets)


def _dimensions(key: tuple[Any, ...]) -> list[tuple[str, str]]:
    _, model, provider, user, session, key_id, properties = key
    dims = [("all", "")]
    for name, value in (
        ("model", model),
        ("provider", provider),
        ("user", user),
        ("session", session),
        ("key", key_id),
    ):
        if value:
            dims.append((name, value))
    dims += [("property", f"{name}={value}") for name, value in properties]
    return dims


def rollup(records: Iterable[Mapping[str, Any]], hourly_ttl_days: int = DEFAULT_HOURLY_TTL_DAYS) -> list[Item]:
    """The rollup items for these records, sorted by key (so chunks are the same on every run)."""
    # Records with the same dimension values first, then groups → hourly items → daily items:
    # each step sums fewer, larger things.
    groups: dict[tuple[Any, ...], _Sum] = {}
    for record in records:
        props = record.get("properties")
        key = (
            f"{record['dt']}T{record['hour']}",
            record.get("model"),
            record.get("provider"),
            record.get("user_id"),
            record.get("session_id"),
            record.get("key_id"),
            tuple(sorted(props.items())) if props else (),
        )
        found = groups.get(key)
        if found is None:
            groups[key] = _measure(record)
        else:
            found.add(_measure(record))

    hourly: dict[tuple[str, str, str, str], _Sum] = {}
    for key, summed in groups.items():
        hour = key[0]
        for dimension, value in _dimensions(key):
            target = (hour, dimension, value, layout.rollup_sk(dimension, value))
            found = hourly.get(target)
            if found is None:
                hourly[target] = summed.shared()
            else:
                found.add(summed)

    daily: dict[tuple[str, str, str, str], _Sum] = {}
    for (hour, dimension, value, sk), summed in hourly.items():
        target = (hour[:10], dimension, value, sk)
        found = daily.get(target)
        if found is None:
            daily[target] = summed.shared()
        else:
            found.add(summed)

    expiry = {hour: _expiry(hour, hourly_ttl_days) for hour, *_ in hourly}
    items = [
        Item(layout.rollup_pk("h", hour), sk, "h", hour, dimension, value, summed.as_numbers(), expiry[hour])
        for (hour, dimension, value, sk), summed in hourly.items()
    ]
    items += [
        Item(layout.rollup_pk("d", day), sk, "d", day, dimension, value, summed.as_numbers(), None)
        for (day, dimension, value, sk), summed in daily.items()
    ]
    items.sort(key=lambda item: (item.pk, item.sk))
    return items


def _expiry(hour: str, days: int) -> int:
    start = datetime.fromisoformat(hour + ":00:00+00:00")
    return int((start + timedelta(hours=1, days=days)).timestamp())
