"""DynamoDB items as the rows the local store gives (same columns, same types), and the day
partitions the request index and the daily rollups are kept in."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from relaylog.record import FIELDS, SUMMARY_FIELDS
from relaylog.store.schema import COLUMNS

END = "~"  # sorts after every created_at (they start with a digit)
_FLOATS = frozenset(name for name, kind in COLUMNS.items() if kind == "DOUBLE")
_INTS = frozenset(name for name, kind in COLUMNS.items() if kind == "BIGINT")
_deserialise = TypeDeserializer().deserialize


def plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """A low-level DynamoDB item as Python values (numbers as Decimal)."""
    return {name: _deserialise(value) for name, value in item.items()}


def typed(name: str, value: Any) -> Any:
    """A record field with the type the local store gives it: DOUBLE columns float, BIGINT int."""
    if name in _FLOATS and isinstance(value, int | Decimal) and not isinstance(value, bool):
        return float(value)
    if name in _INTS and isinstance(value, Decimal):
        return int(value)
    return value


def summary(item: Mapping[str, Any]) -> dict[str, Any]:
    """An index item (plain values) as a request list row: every summary field, None when absent."""
    row = {name: typed(name, item.get(name)) for name in SUMMARY_FIELDS}
    if row["properties"] is None:
        row["properties"] = {}  # left out of the item when empty
    return row


def record(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A full record read from S3 with the columns and types of the local store's rows."""
    return {name: typed(name, raw.get(name)) for name in FIELDS}


def created_at(sk: str) -> str:
    """The created_at of an index item's sort key (`<created_at>#<request_id>`)."""
    return sk.partition("#")[0]


def shift(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def days(first: str, last: str) -> list[str]:
    """Every day from first to last (YYYY-MM-DD), ascending."""
    found = []
    while first <= last:
        found.append(first)
        first = shift(first, 1)
    return found
