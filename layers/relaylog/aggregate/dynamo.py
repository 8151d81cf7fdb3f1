"""Applying one S3 object's rollup deltas to DynamoDB exactly once.

The deltas go in (pk, sk) order, in chunks of up to 99 `Update`s plus one `Put` of a marker item
(the object with its version, and the chunk's number) conditioned on the marker not existing, all
in one TransactWriteItems: a chunk is applied together with its marker or not at all. A
redelivered object, or one whose processing crashed halfway, meets the markers of the chunks
already applied and skips exactly those. The same object always gives the same chunks, because
the deltas are a function of its bytes and their order is fixed. Chunks go several at once: no
item is in two of them, and each has its own marker.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from operator import itemgetter
from typing import Any

from botocore.exceptions import ClientError

from ..aws import layout
from .index import WRITERS
from .retry import MAX_ATTEMPTS, RETRY_ERRORS, backoff, error_code
from .rollup import Delta

log = logging.getLogger("relaylog.aggregate")

CHUNK_UPDATES = 99  # + 1 marker = DynamoDB's limit of 100 actions per transaction
MARKER_TTL_S = 14 * 24 * 3600  # SQS keeps a message at most 14 days: no redelivery comes later

# Why a transaction was cancelled (per action) that a later try can fix.
_RETRY_REASONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
_DESCRIPTIVE = (("#g", "grain"), ("#p", "period"), ("#d", "dim"), ("#v", "value"))
_key = itemgetter(0, 1)  # a Delta's (pk, sk)


@dataclass(frozen=True, slots=True)
class Applied:
    chunks: int  # applied by this call
    skipped: int  # found applied by an earlier delivery


def update_action(table: str, delta: Delta) -> dict[str, Any]:
    """The transaction's `Update` for one delta: ADD its numbers, SET what the item describes."""
    names = {placeholder: name for placeholder, name in _DESCRIPTIVE}
    values: dict[str, Any] = {
        ":g": {"S": delta.grain},
        ":p": {"S": delta.period},
        ":d": {"S": delta.dim},
        ":v": {"S": delta.value},
    }
    sets = [f"{placeholder} = if_not_exists({placeholder}, :{placeholder[1]})" for placeholder, _ in _DESCRIPTIVE]
    if delta.expires_at is not None:
        names["#x"] = layout.TTL_ATTRIBUTE
        values[":x"] = {"N": str(delta.expires_at)}
        sets.append("#x = :x")
    adds = []
    for i, (name, amount) in enumerate(delta.additions().items()):
        names[f"#a{i}"] = name
        # Fixed-point, never an exponent: 1E-12 is a valid Decimal but a doubtful DynamoDB number.
        values[f":a{i}"] = {"N": f"{amount:f}" if isinstance(amount, Decimal) else str(amount)}
        adds.append(f"#a{i} :a{i}")
    return {
        "Update": {
            "TableName": table,
            "Key": {"pk": {"S": delta.pk}, "sk": {"S": delta.sk}},
            "UpdateExpression": f"SET {', '.join(sets)} ADD {', '.join(adds)}",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
    }


def marker_action(table: str, marker: str, chunk: int, now: float) -> dict[str, Any]:
    return {
        "Put": {
            "TableName": table,
            "Item": {
                "pk": {"S": marker},
                "sk": {"S": f"chunk#{chunk}"},
                layout.TTL_ATTRIBUTE: {"N": str(int(now) + MARKER_TTL_S)},
            },
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }


def apply_once(
    client: Any,
    table: str,
    marker: str,
    deltas: Sequence[Delta],
    *,
    chunk_size: int = CHUNK_UPDATES,
    sleep: Callable[[float], None] = time.sleep,
    writers: int = WRITERS,
) -> Applied:
    """Apply `deltas` for the object whose marker key is `marker` (layout.object_pk), each chunk once,
    `writers` chunks at once: each carries its own marker and no item is in two chunks, so their
    order does not matter, and a crash leaves a set of applied chunks that a redelivery skips."""
    ordered = sorted(deltas, key=_key)

    def chunk(number: int) -> bool:
        start = number * chunk_size
        actions = [update_action(table, delta) for delta in ordered[start : start + chunk_size]]
        actions.append(marker_action(table, marker, number, time.time()))
        return _transact(client, actions, sleep)

    numbers = range(math.ceil(len(ordered) / chunk_size))
    if writers <= 1 or len(numbers) <= 1:
        outcomes = [chunk(number) for number in numbers]
    else:
        with ThreadPoolExecutor(max_workers=min(writers, len(numbers))) as pool:
            futures = [pool.submit(chunk, number) for number in numbers]
            try:
                outcomes = [future.result() for future in futures]  # the first failure is raised here
            finally:
                for future in futures:  # after a failure: no chunk that has not started
                    future.cancel()
    for number, done in enumerate(outcomes):
        if not done:
            log.info("chunk %d of %s was applied by an earlier delivery; skipped", number, marker)
    return Applied(sum(outcomes), len(outcomes) - sum(outcomes))


def _transact(client: Any, actions: list[dict[str, Any]], sleep: Callable[[float], None]) -> bool:
    """True when applied now, False when the marker (the last action) shows it was applied before."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            client.transact_write_items(TransactItems=actions)
            return True
        except ClientError as exc:
            code = error_code(exc)
            reasons = [reason.get("Code") or "None" for reason in exc.response.get("CancellationReasons", [])]
            if code == "TransactionCanceledException" and reasons and reasons[-1] == "ConditionalCheckFailed":
                return False
            retry = code in RETRY_ERRORS or (
                code == "TransactionCanceledException" and any(reason in _RETRY_REASONS for reason in reasons)
            )
            if not retry or attempt == MAX_ATTEMPTS:
                raise
            delay = backoff(attempt)
            log.info("DynamoDB transaction retried after %s (%s), in %.2f s", code, ",".join(reasons), delay)
            sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
