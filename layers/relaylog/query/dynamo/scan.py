"""Reading the request index in sort key order: a day's shards (aws/layout.py) queried in parallel and
merged, one day after another, or one GSI query.

How shards merge without reading a day whole: each round asks the next page of every shard that has
read least far (all of them at first), in parallel. Every item of a shard up to the key it has read
to (its LastEvaluatedKey, which a FilterExpression does not hold back) is known, so every item up to
the least of those keys over the shards still being read is known in every shard: those items go
out, in order, and that key is the position a cut-short scan goes on from. One shard reads exactly
as one Query did before shards.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from relaylog.query.dynamo.items import plain
from relaylog.query.dynamo.table import Table, parallel

# Keys-only GSIs: an item found there is read from the table.
KEYS_ONLY = frozenset({"by_id", "by_user"})


@dataclass(frozen=True, slots=True)
class Span:
    """Index sort keys strictly between low and high: neither bound is ever an item's sk, except a
    cursor's, which the page before returned already."""

    low: str
    high: str

    def condition(self) -> tuple[str, dict[str, Any]]:
        return "sk BETWEEN :low AND :high", {":low": {"S": self.low}, ":high": {"S": self.high}}

    def holds(self, sk: str) -> bool:
        return self.low < sk < self.high


@dataclass(frozen=True, slots=True)
class Stream:
    """Queries (Query arguments, ExclusiveStartKey aside) whose items merge into one sort key order:
    a day's shards, or one GSI query."""

    queries: list[dict[str, Any]]
    end: str | None  # the position once it is read to the end: a day's edge; None for a GSI


@dataclass(slots=True)
class _Shard:
    query: dict[str, Any]
    start: dict[str, Any] | None = None  # ExclusiveStartKey of its next page
    done: bool = False
    read_to: str = ""  # the sort key it has read up to; "" before its first page
    held: list[dict[str, Any]] = field(default_factory=list)  # items read, not yet given out


@dataclass
class Scan:
    """Index items of a span in sort key order, stream after stream. `max_calls` bounds the rounds of
    Query calls (one call per shard still behind, at once)."""

    table: Table
    streams: list[Stream]
    span: Span
    max_calls: int | None = None
    page_size: int | None = None
    calls: int = 0  # rounds
    read: int = 0  # items DynamoDB read (before a FilterExpression)
    position: str | None = None  # the sort key read to: where a cut-short scan goes on from
    exhausted: bool = False

    def pages(self) -> Iterator[list[dict[str, Any]]]:
        for stream in self.streams:
            shards = [_Shard(query) for query in stream.queries]
            descending = stream.queries[0].get("ScanIndexForward") is False
            keys_only = len(shards) == 1 and shards[0].query.get("IndexName") in KEYS_ONLY
            while True:
                if self.max_calls is not None and self.calls >= self.max_calls:
                    return
                live = [shard for shard in shards if not shard.done]
                behind = _frontier(live, descending)
                self.read += sum(parallel(self._read, [shard for shard in live if shard.read_to == behind]))
                self.calls += 1
                live = [shard for shard in shards if not shard.done]
                frontier = _frontier(live, descending) if live else None
                out = _release(shards, frontier, descending)
                if frontier is not None:
                    self.position = frontier
                elif out:
                    self.position = out[-1]["sk"]["S"]
                if keys_only:
                    out = self.table.get_items(out)
                yield [item for item in map(plain, out) if self.span.holds(item["sk"])]
                if not live:
                    break
            if stream.end is not None:
                self.position = stream.end
        self.exhausted = True

    def _read(self, shard: _Shard) -> int:
        """Read a shard's next page; returns how many items DynamoDB read for it."""
        extra: dict[str, Any] = {"ExclusiveStartKey": shard.start} if shard.start else {}
        if self.page_size is not None:
            extra["Limit"] = self.page_size
        answer = self.table.query(**shard.query, **extra)
        shard.held.extend(answer.get("Items", []))
        shard.start = answer.get("LastEvaluatedKey")
        shard.done = not shard.start
        if shard.start:
            shard.read_to = shard.start["sk"]["S"]
        scanned: int = answer.get("ScannedCount", 0)
        return scanned


def _frontier(live: list[_Shard], descending: bool) -> str:
    """The key every live shard has read to: the least far read ("" while one has read nothing)."""
    if any(shard.read_to == "" for shard in live):
        return ""
    keys = [shard.read_to for shard in live]
    return max(keys) if descending else min(keys)


def _release(shards: list[_Shard], frontier: str | None, descending: bool) -> list[dict[str, Any]]:
    """The items held up to `frontier` (all of them once every shard is done), in order."""
    out: list[dict[str, Any]] = []
    for shard in shards:
        if frontier is None:
            out.extend(shard.held)
            shard.held = []
            continue
        keep: list[dict[str, Any]] = []
        for item in shard.held:
            sk = item["sk"]["S"]
            (out if (sk >= frontier if descending else sk <= frontier) else keep).append(item)
        shard.held = keep
    if len(shards) > 1:
        out.sort(key=_sort_key, reverse=descending)
    return out


def _sort_key(item: Mapping[str, Any]) -> str:
    key: str = item["sk"]["S"]
    return key
