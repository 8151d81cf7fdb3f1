"""How many shards each day's request index has: decided once per day, by the first aggregator to
index a record of it, and kept in the table (aws/layout.py, `SHARDS`).

Why a count per day and not the setting alone: an index item is also its request's claim
(claims.py), so every copy of a record must get the same item key whenever it is processed. Were
the key computed from RELAYLOG_INDEX_SHARDS as it is now, a copy processed after a change of the
setting would find no claim at its new key and be counted twice; and readers could not tell which
partitions hold a day. A changed setting therefore applies from the next day that has no count yet.

A day whose one-shard partition (`REQS#<dt>`, every day's before shards) already holds an item
keeps one shard: a stack updated in the middle of a day goes on claiming that day's requests where
the code before it did. Known gap: an invocation of the code before the update that is still
running while the new code decides a day that had no item yet (only the first minutes of a UTC day,
at most the aggregator's timeout) puts its items where readers of a sharded day do not look, and a
copy of one of them in another object counts again.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ..aws import layout

_REFUSED = "ConditionalCheckFailedException"


def _key(dt: str) -> dict[str, Any]:
    return {"pk": {"S": layout.SHARDS_PK}, "sk": {"S": dt}}


class DayShards:
    """The shard count of each day asked about, `setting` for a day that has none yet. One per
    object processed: a count never changes once put, so what it read stays true."""

    def __init__(self, client: Any, table: str, setting: int) -> None:
        self.client = client
        self.table = table
        self.setting = setting
        self.known: dict[str, int] = {}

    def of(self, dt: str) -> int:
        found = self.known.get(dt)
        if found is None:
            found = self.known[dt] = self._read(dt) or self._decide(dt)
        return found

    def _read(self, dt: str) -> int | None:
        item = self.client.get_item(TableName=self.table, Key=_key(dt), ConsistentRead=True).get("Item")
        return int(item["shards"]["N"]) if item else None

    def _decide(self, dt: str) -> int:
        legacy = self.client.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": layout.requests_pk(dt)}},
            Limit=1,
            ConsistentRead=True,
        )
        shards = 1 if legacy.get("Items") else self.setting
        try:
            self.client.put_item(
                TableName=self.table,
                Item={**_key(dt), "shards": {"N": str(shards)}},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != _REFUSED:
                raise
            # Another aggregator decided first: its count is the day's.
            decided = self._read(dt)
            if decided is None:
                raise RuntimeError(f"the shard count of {dt} was refused, then not found") from exc
            return decided
        return shards
