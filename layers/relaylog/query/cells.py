"""Stats as cells that add up: counts, sums and latency histograms per (time bucket, group).

Both back ends produce cells: the local one from one DuckDB GROUP BY, the AWS one from rollup
items. Totals per group, per bucket and overall are sums of cells, and percentiles are read from
the summed histograms (relaylog.aggregate.histogram: log-scale, within 9.05%), so the local and
the deployed dashboards compute every number the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from relaylog.aggregate import histogram
from relaylog.query.params import StatsParams, record_time
from relaylog.store.stats import QUANTILES, Metrics, metrics

COUNTS = ("requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "usage_unknown", "cost_unknown")


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

    def metrics(self) -> Metrics:
        return metrics(
            {
                **self.counts,
                "cost_usd": round(self.cost_usd, 12),
                "latency": [histogram.percentile(self.latency, q) for q in QUANTILES],
                "ttft": [histogram.percentile(self.ttft, q) for q in QUANTILES],
            }
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


def shape(params: StatsParams, cells: Mapping[tuple[str, str | None], Cell]) -> dict[str, Any]:
    """The stats response from cells keyed by (bucket start, group key or None)."""
    by_group: dict[str | None, list[Cell]] = {}
    by_time: dict[str, list[Cell]] = {}
    for (t, key), cell in cells.items():
        by_group.setdefault(key, []).append(cell)
        by_time.setdefault(t, []).append(cell)
    groups: list[dict[str, Any]] = (
        [{"key": key, **_sum(members).metrics()} for key, members in by_group.items()] if params.by else []
    )
    groups.sort(key=lambda g: (-g["requests"], g["key"] is None, g["key"] or ""))
    top = {g["key"] for g in groups[: params.top]}
    group_series = (
        [
            {"t": t, "key": key, **cell.metrics()}
            for (t, key), cell in sorted(cells.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
            if key in top
        ]
        if params.by
        else []
    )
    filters = params.filters
    total = _sum(cells.values())
    return {
        "bucket": params.bucket,
        "by": params.by,
        "since": record_time(filters.since) if filters.since else None,
        "until": record_time(filters.until) if filters.until else None,
        "total": total.metrics(),
        "histograms": {"latency_ms": _histogram(total.latency), "ttft_ms": _histogram(total.ttft)},
        "groups": groups,
        "series": [{"t": t, **_sum(members).metrics()} for t, members in sorted(by_time.items())],
        "group_series": group_series,
    }
