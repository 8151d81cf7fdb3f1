"""Fixed log-scale buckets for latency and time to first token, in milliseconds.

Four buckets per doubling from 1 ms to 2^20.25 ms (about 20.8 minutes, longer than a Lambda
invocation can last): bucket 0 holds [0, 1) ms, bucket i in 1..81 holds [2^((i-1)/4), 2^(i/4)) ms,
bucket 82 holds everything from 2^20.25 ms up. Counts merge by addition, so percentiles can be read
back from any sum of rollup items.

Error bound of `percentile`: it answers the nearest-rank q-quantile (the smallest recorded value
with at least q of all values at or below it) as the geometric middle of that value's bucket, so
for a true value between 1 ms and 2^20.25 ms the answer is within RELATIVE_ERROR = 2^(1/8) - 1
(9.05%) of it, in either direction. Below 1 ms the answer is 0.5 ms (off by at most 0.5 ms); in
the open top bucket it is the bucket's lower bound, a floor of the true value.

Rollup items store the counts as top-level attributes `lat_<i>` and `ttft_<i>`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from typing import Any

PER_DOUBLING = 4
TOP_EXPONENT = 20.25  # log2 of the top bucket's lower bound in ms
# BOUNDS[i] is where bucket i ends and bucket i + 1 begins.
BOUNDS: tuple[float, ...] = tuple(2 ** (i / PER_DOUBLING) for i in range(int(TOP_EXPONENT * PER_DOUBLING) + 1))
BUCKETS = len(BOUNDS) + 1
TOP = BUCKETS - 1
RELATIVE_ERROR = 2 ** (1 / (2 * PER_DOUBLING)) - 1

LATENCY = "lat_"
TTFT = "ttft_"


def bucket(ms: float) -> int:
    """The bucket holding `ms` (negative values count as 0 ms)."""
    return bisect_right(BOUNDS, ms)


def attribute(prefix: str, index: int) -> str:
    """The rollup item attribute holding bucket `index` of the LATENCY or TTFT histogram."""
    return f"{prefix}{index}"


def lower_bound(index: int) -> float:
    return 0.0 if index == 0 else BOUNDS[index - 1]


def upper_bound(index: int) -> float:
    return math.inf if index == TOP else BOUNDS[index]


def estimate(index: int) -> float:
    """The value reported for anything in bucket `index` (see the module's error bound)."""
    if index == 0:
        return 0.5
    if index == TOP:
        return BOUNDS[-1]
    return math.sqrt(BOUNDS[index - 1] * BOUNDS[index])


def counts_from_item(item: Mapping[str, Any], prefix: str) -> dict[int, int]:
    """One histogram's bucket counts from a rollup item (attribute values as int or Decimal)."""
    counts: dict[int, int] = {}
    for name, value in item.items():
        # `ttft_count` and `ttft_ms_sum` share the prefix; bucket attributes end in digits only.
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            counts[int(name[len(prefix) :])] = int(value)
    return counts


def merge(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for counts in histograms:
        for index, count in counts.items():
            merged[index] = merged.get(index, 0) + count
    return merged


def percentile(counts: Mapping[int, int], q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q <= 1) in ms, within the module's error bound; None when empty."""
    total = sum(counts.values())
    if total <= 0:
        return None
    # round(): 0.07 * 100 is 7.000000000000001 in binary floating point, and rank 8 would be wrong.
    rank = max(1, math.ceil(round(q * total, 9)))
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            return estimate(index)
    raise AssertionError("unreachable: rank is at most the total")


def percentiles(counts: Mapping[int, int], qs: Iterable[float] = (0.5, 0.95, 0.99)) -> dict[float, float | None]:
    return {q: percentile(counts, q) for q in qs}
