"""Filters on requests, defined once: which column each name reads, and what it means both as
DuckDB SQL (the local store) and as a test of a row in Python (the AWS back end's request index).

Column names come only from the tables here, never from input; every value is a bound parameter.
Times compare as strings: created_at is always `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

# Property names arrive as HTTP header name suffixes, so they are HTTP tokens (RFC 9110). Header
# names are case-insensitive and relaylog records them lowercased, so a name is matched whatever
# its case (records written by hand or by other tools may not be lowercased).
PROPERTY_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
PROPERTY_PREFIX = "property:"

# Filters that match one column exactly: filter name -> column.
EQUALS = {
    "model": "model",
    "provider": "provider",
    "user": "user_id",
    "session": "session_id",
    "prompt": "prompt_id",
    "key": "key_id",
    "error_type": "error_type",
}
# Dimensions stats group by (besides property:NAME): name -> the SQL of a row's value.
GROUP_COLUMNS = {
    "model": "model",
    "provider": "provider",
    "user": "user_id",
    "session": "session_id",
    "key": "key_id",
    "status": "CAST(status AS VARCHAR)",
    "prompt": "prompt_id",
}
GROUP_DIMENSIONS = tuple(GROUP_COLUMNS)

ScoreOp = Literal["=", "!=", ">", ">=", "<", "<="]
# Score comparison -> (SQL operator, the same in Python).
SCORE_OPERATORS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "=": ("=", operator.eq),
    "!=": ("<>", operator.ne),
    ">": (">", operator.gt),
    ">=": (">=", operator.ge),
    "<": ("<", operator.lt),
    "<=": ("<=", operator.le),
}

# What counts as an error everywhere (API, dashboard, `relaylog stats`, rollups, saved queries):
# the provider's or relaylog's 4xx/5xx, a client gone before any answer (status 0), or any error_type.
ERROR_SQL = "(status >= 400 OR status = 0 OR error_type IS NOT NULL)"


def is_error(record: Mapping[str, Any]) -> bool:
    status = record.get("status")
    return status is not None and (status >= 400 or status == 0) or record.get("error_type") is not None


@dataclass(frozen=True, slots=True)
class ScoreFilter:
    name: str
    op: ScoreOp
    value: float  # booleans as 1.0 / 0.0


@dataclass(frozen=True, slots=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    # Exact matches (EQUALS); None means any.
    model: str | None = None
    provider: str | None = None
    user: str | None = None
    session: str | None = None
    prompt: str | None = None
    key: str | None = None
    error_type: str | None = None
    status: int | Literal["ok", "error"] | None = None
    properties: tuple[tuple[str, str], ...] = ()  # (lowercased name, value)
    scores: tuple[ScoreFilter, ...] = ()
    search: str | None = None  # text in the bodies kept in the record


def record_time(moment: datetime) -> str:
    """A datetime in the record's created_at format, so times compare as strings."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def property_sql(parameter: str) -> str:
    """SQL for the value of the property whose lowercased name is bound as `$parameter` (NULL if none).

    The lookup by the name as given finds every record relaylog wrote; only a row without it pays
    for the case-insensitive search among its entries.
    """
    return (
        f"coalesce(properties[${parameter}],"
        f" list_filter(map_entries(properties), lambda e: lower(e.key) = ${parameter})[1].value)"
    )


def property_value(properties: Mapping[str, str] | None, name: str) -> str | None:
    """`property_sql` in Python: the value of the property `name` (lowercased), whatever its case."""
    if not properties:
        return None
    value = properties.get(name)
    if value is None:
        value = next((v for k, v in properties.items() if k.lower() == name), None)
    return value


def group_sql(by: str, params: dict[str, Any]) -> str:
    """SQL for a row's value of the `by` dimension (checked already: GROUP_DIMENSIONS or property:NAME),
    binding what it needs into `params`."""
    if by.startswith(PROPERTY_PREFIX):
        params["group_property"] = by[len(PROPERTY_PREFIX) :].lower()
        return property_sql("group_property")
    return GROUP_COLUMNS[by]


def where(filters: Filters) -> tuple[str, dict[str, Any]]:
    """The filters as a SQL condition on `requests` (scores on the `scores` view) and its parameters."""
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
        clauses.append(f"NOT {ERROR_SQL}")
    elif filters.status == "error":
        clauses.append(ERROR_SQL)
    elif filters.status is not None:
        clauses.append("status = $status")
        params["status"] = filters.status
    for i, (name, value) in enumerate(filters.properties):
        clauses.append(f"{property_sql(f'pn{i}')} = $pv{i}")
        params[f"pn{i}"], params[f"pv{i}"] = name.lower(), value
    for i, score in enumerate(filters.scores):
        op = SCORE_OPERATORS[score.op][0]
        clauses.append(f"request_id IN (SELECT request_id FROM scores WHERE name = $sn{i} AND value {op} $sv{i})")
        params[f"sn{i}"], params[f"sv{i}"] = score.name, score.value
    if filters.search is not None:
        # Bodies kept in files of their own (too large for the record) are not searched.
        clauses.append("(position($q IN lower(request_body)) > 0 OR position($q IN lower(response_body)) > 0)")
        params["q"] = filters.search.lower()
    return " AND ".join(clauses), params


def matches(row: Mapping[str, Any], filters: Filters) -> bool:
    """`where` in Python, for a row with the summary columns: scores (`scored`) and search aside."""
    created = row["created_at"]
    if filters.since is not None and not created >= record_time(filters.since):
        return False
    if filters.until is not None and not created < record_time(filters.until):
        return False
    for name, column in EQUALS.items():
        value = getattr(filters, name)
        if value is not None and row[column] != value:
            return False
    if filters.status == "ok" and is_error(row):
        return False
    if filters.status == "error" and not is_error(row):
        return False
    if isinstance(filters.status, int) and row["status"] != filters.status:
        return False
    return all(property_value(row["properties"], name.lower()) == value for name, value in filters.properties)


def scored(scores: Mapping[str, Any], filters: Filters) -> bool:
    """The score filters in Python, on a request's scores by name."""
    for wanted in filters.scores:
        value = scores.get(wanted.name)
        if value is None or not SCORE_OPERATORS[wanted.op][1](float(value), wanted.value):
            return False
    return True
