"""Each request counted and written once across S3 objects (moto, DuckDB): the same records in two
objects, delivered in either order, in one SQS batch or in two, with a crash at each step of one
object's processing; rollups checked against sums over the distinct records worked out here."""

from __future__ import annotations

import gzip
import json
import threading
from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, Literal

import boto3
import duckdb
import orjson
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError
from relaylog.aggregate import process
from relaylog.aggregate.claims import claim
from relaylog.aggregate.dynamo import apply_once
from relaylog.aggregate.index import Source, request_items
from relaylog.aggregate.parquet import curated_key
from relaylog.aggregate.retry import MAX_ATTEMPTS
from relaylog.aws import layout

from tests.support.aggregator import invoke, load_aggregator
from tests.support.aws import REGION, Stack
from tests.support.records import BASE, make_record

pytestmark = pytest.mark.aws

DAY = BASE.strftime("%Y-%m-%d")
KEY_A = f"raw/dt={DAY}/hour=23/relaylog-records-1-{DAY}-23-10-00-aaaa.gz"
KEY_B = f"raw/dt={DAY}/hour=23/relaylog-records-1-{DAY}-23-11-00-bbbb.gz"
PROMPT_BODY = json.dumps(
    {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": 'Say <helicone-prompt-input key="q">hi</helicone-prompt-input>'}],
    }
)
_deserialise = TypeDeserializer().deserialize


def _records() -> list[dict[str, Any]]:
    """Twelve calls every 8 minutes from 23:10, so over two hours and two days; costs with twelve
    decimals exactly (a picodollar apart), an error without usage, properties, a session, prompts."""
    records = []
    for i in range(12):
        overrides: dict[str, Any] = {
            "model": ("gpt-4o", "claude-sonnet-4")[i % 2],
            "provider": ("openai", "anthropic")[i % 2],
            "user_id": f"user-{i % 2}" if i % 5 else None,
            "session_id": "s1" if i % 3 == 0 else None,
            "key_id": ("key_a", "key_b")[i % 4 // 2],
            "properties": {"team": ("search", "ads")[i % 3 // 2]},
            "input_tokens": 100 + 17 * i,
            "output_tokens": 10 + i,
            "cache_read_tokens": 5 * i,
            "reasoning_tokens": i % 2,
            # Twelve decimals exactly, each repr reading back as itself: 0.000123000001 and so on.
            "cost_usd": float(f"0.000{123 + i}000{i + 1:03d}"),
            "latency_ms": 100.0 + 37 * i + 0.25,
            "ttft_ms": 20.0 + i if i % 4 else None,
        }
        if i == 6:
            overrides.update(status=503, error_type="upstream_error", input_tokens=None, output_tokens=None,
                             cache_read_tokens=None, reasoning_tokens=None, cost_usd=None)  # fmt: skip
        if i in (3, 9):
            overrides.update(prompt_id="greet", request_body=PROMPT_BODY)
        records.append(make_record(BASE + timedelta(minutes=60 + 8 * i), **overrides))
    return records


RECORDS = _records()
# A holds calls 0-7; B, Firehose's next object, holds 4-11 again (a retried PutRecordBatch) with
# call 9 twice in it (retried within one buffer).
OBJECT_A = RECORDS[:8]
OBJECT_B = [*RECORDS[4:10], RECORDS[9], *RECORDS[10:]]


# -- the oracle: sums over the distinct records, the slow, obvious way --------------------------------

_COUNTED = ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens")


def _expected(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(pk, sk) → the numbers every rollup item should hold, from each distinct record once."""
    distinct = {r["request_id"]: r for r in records}
    out: dict[tuple[str, str], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for r in distinct.values():
        dims = [("all", ""), ("model", r["model"]), ("provider", r["provider"]), ("key", r["key_id"])]
        dims += [("user", r["user_id"])] if r["user_id"] else []
        dims += [("session", r["session_id"])] if r["session_id"] else []
        dims += [("property", f"{name}={value}") for name, value in r["properties"].items()]
        for pk in (layout.rollup_pk("h", f"{r['dt']}T{r['hour']}"), layout.rollup_pk("d", r["dt"])):
            for dim, value in dims:
                item = out[(pk, layout.rollup_sk(dim, value))]
                item["requests"] += 1
                item["errors"] += 1 if r["status"] >= 400 or r["error_type"] else 0
                for name in _COUNTED:
                    item[name] += r[name] or 0
                item["usage_absent"] += 1 if r["input_tokens"] is None else 0
                item["cost_usd"] += Decimal(repr(r["cost_usd"])) if r["cost_usd"] is not None else 0
                item["latency_ms_sum"] += Decimal(repr(r["latency_ms"]))
                item["ttft_count"] += 1 if r["ttft_ms"] is not None else 0
    return out


def _rollups(stack: Stack) -> dict[tuple[str, str], dict[str, Any]]:
    pages = stack.client("dynamodb").get_paginator("scan").paginate(TableName=stack.table)
    items = [{k: _deserialise(v) for k, v in item.items()} for page in pages for item in page["Items"]]
    return {(i["pk"], i["sk"]): i for i in items if i["pk"].startswith(layout.ROLLUP_PK)}


def _check_rollups(stack: Stack) -> None:
    expected, found = _expected(RECORDS), _rollups(stack)
    assert set(found) == set(expected)
    for key, numbers in expected.items():
        for name, value in numbers.items():
            assert found[key].get(name, 0) == value, (key, name)  # Decimal: to the picodollar
    assert found[(layout.rollup_pk("d", DAY), "all#")]["requests"] == 7  # calls 0-6 are on the first day


def _check_parquet(stack: Stack, folder: Path) -> dict[str, set[str]]:
    """One row per request, and it is the record, across every curated file; returns each file's ids."""
    s3 = stack.client("s3")
    files: dict[str, set[str]] = {}
    rows = []
    for number, key in enumerate(stack.objects(layout.CURATED_PREFIX)):
        path = folder / f"{number}.parquet"
        path.write_bytes(s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read())
        with duckdb.connect() as db:
            cursor = db.execute("SELECT * FROM read_parquet(?)", [str(path)])
            columns = [column[0] for column in cursor.description]
            found = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
        files[key] = {row["request_id"] for row in found}
        rows += found
    assert sorted(row["request_id"] for row in rows) == sorted(r["request_id"] for r in RECORDS)
    by_id = {r["request_id"]: r for r in RECORDS}
    for row in rows:
        assert row == {k: v for k, v in by_id[row["request_id"]].items() if k != "dt"}
    return files


def _check_index(stack: Stack, files: dict[str, set[str]], owners: dict[str, str] | None) -> None:
    """Each request's index item points at its owner's line, which holds the record, and its row is
    in its owner's Parquet file; `owners`, when known, says which object that is."""
    ddb, s3 = stack.client("dynamodb"), stack.client("s3")
    for record in RECORDS:
        key = stack.index_key(record)
        item = {k: _deserialise(v) for k, v in ddb.get_item(TableName=stack.table, Key=key)["Item"].items()}
        if owners is not None:
            assert item["source"] == owners[record["request_id"]]
        body = s3.get_object(Bucket=stack.bucket, Key=item["source"])["Body"].read()
        assert orjson.loads(gzip.decompress(body).split(b"\n")[int(item["line"])]) == record
        parquet = curated_key(stack.bucket, item["source"], item["source_version"], record["dt"])
        assert record["request_id"] in files[parquet]


def _owners(first: str) -> dict[str, str]:
    """Each request's owner when `first` is processed (its claims made) first."""
    later = OBJECT_B if first == KEY_A else OBJECT_A
    owners = {r["request_id"]: (KEY_A if first == KEY_B else KEY_B) for r in later}
    owners.update({r["request_id"]: first for r in (OBJECT_A if first == KEY_A else OBJECT_B)})
    return owners


def _check(stack: Stack, folder: Path, first: str | None) -> None:
    _check_rollups(stack)
    files = _check_parquet(stack, folder)
    _check_index(stack, files, _owners(first) if first else None)


# -- delivering -----------------------------------------------------------------------------------


def _events(stack: Stack) -> dict[str, dict[str, Any]]:
    """Both objects put in S3, and each one's SQS message (the TestEvent left out), by object key."""
    stack.put_raw_object(KEY_A, OBJECT_A)
    stack.put_raw_object(KEY_B, OBJECT_B)
    messages = {}
    for message in stack.sqs_event()["Records"]:
        for key in (KEY_A, KEY_B):
            if key.rsplit("/", 1)[1] in message["body"]:
                messages[key] = message
    assert set(messages) == {KEY_A, KEY_B}
    return messages


def _batch(messages: dict[str, dict[str, Any]], *keys: str) -> dict[str, Any]:
    return {"Records": [messages[key] for key in keys]}


@pytest.mark.parametrize("first", [KEY_A, KEY_B], ids=["A-then-B", "B-then-A"])
@pytest.mark.parametrize("together", [True, False], ids=["one-batch", "two-batches"])
def test_the_same_records_in_two_objects_count_once(
    aws_stack: Stack, tmp_path: Path, first: str, together: bool
) -> None:
    messages = _events(aws_stack)
    second = KEY_B if first == KEY_A else KEY_A
    module = load_aggregator()
    if together:
        assert invoke(module, _batch(messages, first, second)) == {"batchItemFailures": []}
    else:
        assert invoke(module, _batch(messages, first)) == {"batchItemFailures": []}
        assert invoke(module, _batch(messages, second)) == {"batchItemFailures": []}
    _check(aws_stack, tmp_path, first)
    # SQS delivers both again: nothing changes.
    assert invoke(module, _batch(messages, second, first)) == {"batchItemFailures": []}
    _check(aws_stack, tmp_path, first)


def test_what_the_function_reports(
    aws_stack: Stack, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = _events(aws_stack)
    assert invoke(load_aggregator(), _batch(messages, KEY_A, KEY_B)) == {"batchItemFailures": []}
    logged = {r.key: r for r in caplog.records if r.getMessage() == "object processed"}  # type: ignore[attr-defined]
    assert [(r.records, r.counted, r.duplicates) for r in (logged[KEY_A], logged[KEY_B])] == [  # type: ignore[attr-defined]
        (8, 8, 0),
        (9, 4, 5),  # B: 9 lines, 4 of them calls A counted, one a repeat of its own line
    ]
    (emf,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert emf["RecordsAggregated"] == [8.0, 4.0] and emf["RecordsSkippedDuplicate"] == [5.0]


# -- a crash at each step -----------------------------------------------------------------------------


class _Crash:
    """A client whose Lambda dies at the `n`-th call (0-based) of `operation`; every other call goes
    through. PutItem calls are told apart by the item: "put_item" counts the claims, "put_item/shards"
    the puts of a day's shard count."""

    def __init__(self, real: Any, operation: str, n: int) -> None:
        self.real, self.n = real, n
        self.operation, _, self.kind = operation.partition("/")
        self.calls = 0
        self.fired = False
        self.lock = threading.Lock()  # claims are put from several threads

    def _counts(self, kwargs: dict[str, Any]) -> bool:
        if self.operation != "put_item":
            return True
        pk = kwargs["Item"]["pk"]["S"]
        return pk == layout.SHARDS_PK if self.kind == "shards" else pk.startswith(f"{layout.REQUESTS_PK}#")

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.real, name)
        if name != self.operation:
            return method

        def call(**kwargs: Any) -> Any:
            if not self._counts(kwargs):
                return method(**kwargs)
            with self.lock:
                number, self.calls = self.calls, self.calls + 1
            if number >= self.n:
                self.fired = True
                raise RuntimeError("Lambda timed out")
            return method(**kwargs)

        return call


Then = Literal["again-then-copy", "copy-then-again", "copy-alone-then-again"]
THEN: tuple[Then, ...] = ("again-then-copy", "copy-then-again", "copy-alone-then-again")
# Every step of an object's processing, by the call that makes it, and what comes after the crash.
# Before any claim (reading the object, the prompt texts, the first day's shard count, the first
# claim) A has done nothing that counts: B first is the case to see. Part of the claims made: every order. All claims made (the
# rollup chunks: none, two of them; the Parquet files: none, the first day's only): B between the
# crash and A's return, or after it.
CASES: list[tuple[tuple[str, str, int], Then]] = [
    (("s3", "get_object", 0), "copy-then-again"),
    (("dynamodb", "batch_write_item", 0), "copy-then-again"),
    (("dynamodb", "put_item/shards", 0), "copy-then-again"),
    (("dynamodb", "put_item/shards", 1), "copy-then-again"),
    (("dynamodb", "put_item", 0), "copy-alone-then-again"),
    *((("dynamodb", "put_item", n), then) for n in (3, 7) for then in THEN),
    *(
        (step, then)
        for step in (
            ("dynamodb", "transact_write_items", 0),
            ("dynamodb", "transact_write_items", 2),
            ("s3", "put_object", 0),
            ("s3", "put_object", 1),
        )
        for then in ("again-then-copy", "copy-alone-then-again")
    ),
]


@pytest.mark.parametrize(("step", "then"), CASES, ids=[f"{op}-{n}-{then}" for (_, op, n), then in CASES])
def test_a_crash_at_any_step_then_redelivery_counts_and_writes_each_request_once(
    aws_stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: tuple[str, str, int], then: Then
) -> None:
    # Chunks of 15 updates: A's rollups take several transactions, so a crash can fall between two.
    monkeypatch.setattr(process, "apply_once", partial(apply_once, chunk_size=15))
    messages = _events(aws_stack)
    module = load_aggregator()
    client, operation, n = step
    real = getattr(module, client)
    crashing = _Crash(real, operation, n)
    setattr(module, client, crashing)
    # A batch whose every message failed fails the invocation: SQS delivers all of it again.
    with pytest.raises(BatchProcessingError, match="Lambda timed out"):
        invoke(module, _batch(messages, KEY_A))
    assert crashing.fired  # the step was reached: A has three rollup chunks and two days of Parquet
    setattr(module, client, real)
    # A comes back after its visibility timeout; B, holding copies of half of its calls, comes
    # before it, after it in the same batch, or alone before it.
    batches: dict[Then, list[tuple[str, ...]]] = {
        "again-then-copy": [(KEY_A, KEY_B)],
        "copy-then-again": [(KEY_B, KEY_A)],
        "copy-alone-then-again": [(KEY_B,), (KEY_A,)],
    }
    for keys in batches[then]:
        assert invoke(module, _batch(messages, *keys)) == {"batchItemFailures": []}
    # A owns what it claimed before the crash, and B the copies it claimed before A came back.
    # The second day's shard count is put once the first day's claims are under way: some, unknown.
    made = {"get_object": 0, "batch_write_item": 0, "put_item/shards": -n, "put_item": n}.get(operation, len(OBJECT_A))
    if then == "again-then-copy" or made == len(OBJECT_A):
        first: str | None = KEY_A
    elif made == 0:
        first = KEY_B
    else:
        first = None  # which of A's claims went in before the crash depends on the threads
    _check(aws_stack, tmp_path, first)


# -- claim() itself -----------------------------------------------------------------------------------


def _claim(
    client: Any, stack: Stack, records: list[dict[str, Any]], key: str = KEY_A, version: str = "v1", **kw: Any
) -> Any:
    source = Source(key, version, 30)
    lines = list(range(len(records)))
    return claim(
        client, stack.table, source, len(records), request_items(records, lines, source, [None] * len(records)), **kw
    )


def test_verdicts_per_record(aws_stack: Stack) -> None:
    ddb = boto3.client("dynamodb", region_name=REGION)
    first = _claim(ddb, aws_stack, RECORDS[:3])
    assert (first.counted, first.claimed, first.taken, first.repeated, first.unkeyed) == ([True] * 3, 3, 0, 0, 0)
    unkeyed = make_record(BASE, request_id=None)
    mixed = [RECORDS[2], RECORDS[3], RECORDS[3], unkeyed, RECORDS[0]]
    second = _claim(ddb, aws_stack, mixed, key=KEY_B)
    # Another object's, new, a repeat of the line before, not deduplicable (counted), another object's.
    assert second.counted == [False, True, False, True, False]
    assert (second.claimed, second.taken, second.repeated, second.unkeyed, second.duplicates) == (1, 2, 1, 1, 3)
    # The same object again (a redelivery) keeps what it owns, and only that.
    again = _claim(ddb, aws_stack, mixed, key=KEY_B)
    assert again.counted == second.counted


def test_a_new_object_under_the_same_key_does_not_count_its_copies_again(aws_stack: Stack) -> None:
    ddb = boto3.client("dynamodb", region_name=REGION)
    _claim(ddb, aws_stack, RECORDS[:2], version="etag-1")
    rewritten = _claim(ddb, aws_stack, RECORDS[:3], version="etag-2")
    assert rewritten.counted == [False, False, True]


class _Failing:
    """A DynamoDB client whose first `failures` puts fail with `error`, then go through."""

    def __init__(self, real: Any, failures: int, error: ClientError) -> None:
        self.real, self.failures, self.error, self.calls = real, failures, error, 0
        self.lock = threading.Lock()

    def put_item(self, **kwargs: Any) -> Any:
        with self.lock:
            self.calls += 1
            failing = self.calls <= self.failures
        if failing:
            raise self.error
        return self.real.put_item(**kwargs)


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "PutItem")


@pytest.mark.parametrize(
    "code", ["ProvisionedThroughputExceededException", "ThrottlingException", "TransactionConflictException"]
)
def test_throttled_and_conflicting_puts_are_retried_with_backoff(aws_stack: Stack, code: str) -> None:
    client = _Failing(boto3.client("dynamodb", region_name=REGION), 3, _error(code))
    slept: list[float] = []
    claims = _claim(client, aws_stack, RECORDS[:1], sleep=slept.append)
    assert claims.counted == [True] and client.calls == 4 and len(slept) == 3 and all(0 <= s <= 2.0 for s in slept)


def test_retries_end_and_other_errors_fail_the_object(aws_stack: Stack) -> None:
    endless = _Failing(boto3.client("dynamodb", region_name=REGION), 10**6, _error("ThrottlingException"))
    with pytest.raises(ClientError):
        _claim(endless, aws_stack, RECORDS[:1], sleep=lambda s: None)
    assert endless.calls == MAX_ATTEMPTS
    invalid = _Failing(boto3.client("dynamodb", region_name=REGION), 1, _error("ValidationException"))
    with pytest.raises(ClientError):
        _claim(invalid, aws_stack, RECORDS[:1], sleep=lambda s: None)
    assert invalid.calls == 1
