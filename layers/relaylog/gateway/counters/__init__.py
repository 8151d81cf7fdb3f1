"""Rate-limit counters shared by every process of a deployment: the interface, and one
implementation per place they live, each beside it: `sqlite.py` (one SQLite file in the data
dir, local) and `dynamo.py` (conditional updates on the deployment's DynamoDB table, AWS).
"""

from __future__ import annotations

from typing import Protocol


class CounterStore(Protocol):
    """Counters shared by every process of a deployment."""

    async def take(self, counter: str, amount: float, limit: float, expires_at: float) -> tuple[bool, float]:
        """Atomically add `amount` if the counter is below `limit` and stays within it; returns
        (added, the counter's value afterwards, or as found when not added)."""
        ...

    def add(self, counter: str, amount: float, expires_at: float) -> None:
        """Add `amount` unconditionally (a call's cost, after the call)."""
        ...
