"""Reading relaylog's DynamoDB table: queries, batch gets with back-off, reads in parallel."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from relaylog.aws import layout
from relaylog.query.backend import NotFound
from relaylog.query.dynamo.items import plain

T = TypeVar("T")
R = TypeVar("R")

BATCH_GET_KEYS = 100  # DynamoDB's limit per BatchGetItem
BATCH_GET_ATTEMPTS = 8
READERS = 16  # Queries at once; botocore pools 10 connections a client, more wait their turn


def parallel(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(READERS, len(items))) as pool:
        return list(pool.map(function, items))


class Table:
    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.name = name

    def query(self, **query: Any) -> dict[str, Any]:
        """One Query call (one page) on the table or one of its indexes."""
        answer: dict[str, Any] = self.client.query(TableName=self.name, **query)
        return answer

    def query_all(self, **query: Any) -> list[dict[str, Any]]:
        """Every item a Query finds, page after page, as plain values."""
        pages = self.client.get_paginator("query").paginate(TableName=self.name, **query)
        return [plain(item) for page in pages for item in page.get("Items", [])]

    def get_items(self, keys: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The base items of these keys (low-level, in their order; ones that are gone left out)."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for offset in range(0, len(keys), BATCH_GET_KEYS):
            pending: list[Mapping[str, Any]] = [
                {"pk": k["pk"], "sk": k["sk"]} for k in keys[offset : offset + BATCH_GET_KEYS]
            ]
            for attempt in range(BATCH_GET_ATTEMPTS):
                answer = self.client.batch_get_item(RequestItems={self.name: {"Keys": pending}})
                for item in answer.get("Responses", {}).get(self.name, []):
                    found[(item["pk"]["S"], item["sk"]["S"])] = item
                pending = answer.get("UnprocessedKeys", {}).get(self.name, {}).get("Keys", [])
                if not pending:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))  # throttled: back off before asking again
            else:
                raise RuntimeError(f"DynamoDB left {len(pending)} keys unread after {BATCH_GET_ATTEMPTS} attempts")
        return [item for k in keys if (item := found.get((k["pk"]["S"], k["sk"]["S"]))) is not None]

    def index_item(self, request_id: str) -> dict[str, Any]:
        """The index item of a request (the newest, should an id have been logged twice); NotFound if none."""
        keys = self.query(
            IndexName="by_id",
            KeyConditionExpression="request_id = :id",
            ExpressionAttributeValues={":id": {"S": request_id}},
        ).get("Items", [])
        found = self.get_items(sorted(keys, key=lambda k: k["sk"]["S"])[-1:])
        if not found:
            raise NotFound(f"no request with id {request_id!r}")
        return plain(found[0])

    def items(self, pk: str, sk: str, exact: bool) -> list[dict[str, Any]]:
        """The items of partition `pk` whose sort key is `sk` (exact) or starts with it."""
        op = "sk = :sk" if exact else "begins_with(sk, :sk)"
        return self.query_all(
            KeyConditionExpression=f"pk = :pk AND {op}",
            ExpressionAttributeValues={":pk": {"S": pk}, ":sk": {"S": sk}},
        )

    def index_shards(self, first: str, last: str) -> dict[str, int]:
        """day -> its request index's shard count, for the days from first to last (YYYY-MM-DD) that
        have one (aws/layout.py; a day without has one shard)."""
        items = self.query_all(
            KeyConditionExpression="pk = :pk AND sk BETWEEN :first AND :last",
            ExpressionAttributeValues={
                ":pk": {"S": layout.SHARDS_PK},
                ":first": {"S": first},
                ":last": {"S": last},
            },
        )
        return {item["sk"]: int(item["shards"]) for item in items}
