"""Applying rollup items to DynamoDB exactly once per S3 object.

Items go in a fixed order, in chunks of 99 `Update`s plus one `Put` of a marker item (the object
and chunk number) conditioned on the marker not existing, in one TransactWriteItems: a chunk is
applied with its marker or not at all. A redelivered object, or one whose processing crashed
halfway, finds the markers of the chunks already applied and skips exactly those.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from ..aws import layout
from .rollup import Item

log = logging.getLogger("relaylog.aggregate")

CHUNK_ITEMS = 99  # + 1 marker = DynamoDB's 100 actions per transaction
MARKER_TTL_S = 14 * 24 * 3600  # longer than SQS keeps a message (at most 14 days)
MAX_ATTEMPTS = 8
_RETRYABLE = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"}
)


@dataclass(frozen=True, slots=True)
class Applied:
    chunks: int
    skipped: int  # already applied by an earlier delivery


def _number(value: Any) -> dict[str, str]:
    return {"N": str(value)}


def _update(table: str, item: Item) -> dict[str, Any]:
    names = {"#g": "grain", "#p": "period", "#d": "dim", "#v": "value"}
    values: dict[str, Any] = {
        ":g": {"S": item.grain},
        ":p": {"S": item.period},
        ":d": {"S": item.dimension},
        ":v": {"S": item.value},
    }
    sets = ["#g = :g", "#p = :p", "#d = :d", "#v = :v"]
    if item.expires_at is not None:
        names["#x"] = layout.TTL_ATTRIBUTE
        values[":x"] = _number(item.expires_at)
        sets.append("#x = :x")
    adds = []
    for i, (name, amount) in enumerate(sorted(item.add.items())):
        names[f"#a{i}"] = name
        values[f":a{i}"] = _number(amount)
        adds.append(f"#a{i} :a{i}")
    return {
        "Update": {
            "TableName": table,
            "Key": {"pk": {"S": item.pk}, "sk": {"S": item.sk}},
            "UpdateExpression": f"SET {', '.join(sets)} ADD {', '.join(adds)}",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }


def _marker(table: str, source: str, chunk: int, now: float) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": table,
            "Item": {
                "pk": {"S": source},
                "sk": {"S": f"chunk#{chunk}"},
                layout.TTL_ATTRIBUTE: _number(int(now) + MARKER_TTL_S),
            },
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


def apply_once(
    client: Any,
    table: str,
    source: str,
    items: Sequence[Item],
    sleep: Callable[[float], None] = time.sleep,
) -> Applied:
    """Apply `items` for the object `source` (layout.object_pk with its ETag) exactly once."""
    applied = skipped = 0
    for number, start in enumerate(range(0, len(items), CHUNK_ITEMS)):
        actions = [_update(table, item) for item in items[start : start + CHUNK_ITEMS]]
        actions.append(_marker(table, source, number, time.time()))
        if _transact(client, actions, sleep):
            applied += 1
        else:
            skipped += 1
    return Applied(applied, skipped)


def _transact(client: Any, actions: list[dict[str, Any]], sleep: Callable[[float], None]) -> bool:
    """True when applied now, False when the marker shows an earlier delivery applied it."""
    for attempt in range(MAX_ATTEMPTS):
        try:
            client.transact_write_items(TransactItems=actions)
            return True
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
            if code == "TransactionCanceledException":
                if reasons and reasons[-1] == "ConditionalCheckFailed":
                    return False
                if not reasons and "ConditionalCheckFailed" in error.get("Message", ""):
                    return False
                if not any(r in _RETRYABLE for r in reasons):
                    raise
            elif code not in _RETRYABLE and code != "ProvisionedThroughputExceededException":
                raise
            delay = min(2.0, 0.05 * 2**attempt) * random.random()
            log.info("DynamoDB transaction retried (%s) after %.2f s", code, delay)
            sleep(delay)
    raise RuntimeError(f"DynamoDB transaction still failing after {MAX_ATTEMPTS} attempts")
