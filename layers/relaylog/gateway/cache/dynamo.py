"""The response cache on AWS: one DynamoDB item per bucket slot, the bytes in S3 when they are large.

Item (aws/layout.py): pk CACHE#<key>, sk slot#<n>, and either `entry` (Binary, the encoded
response) or `object` (its S3 key under cache/), `until` (the entry's expires_at) and the table's
TTL attribute. DynamoDB deletes expired items lazily (often days late), so `get` checks `until`
itself. A large entry is written to S3 before its item, so an item never points at nothing.

Best effort throughout: the cache must never fail a call. Any AWS error (throttling, S3 down, a
missing grant), an unreadable entry or a lookup slower than `timeout_s` is a miss; a failed write
is dropped. Both are logged as warnings with the error's code only: never the entry (a prompt's
answer), never a key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ...aws import layout
from ...aws.clients import error_code, make_client
from . import CachedResponse, decode, encode

log = logging.getLogger(__name__)

# A DynamoDB item is at most 400 KB with its names and keys; what is larger goes to S3.
INLINE_MAX = 300_000
# A lookup slower than this is a miss: the provider is usually quicker than a hung cache.
GET_TIMEOUT_S = 3.0


class DynamoCacheStore:
    def __init__(
        self,
        table: str,
        bucket: str,
        dynamodb: Any = None,
        s3: Any = None,
        inline_max: int = INLINE_MAX,
        timeout_s: float = GET_TIMEOUT_S,
    ) -> None:
        self.table = table
        self.bucket = bucket
        self._dynamodb = dynamodb or make_client("dynamodb")
        self._s3 = s3 or make_client("s3")
        self.inline_max = inline_max
        self.timeout_s = timeout_s

    async def get(self, key: str, slot: int) -> CachedResponse | None:
        try:
            # botocore blocks; a thread keeps the event loop serving other calls meanwhile.
            return await asyncio.wait_for(asyncio.to_thread(self._get, key, slot), self.timeout_s)
        except TimeoutError:
            log.warning("cache lookup took over %.1f s: treated as a miss", self.timeout_s)
            return None

    async def put(self, key: str, slot: int, entry: CachedResponse) -> None:
        await asyncio.to_thread(self._put, key, slot, entry)

    def _get(self, key: str, slot: int) -> CachedResponse | None:
        try:
            item = self._dynamodb.get_item(
                TableName=self.table,
                Key={"pk": {"S": layout.cache_pk(key)}, "sk": {"S": layout.cache_sk(slot)}},
                # Strongly consistent: a call repeated right after the first must find its entry
                # (entries are small; the read costs one unit instead of half a unit).
                ConsistentRead=True,
            ).get("Item")
            if item is None or float(item["until"]["N"]) <= time.time():
                return None
            if "entry" in item:
                data: bytes = item["entry"]["B"]
            else:
                data = self._s3.get_object(Bucket=self.bucket, Key=item["object"]["S"])["Body"].read()
            entry = decode(data)
        except (BotoCoreError, ClientError) as exc:
            log.warning("cache lookup failed, treated as a miss: %s", error_code(exc))
            return None
        except (KeyError, ValueError) as exc:
            # An item of another shape, or bytes that are not a whole entry.
            log.warning("unreadable cache entry, treated as a miss: %s", type(exc).__name__)
            return None
        return entry if entry.expires_at > time.time() else None

    def _put(self, key: str, slot: int, entry: CachedResponse) -> None:
        if entry.expires_at <= time.time():
            return
        data = encode(entry)
        item: dict[str, Any] = {
            "pk": {"S": layout.cache_pk(key)},
            "sk": {"S": layout.cache_sk(slot)},
            "until": {"N": f"{float(entry.expires_at):.3f}"},
            layout.TTL_ATTRIBUTE: {"N": str(int(entry.expires_at))},
        }
        try:
            if len(data) <= self.inline_max:
                item["entry"] = {"B": data}
            else:
                name = layout.cache_object(key, slot)
                self._s3.put_object(Bucket=self.bucket, Key=name, Body=data, ContentType="application/octet-stream")
                item["object"] = {"S": name}
            self._dynamodb.put_item(TableName=self.table, Item=item)
        except (BotoCoreError, ClientError) as exc:
            log.warning("cache write failed, entry dropped: %s", error_code(exc))
