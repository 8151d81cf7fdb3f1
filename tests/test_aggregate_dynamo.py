"""Rollup deltas applied to DynamoDB (moto) exactly once per object: redelivery, crash halfway, retries."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError
from relaylog.aggregate.dynamo import MARKER_TTL_S, apply_once
from relaylog.aggregate.retry import MAX_ATTEMPTS
from relaylog.aggregate.rollup import rollup
from relaylog.aws import layout

from tests.support.aws import REGION, Stack
from tests.support.records import BASE, make_record

pytestmark = pytest.mark.aws

DAY = BASE.strftime("%Y-%m-%d")
HOUR = BASE.strftime("%Y-%m-%dT%H")
CHUNK = 5  # small chunks: many transactions from a few records (moto takes ~10 ms per update)


def _records() -> list[dict[str, Any]]:
    return [
        # A picodollar more on each: sent to DynamoDB in fixed point (0.000000000001), never as 1E-12.
        make_record(BASE + timedelta(seconds=i), user_id=f"user-{i}", input_tokens=i, cost_usd=0.001 * (i + 1) + 1e-12)
        for i in range(8)
    ]


def _marker(stack: Stack, version: str = "etag-1") -> str:
    return layout.object_pk(stack.bucket, "raw/dt=2026-11-25/hour=22/a b.gz", version)


def _table(stack: Stack, table: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    """Every rollup item of the stack's table (or `table`), keyed by (pk, sk), markers left out."""
    deserialise = TypeDeserializer().deserialize
    items = stack.client("dynamodb").scan(TableName=table or stack.table)["Items"]
    rows = [{name: deserialise(value) for name, value in item.items()} for item in items]
    return {(r["pk"], r["sk"]): r for r in rows if r["pk"].startswith(layout.ROLLUP_PK)}


class _CrashAfter:
    """A DynamoDB client whose process dies after `n` transactions (chunks go from several threads)."""

    def __init__(self, real: Any, n: int) -> None:
        self.real, self.left = real, n
        self.lock = threading.Lock()

    def transact_write_items(self, **kwargs: Any) -> Any:
        with self.lock:
            if self.left == 0:
                raise SystemExit("killed")
            self.left -= 1
        return self.real.transact_write_items(**kwargs)


class _FailingFirst:
    """A DynamoDB client whose first transactions fail with `error`, then pass through."""

    def __init__(self, real: Any, failures: int, error: ClientError) -> None:
        self.real, self.failures, self.error, self.calls = real, failures, error, 0

    def transact_write_items(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.real.transact_write_items(**kwargs)


def _cancelled(reason: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": f"cancelled [{reason}, None]"},
            "CancellationReasons": [{"Code": reason}, {"Code": "None"}],
        },
        "TransactWriteItems",
    )


def test_applied_items_hold_the_deltas_and_describe_themselves(aws_stack: Stack) -> None:
    deltas = rollup(_records())
    ddb = boto3.client("dynamodb", region_name=REGION)
    applied = apply_once(ddb, aws_stack.table, _marker(aws_stack), deltas, chunk_size=CHUNK)
    assert (applied.chunks, applied.skipped) == (-(-len(deltas) // CHUNK), 0)
    items = _table(aws_stack)
    assert set(items) == {(d.pk, d.sk) for d in deltas}
    for delta in deltas:
        item = items[(delta.pk, delta.sk)]
        for name, amount in delta.additions().items():
            assert item[name] == amount, (delta.sk, name)
        assert (item["grain"], item["period"], item["dim"], item["value"]) == (
            delta.grain,
            delta.period,
            delta.dim,
            delta.value,
        )
        assert item.get(layout.TTL_ATTRIBUTE) == delta.expires_at
    day = items[(layout.rollup_pk("d", DAY), "all#")]
    assert (
        day["requests"] == 8 and day["input_tokens"] == sum(range(8)) and day["cost_usd"] == Decimal("0.036000000008")
    )


def test_a_redelivered_object_changes_nothing_and_a_new_version_counts_again(aws_stack: Stack) -> None:
    deltas = rollup(_records())
    ddb = boto3.client("dynamodb", region_name=REGION)
    first = apply_once(ddb, aws_stack.table, _marker(aws_stack), deltas, chunk_size=CHUNK)
    before = _table(aws_stack)
    again = apply_once(ddb, aws_stack.table, _marker(aws_stack), deltas, chunk_size=CHUNK)
    assert (again.chunks, again.skipped) == (0, first.chunks)
    assert _table(aws_stack) == before
    # The same key written again is a new object (new ETag): its records count too.
    apply_once(ddb, aws_stack.table, _marker(aws_stack, "etag-2"), deltas, chunk_size=CHUNK)
    assert _table(aws_stack)[(layout.rollup_pk("h", HOUR), "all#")]["requests"] == 16


def test_a_crash_halfway_then_redelivery_applies_every_chunk_exactly_once(aws_stack: Stack) -> None:
    records = _records()
    deltas = rollup(records)
    chunks = -(-len(deltas) // CHUNK)
    assert chunks >= 4
    ddb = boto3.client("dynamodb", region_name=REGION)
    with pytest.raises(SystemExit):
        apply_once(_CrashAfter(ddb, 2), aws_stack.table, _marker(aws_stack), deltas, chunk_size=CHUNK)
    assert 0 < len(_table(aws_stack)) < len(deltas)  # some items written, not all
    again = apply_once(ddb, aws_stack.table, _marker(aws_stack), deltas, chunk_size=CHUNK)
    assert (again.chunks, again.skipped) == (chunks - 2, 2)
    # The same as one clean run into a table of its own.
    ddb.create_table(
        TableName="reference",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    apply_once(ddb, "reference", _marker(aws_stack), deltas, chunk_size=CHUNK)
    assert _table(aws_stack) == _table(aws_stack, "reference")
    assert _table(aws_stack)[(layout.rollup_pk("d", DAY), "user#user-7")]["input_tokens"] == 7


def test_markers_name_the_object_version_and_chunk_and_expire(aws_stack: Stack) -> None:
    ddb = boto3.client("dynamodb", region_name=REGION)
    marker = _marker(aws_stack)
    started = time.time()
    apply_once(ddb, aws_stack.table, marker, rollup(_records()[:1]), chunk_size=CHUNK)
    items = ddb.query(
        TableName=aws_stack.table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": marker}}
    )["Items"]
    assert marker == f"OBJECT#{aws_stack.bucket}/raw/dt=2026-11-25/hour=22/a b.gz#etag-1"
    assert sorted(i["sk"]["S"] for i in items) == ["chunk#0", "chunk#1"]
    for item in items:
        assert started + MARKER_TTL_S - 5 <= int(item[layout.TTL_ATTRIBUTE]["N"]) <= time.time() + MARKER_TTL_S


@pytest.mark.parametrize(
    "error",
    [
        _cancelled("TransactionConflict"),
        _cancelled("ThrottlingError"),
        ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "T"),
    ],
    ids=["conflict", "throttled-in-transaction", "throttled"],
)
def test_conflicts_and_throttling_are_retried_with_backoff(aws_stack: Stack, error: ClientError) -> None:
    ddb = boto3.client("dynamodb", region_name=REGION)
    client = _FailingFirst(ddb, 3, error)
    slept: list[float] = []
    applied = apply_once(client, aws_stack.table, _marker(aws_stack), rollup(_records()[:1]), sleep=slept.append)
    assert applied.chunks == 1 and client.calls == 4 and len(slept) == 3
    assert all(0 <= s <= 2.0 for s in slept)
    assert _table(aws_stack)[(layout.rollup_pk("h", HOUR), "all#")]["requests"] == 1


def test_retries_end_and_other_errors_are_not_retried(aws_stack: Stack) -> None:
    ddb = boto3.client("dynamodb", region_name=REGION)
    deltas = rollup(_records()[:1])
    endless = _FailingFirst(ddb, 10**6, _cancelled("TransactionConflict"))
    with pytest.raises(ClientError):
        apply_once(endless, aws_stack.table, _marker(aws_stack), deltas, sleep=lambda s: None)
    assert endless.calls == MAX_ATTEMPTS
    invalid = _FailingFirst(ddb, 1, _cancelled("ValidationError"))
    with pytest.raises(ClientError):
        apply_once(invalid, aws_stack.table, _marker(aws_stack), deltas, sleep=lambda s: None)
    assert invalid.calls == 1
    assert _table(aws_stack) == {}
