"""Stats as cells that add up: counts, sums and latency histograms per (time bucket, group).

Both back ends produce cells: the local one from one DuckDB GROUP BY, the AWS one from rollup
items. Totals per group, per bucket and overall are sums of cells, and percentiles are read from
the summed histograms (relaylog.histogram: log-scale, within 9.05%), so the local and the deployed
dashboards compute every number the same way. A back end that keeps every value can hand in
exact percentiles of the totals and groups instead (`Exact`, for `relaylog stats`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from relaylog import histogram
from relaylog.query.filters import record_time
from relaylog.query.params import StatsParams

COUNTS = ("requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "usage_unknown", "cost_unknown")
QUANTILES = (0.5, 0.95, 0.99)
# Latency and ttft at each of QUANTILES (None where there were no values).
Percentiles = tuple[list[float | None], list[float | None]]


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


@dataclass(frozen=True, slots=True)
class Exact:
    """Exact percentiles of the whole and of each group (by group key, None for no value)."""

    total: Percentiles
    groups: Mapping[str | None, Percentiles]


@dataclass(slots=True)
class Cell:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    cost_usd: float = 0.0
    latency: dict[int, int] = field(default_factory=dict)
    ttft: dict[int, int] = field(default_factory=dict)

    def add(self, other: Cell) -> None:
        for name, value in other.counts.items():
            self.counts[name] += value
        self.cost_usd += other.cost_usd
        for mine, theirs in ((self.latency, other.latency), (self.ttft, other.ttft)):
            for index, count in theirs.items():
                mine[index] = mine.get(index, 0) + count

    def metrics(self, exact: Percentiles | None = None) -> Metrics:
        latency, ttft = exact or (
            [histogram.percentile(self.latency, q) for q in QUANTILES],
            [histogram.percentile(self.ttft, q) for q in QUANTILES],
        )
        requests, errors = self.counts["requests"], self.counts["errors"]
        return Metrics(
            requests=requests,
            errors=errors,
            error_rate=errors / requests if requests else None,
            input_tokens=self.counts["input_tokens"],
            output_tokens=self.counts["output_tokens"],
            cache_read_tokens=self.counts["cache_read_tokens"],
            usage_unknown=self.counts["usage_unknown"],
            cost_usd=round(self.cost_usd, 12),
            cost_unknown=self.counts["cost_unknown"],
            latency_p50_ms=latency[0],
            latency_p95_ms=latency[1],
            latency_p99_ms=latency[2],
            ttft_p50_ms=ttft[0],
            ttft_p95_ms=ttft[1],
            ttft_p99_ms=ttft[2],
        )


def _sum(cells: Iterable[Cell]) -> Cell:
    total = Cell()
    for cell in cells:
        total.add(cell)
    return total


def _histogram(counts: Mapping[int, int]) -> list[dict[str, Any]]:
    """The non-empty buckets of a histogram, fastest first; the top bucket has no upper bound."""
    return [
        {
            "from_ms": histogram.lower_bound(index),
            "to_ms": None if index == histogram.TOP else histogram.upper_bound(index),
            "count": count,
        }
        for index, count in sorted(counts.items())
        if count
    ]


def shape(
    params: StatsParams, cells: Mapping[tuple[str | None, str | None], Cell], exact: Exact | None = None
) -> dict[str, Any]:
    """The stats response from cells keyed by (bucket start, or None without buckets; group key or None)."""
    by_group: dict[str | None, list[Cell]] = {}
    by_time: dict[str, list[Cell]] = {}
    for (t, key), cell in cells.items():
        by_group.setdefault(key, []).append(cell)
        if t is not None:
            by_time.setdefault(t, []).append(cell)
    groups: list[dict[str, Any]] = (
        [
            {"key": key, **_sum(members).metrics(exact.groups.get(key) if exact else None)}
            for key, members in by_group.items()
        ]
        if params.by
        else []
    )
    groups.sort(key=lambda g: (-g["requests"], g["key"] is None, g["key"] or ""))
    top = {g["key"] for g in groups[: params.top]}
    group_series = (
        [
            {"t": t, "key": key, **cell.metrics()}
            for (t, key), cell in sorted(cells.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1])))
            if key in top and t is not None
        ]
        if params.by
        else []
    )
    filters = params.filters
    total = _sum(cells.values())
    # None where the back end made none (exact percentiles without buckets).
    histograms = (
        None
        if exact and params.bucket is None
        else {"latency_ms": _histogram(total.latency), "ttft_ms": _histogram(total.ttft)}
    )
    return {
        "bucket": params.bucket,
        "by": params.by,
        "since": record_time(filters.since) if filters.since else None,
        "until": record_time(filters.until) if filters.until else None,
        "total": total.metrics(exact.total if exact else None),
        "histograms": histograms,
        "groups": groups,
        "series": [{"t": t, **_sum(members).metrics()} for t, members in sorted(by_time.items())],
        "group_series": group_series,
    }
