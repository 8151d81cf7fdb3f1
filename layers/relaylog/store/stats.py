"""Aggregate numbers over records: volume, errors, tokens, cost, latency percentiles."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypedDict

# `--by` choices that are plain columns. Column names come only from this table, never from input.
GROUP_COLUMNS = {"model": "model", "user": "user_id", "provider": "provider", "session": "session_id"}
PROPERTY_PREFIX = "property:"
# Property names arrive as HTTP header name suffixes, so they are HTTP tokens (RFC 9110).
_PROPERTY_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")

QUANTILES = (0.5, 0.95, 0.99)


class Metrics(TypedDict):
    requests: int
    errors: int
    error_rate: float | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    usage_unknown: int  # records without input_tokens: left out of the token sums, not counted as 0
    cost_usd: float
    cost_unknown: int  # records with cost null (unknown model, no usage): left out of cost_usd
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    ttft_p99_ms: float | None


class Stats(TypedDict):
    by: str | None
    since: str | None
    total: Metrics
    groups: list[dict[str, Any]]  # {"key": value or None, **Metrics}, most requests first


def group_key(by: str) -> tuple[str, dict[str, str]]:
    """SQL expression and bound parameters for a `--by` value; ValueError if it is not one."""
    if by in GROUP_COLUMNS:
        return GROUP_COLUMNS[by], {}
    if by.startswith(PROPERTY_PREFIX):
        name = by[len(PROPERTY_PREFIX) :]
        if not _PROPERTY_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a property name (the NAME of a Helicone-Property-NAME header)")
        # Header names are case-insensitive, and ASGI servers hand them over lowercased, so the
        # stored name's case says little: match it case-insensitively. (A subquery rather than a
        # lambda, whose syntax differs between DuckDB releases.)
        return (
            "(SELECT min(p.value) FROM (SELECT unnest(map_entries(properties)) AS p)"
            " WHERE lower(p.key) = lower($property))",
            {"property": name},
        )
    choices = ", ".join([*GROUP_COLUMNS, PROPERTY_PREFIX + "NAME"])
    raise ValueError(f"expected one of {choices}, got {by!r}")


_PERCENTILES = ", ".join(str(q) for q in QUANTILES)

# What counts as an error everywhere (rollups, saved queries, dashboard): the provider's or
# relaylog's 4xx/5xx, a client gone before any answer (status 0), or any error_type.
ERROR_SQL = "(status >= 400 OR status = 0 OR error_type IS NOT NULL)"


def is_error(record: Mapping[str, Any]) -> bool:
    status = record.get("status")
    return status is not None and (status >= 400 or status == 0) or record.get("error_type") is not None


# The Metrics columns over a group of records; `metrics()` reads a row of them back.
METRICS_SELECT = f"""
  count(*) AS requests,
  count(*) FILTER (WHERE {ERROR_SQL}) AS errors,
  coalesce(sum(input_tokens), 0) AS input_tokens,
  coalesce(sum(output_tokens), 0) AS output_tokens,
  coalesce(sum(cache_read_tokens), 0) AS cache_read_tokens,
  count(*) FILTER (WHERE input_tokens IS NULL) AS usage_unknown,
  coalesce(sum(cost_usd), 0.0) AS cost_usd,
  count(*) FILTER (WHERE cost_usd IS NULL) AS cost_unknown,
  quantile_cont(latency_ms, [{_PERCENTILES}]) AS latency,
  quantile_cont(ttft_ms, [{_PERCENTILES}]) AS ttft
"""

# One scan gives both the per-group rows and the overall total (the empty grouping set).
SQL = f"""
SELECT
  grouping(group_key) = 1 AS is_total,
  group_key,
{METRICS_SELECT}
FROM (SELECT *, {{key}} AS group_key FROM requests WHERE {{where}})
GROUP BY GROUPING SETS ((group_key), ())
"""


def metrics(row: dict[str, Any]) -> Metrics:
    latency = row["latency"] or [None] * len(QUANTILES)
    ttft = row["ttft"] or [None] * len(QUANTILES)
    requests = int(row["requests"])
    errors = int(row["errors"])
    return Metrics(
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else None,
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cache_read_tokens=int(row["cache_read_tokens"]),
        usage_unknown=int(row["usage_unknown"]),
        cost_usd=float(row["cost_usd"]),
        cost_unknown=int(row["cost_unknown"]),
        latency_p50_ms=latency[0],
        latency_p95_ms=latency[1],
        latency_p99_ms=latency[2],
        ttft_p50_ms=ttft[0],
        ttft_p95_ms=ttft[1],
        ttft_p99_ms=ttft[2],
    )
