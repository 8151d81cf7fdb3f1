"""Fixed log-scale buckets for latency and time to first token, in milliseconds.

Four buckets per doubling: bucket 0 holds [0, 1) ms, bucket i >= 1 holds [2^((i-1)/4), 2^(i/4)),
the last is open-ended (2^(95/4) ms is about 3.5 hours). Bucket counts merge by addition, so
percentiles can be read back from any sum of rollups, within one bucket: at most 19% above the
true value (2^(1/4) = 1.189), never below it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

PER_DOUBLING = 4
BUCKETS = 96
RELATIVE_ERROR = 2 ** (1 / PER_DOUBLING) - 1


def bucket(ms: float) -> int:
    if ms < 1:
        return 0
    return min(int(math.log2(ms) * PER_DOUBLING) + 1, BUCKETS - 1)


def upper_bound(index: int) -> float:
    return 2 ** (index / PER_DOUBLING)


def percentile(counts: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) as the upper bound of the bucket holding it; None when empty."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            return upper_bound(index)
    raise AssertionError("unreachable: rank is at most the total")
