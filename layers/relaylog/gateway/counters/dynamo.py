"""Rate-limit counters on AWS: one DynamoDB item per counter, changed only by conditional updates.

Item (aws/layout.py): pk RATE#<counter>, sk n, `n` the requests or cents used in the counter's
window, and the table's TTL attribute (the window's end plus a minute, from RateLimiter), so old
windows clean themselves up.

`take` is a single UpdateItem whose condition is checked and applied atomically by DynamoDB
(writes to one item are serialised), so any number of Lambda instances together never let more
than the quota through. When the condition fails, DynamoDB returns the item as it found it
(ReturnValuesOnConditionCheckFailure), so the refusal costs no second read.

Cents are floats; DynamoDB numbers are decimals, so amounts are rounded to 9 decimal places
(a nano-cent), far below any price, and written in fixed point.

Fail-open: when DynamoDB itself fails (throttled, unavailable, a missing grant) or does not answer
within `timeout_s`, `take` allows the call and logs a warning, and `add` logs and drops the
deduction. A limiter outage then costs some over-quota calls, never the gateway: every call
failing because a counter could not be read would be the worse outage.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ...aws import layout
from ...aws.clients import error_code, make_client

log = logging.getLogger(__name__)

TAKE_TIMEOUT_S = 3.0
_PLACES = Decimal("0.000000001")
# `n` is the counter's value; names go through placeholders so no reserved word can collide.
_NAMES = {"#n": "n", "#ttl": layout.TTL_ATTRIBUTE}


def _decimal(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(_PLACES, rounding=ROUND_HALF_EVEN)


def _number(value: Decimal) -> dict[str, str]:
    return {"N": f"{value.normalize():f}"}


def _value(item: object) -> float:
    """The counter's value in an item as DynamoDB returned it (absent: 0)."""
    return float(item["n"]["N"]) if isinstance(item, dict) and "n" in item else 0.0


class DynamoCounters:
    def __init__(self, table: str, client: Any = None, timeout_s: float = TAKE_TIMEOUT_S) -> None:
        self.table = table
        self._client = client or make_client("dynamodb")
        self.timeout_s = timeout_s

    def _key(self, counter: str) -> dict[str, Any]:
        return {"pk": {"S": layout.rate_pk(counter)}, "sk": {"S": layout.RATE_SK}}

    async def take(self, counter: str, amount: float, limit: float, expires_at: float) -> tuple[bool, float]:
        try:
            # botocore blocks; a thread keeps the event loop serving other calls meanwhile.
            return await asyncio.wait_for(
                asyncio.to_thread(self._take, counter, amount, limit, expires_at), self.timeout_s
            )
        except TimeoutError:
            # The update may still land: then the call was counted and allowed, which is consistent.
            log.warning("rate-limit counter took over %.1f s: call allowed (fail-open)", self.timeout_s)
            return True, amount

    def _take(self, counter: str, amount: float, limit: float, expires_at: float) -> tuple[bool, float]:
        amount_d, limit_d = _decimal(amount), _decimal(limit)
        try:
            if amount_d > limit_d:  # can never fit, even in an empty window
                found = self._client.get_item(TableName=self.table, Key=self._key(counter), ConsistentRead=True)
                return False, _value(found.get("Item"))
            answer = self._client.update_item(
                TableName=self.table,
                Key=self._key(counter),
                UpdateExpression="ADD #n :amount SET #ttl = :ttl",
                # Below the limit, and the amount still fits: n < limit AND n + amount <= limit.
                ConditionExpression="attribute_not_exists(#n) OR (#n < :limit AND #n <= :room)",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={
                    ":amount": _number(amount_d),
                    ":limit": _number(limit_d),
                    ":room": _number(limit_d - amount_d),
                    ":ttl": {"N": str(int(expires_at))},
                },
                # ALL_NEW, not UPDATED_NEW: an ADD of 0 (a cents check) may count as no update.
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False, _value(exc.response.get("Item"))
            log.warning("rate-limit counter unavailable, call allowed (fail-open): %s", error_code(exc))
            return True, amount
        except BotoCoreError as exc:
            log.warning("rate-limit counter unavailable, call allowed (fail-open): %s", error_code(exc))
            return True, amount
        return True, _value(answer.get("Attributes"))

    def add(self, counter: str, amount: float, expires_at: float) -> None:
        """Blocking on purpose: the relay deducts after the response is complete, and on Lambda a
        write left to a background thread could be frozen with the instance and never land."""
        amount_d = _decimal(amount)
        if not amount_d:
            return
        try:
            self._client.update_item(
                TableName=self.table,
                Key=self._key(counter),
                UpdateExpression="ADD #n :amount SET #ttl = :ttl",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={":amount": _number(amount_d), ":ttl": {"N": str(int(expires_at))}},
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("rate-limit deduction dropped: %s", error_code(exc))
