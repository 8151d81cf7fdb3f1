"""The key store on AWS: the deployment's DynamoDB table, item pk KEY, sk the key's SHA-256.

Like the local key file, only hashes are stored. The proxy re-reads the active set at most every
RELOAD_INTERVAL_S (one Query), so `verify` stays a dict lookup and a revocation takes effect
within seconds on every warm Lambda.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ..aws import layout
from ..aws.clients import make_client
from . import CachedKeys, KeyInfo, describe, hash_key, new_secret, now

log = logging.getLogger(__name__)

RELOAD_INTERVAL_S = 10.0


def _info(item: dict[str, Any]) -> KeyInfo:
    return KeyInfo(
        key_id=item["key_id"]["S"],
        name=item.get("name", {}).get("S"),
        prefix=item.get("prefix", {}).get("S", ""),
        created_at=item["created_at"]["S"],
        revoked_at=item.get("revoked_at", {}).get("S"),
        limit=item.get("limit", {}).get("S"),  # absent on items written before limits existed
    )


class DynamoKeyStore(CachedKeys):
    def __init__(self, table: str, client: Any = None, reload_interval_s: float = RELOAD_INTERVAL_S) -> None:
        super().__init__(reload_interval_s)
        self.table = table
        self._client = client or make_client("dynamodb")

    def _load_active(self) -> list[tuple[str, KeyInfo]] | None:
        try:
            items = self._items()
        except (BotoCoreError, ClientError) as exc:
            # Keep serving with the keys we had rather than locking every client out.
            log.warning("keeping previously loaded keys: DynamoDB: %s", type(exc).__name__)
            return None
        return [(item["sk"]["S"], _info(item)) for item in items if "revoked_at" not in item]

    def _items(self) -> list[dict[str, Any]]:
        pages = self._client.get_paginator("query").paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": layout.KEY_PK}},
            ConsistentRead=True,
        )
        return [item for page in pages for item in page.get("Items", [])]

    # -- management (CLI) ----------------------------------------------------------------------

    def list(self) -> list[KeyInfo]:
        return sorted((_info(item) for item in self._items()), key=lambda k: k.created_at)

    def create(self, name: str | None = None, limit: str | None = None) -> tuple[str, KeyInfo]:
        """ValueError when `limit` is not a valid rate-limit policy; nothing is written then."""
        secret = new_secret()
        info = describe(secret, name, {k.key_id for k in self.list()}, limit)
        item = {
            "pk": {"S": layout.KEY_PK},
            "sk": {"S": hash_key(secret)},
            "key_id": {"S": info.key_id},
            "prefix": {"S": info.prefix},
            "created_at": {"S": info.created_at},
        }
        if name is not None:
            item["name"] = {"S": name}
        if info.limit is not None:
            item["limit"] = {"S": info.limit}
        self._client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(sk)")
        self._checked_at = float("-inf")
        return secret, info

    def revoke(self, key_id: str) -> bool:
        """True if an active key with this id was revoked now; False if there was none."""
        for item in self._items():
            if item["key_id"]["S"] == key_id and "revoked_at" not in item:
                try:
                    self._client.update_item(
                        TableName=self.table,
                        Key={"pk": item["pk"], "sk": item["sk"]},
                        UpdateExpression="SET revoked_at = :at",
                        ConditionExpression="attribute_not_exists(revoked_at)",
                        ExpressionAttributeValues={":at": {"S": now()}},
                    )
                except ClientError as exc:
                    if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                        return False  # revoked by someone else meanwhile
                    raise
                self._checked_at = float("-inf")
                return True
        return False
