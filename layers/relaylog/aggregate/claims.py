"""Which of an object's records it counts: each request is given to exactly one object by its index
item, put on condition, so that a record found in several objects is counted and written once.

A record can reach S3 twice: the proxy's sink sends a PutRecordBatch again after a timeout that
Firehose had in fact accepted, botocore retries on its own, Firehose itself delivers at least
once, and a record spooled to S3 may have reached Firehose too. Its copies are the same bytes, so
they give the same index item key (REQS#<dt>#<shard>, <created_at>#<request_id>, the shard from the
request_id and the day's shard count, fixed once for the day: shards.py): that item is the marker.
Its condition, `attribute_not_exists(pk) OR (source = this key AND source_version = this
version)`, lets the first object to put it own the request for good, and lets that same object
put it again (a redelivery, a retry of a put whose answer was lost) without losing it. A put
refused by the condition means another object owns the request: this one does not count it.

The order in which process.py does things, and why a crash at any point loses and doubles nothing:

1. Claims, for every record of the object. The verdicts depend only on the claims, which never
   change owner once made, so from the moment the last claim is in, every delivery of this object
   finds the same verdicts. A crash halfway leaves some requests claimed (still this object's when
   it comes back) and others unclaimed (another object holding the same record may take them in
   between: then that object counts them, and this one, not having counted anything yet, does not).
2. The rollups of the requests it owns, in chunks with a marker per chunk (dynamo.py). Their
   deltas are a function of the verdicts, fixed since step 1, so a redelivery rebuilds the same
   chunks and skips exactly those applied. Claiming after the rollups would not do: an object that
   crashed between a chunk and its claims could lose a request it had counted to another object,
   which would count it again.
3. The Parquet of the requests it owns, one file per object and day, named from the object. A crash
   before it cannot lose a row: the marker names its owner, so the redelivery finds its own claims,
   counts the same requests (their chunks are skipped) and writes the files. A marker that only
   said "seen" would make the redelivery skip the very rows it never wrote. A duplicate record is
   in no other object's file, because no other object owns it.

Limits. A claim lives at least MARKER_TTL_S after it was last put (index.Source.kept_until), as
long as SQS keeps a message: a copy processed later than that counts again. A request whose owner
never comes back (its message in the dead-letter queue) is missing until the message is redriven,
even if another object held a copy. A record without a request_id or created_at has no item to
claim: it is counted by every object that holds it. A request found twice in one object counts
once (index.request_items). The item key is a function of the record alone, the day's shard count
being fixed once decided (a shard from a hash of the request_id, never from the object or the clock).

Cost: one PutItem per request instead of one BatchWriteItem per 25 (DynamoDB has no batch of
conditional writes outside a transaction, and a transaction costs two write units an item);
the write units are those of the unconditional put, plus, for a copy found in a second object,
the refused put (bench/writes.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from .index import WRITERS, Source
from .retry import MAX_ATTEMPTS, RETRY_ERRORS, backoff, error_code

log = logging.getLogger("relaylog.aggregate")

_REFUSED = "ConditionalCheckFailedException"


@dataclass(frozen=True, slots=True)
class Claims:
    counted: list[bool]  # per record: counted by this object
    claimed: int  # index items put: requests this object owns (new, or its own from before)
    taken: int  # records whose request another object owns
    repeated: int  # records whose request is on an earlier line of this object
    unkeyed: int  # records without a request_id/created_at: counted, never deduplicated

    @property
    def duplicates(self) -> int:
        return self.taken + self.repeated


def condition(source: Source) -> dict[str, Any]:
    """The PutItem arguments that make an index item the marker of `source`'s claim."""
    return {
        "ConditionExpression": "attribute_not_exists(pk) OR (#source = :source AND #version = :version)",
        "ExpressionAttributeNames": {"#source": "source", "#version": "source_version"},
        "ExpressionAttributeValues": {":source": {"S": source.key}, ":version": {"S": source.version}},
    }


def claim(
    client: Any,
    table: str,
    source: Source,
    records: int,
    items: Iterable[tuple[int, dict[str, Any] | None]],
    *,
    sleep: Callable[[float], None] = time.sleep,
    writers: int = WRITERS,
) -> Claims:
    """Put the index item of each (position, item) of `items` (index.request_items over `records`
    records) on condition, `writers` at once; the verdicts say which records `source` counts.

    Raises what a put raised after its retries: the message must come back and claim again.
    """
    counted = [False] * records  # repeats, absent from `items`, stay uncounted
    expression = condition(source)
    claimed = taken = unkeyed = 0

    def settle(done: Iterable[Future[tuple[int, bool]]]) -> None:
        nonlocal claimed, taken
        for future in done:
            position, owned = future.result()  # the first failure is raised here
            counted[position] = owned
            if owned:
                claimed += 1
            else:
                taken += 1

    with ThreadPoolExecutor(max_workers=writers) as pool:
        running: set[Future[tuple[int, bool]]] = set()
        try:
            for position, item in items:
                if item is None:
                    counted[position] = True
                    unkeyed += 1
                    continue
                if len(running) >= 4 * writers:  # a few puts ahead, not the whole object
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    settle(done)
                running.add(pool.submit(_put, client, table, position, item, expression, sleep))
            done, running = wait(running)
            settle(done)
        finally:
            for future in running:  # after a failure: no put that has not started
                future.cancel()
    if taken:
        log.info("%d records of %s were counted from another object; skipped", taken, source.key)
    return Claims(counted, claimed, taken, records - claimed - taken - unkeyed, unkeyed)


def _put(
    client: Any,
    table: str,
    position: int,
    item: dict[str, Any],
    expression: dict[str, Any],
    sleep: Callable[[float], None],
) -> tuple[int, bool]:
    """(position, True) when the item is put (the request is this object's), (position, False) when
    the condition refused it (another object's)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            client.put_item(TableName=table, Item=item, **expression)
            return position, True
        except ClientError as exc:
            code = error_code(exc)
            if code == _REFUSED:
                return position, False
            if code not in RETRY_ERRORS or attempt == MAX_ATTEMPTS:
                raise
        delay = backoff(attempt)
        log.info("DynamoDB claim retried after %s, in %.2f s", code, delay)
        sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
