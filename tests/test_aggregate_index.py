"""The request index the aggregator writes into DynamoDB (moto): keys, attributes, TTL, GSIs, prompt
texts, `source`/`source_version`/`line` pointing at the full record, redelivery, and BatchWriteItem
retries (prompt texts; request items are put on condition, tests/test_aggregate_claims.py)."""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import orjson
import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError
from relaylog.aggregate import index, retry
from relaylog.aggregate.dynamo import MARKER_TTL_S
from relaylog.aggregate.index import IndexWriteError, Source, index_item, write_index
from relaylog.aggregate.objects import decode
from relaylog.aggregate.process import Processed, process_object
from relaylog.aggregate.retry import MAX_ATTEMPTS
from relaylog.aggregate.rollup import REQUIRED
from relaylog.aws import layout
from relaylog.prompts import template_hash, template_of
from relaylog.record import SUMMARY_FIELDS

from tests.support.aggregator import invoke, load_aggregator
from tests.support.aws import REGION, Stack
from tests.support.records import BASE, make_record
from tests.support.sam import load_template

pytestmark = pytest.mark.aws

DAY = BASE.strftime("%Y-%m-%d")
RAW_KEY = f"raw/dt={DAY}/hour={BASE:%H}/relaylog-records-1-{DAY}-22-10-00-0f1e2d3c.gz"
SECRET_IN = "the user's secret question"
SECRET_OUT = "the model's secret answer"
PROMPT_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": f'Say <helicone-prompt-input key="q">{SECRET_IN}</helicone-prompt-input>'},
        ],
    }
)
_deserialise = TypeDeserializer().deserialize


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _deserialise(value) for name, value in item.items()}


def _process(stack: Stack, key: str = RAW_KEY) -> Processed:
    return process_object(stack.client("s3"), stack.client("dynamodb"), stack.table, stack.bucket, key)


def _scan(stack: Stack, prefix: str) -> list[dict[str, Any]]:
    pages = stack.client("dynamodb").get_paginator("scan").paginate(TableName=stack.table)
    items = [_plain(item) for page in pages for item in page["Items"]]
    return sorted((i for i in items if i["pk"].startswith(prefix)), key=lambda i: (i["pk"], i["sk"]))


def _get(stack: Stack, record: dict[str, Any]) -> dict[str, Any] | None:
    item = stack.client("dynamodb").get_item(TableName=stack.table, Key=stack.index_key(record)).get("Item")
    return item


def _query(stack: Stack, name: str, attribute: str, value: str) -> list[dict[str, Any]]:
    answer = stack.client("dynamodb").query(
        TableName=stack.table,
        IndexName=name,
        KeyConditionExpression="#a = :v",
        ExpressionAttributeNames={"#a": attribute},
        ExpressionAttributeValues={":v": {"S": value}},
    )
    return [_plain(item) for item in answer["Items"]]


def _records() -> list[dict[str, Any]]:
    return [
        make_record(  # everything attributed
            BASE,
            user_id="alice",
            session_id="s1",
            session_path="/plan",
            session_name="trip",
            prompt_id="greet",
            properties={"Team": "search", "env": "prod"},
            request_body=PROMPT_BODY,
            response_body=SECRET_OUT,
            cost_usd=0.000042,
        ),
        make_record(  # nothing attributed, no usage
            BASE + timedelta(seconds=5),
            user_id=None,
            key_id=None,
            properties={},
            input_tokens=None,
            output_tokens=None,
            cache_read_tokens=None,
            reasoning_tokens=None,
            cost_usd=None,
            ttft_ms=None,
            stream=True,
            request_body=json.dumps({"messages": [{"role": "user", "content": SECRET_IN}]}),
            response_body=SECRET_OUT,
        ),
        make_record(  # the same prompt version again, in the same session; a picodollar cost
            BASE + timedelta(seconds=9),
            user_id="bob",
            session_id="s1",
            prompt_id="greet",
            request_body=PROMPT_BODY.replace(SECRET_IN, "another question"),
            response_body=SECRET_OUT,
            cost_usd=1e-12,
        ),
    ]


# -- the template agrees with the code ---------------------------------------------------------


def test_the_templates_indexes_are_layouts() -> None:
    template = load_template()
    table = template["Resources"]["Table"]["Properties"]
    declared = {}
    for gsi in table["GlobalSecondaryIndexes"]:
        keys = {k["KeyType"]: k["AttributeName"] for k in gsi["KeySchema"]}
        declared[gsi["IndexName"]] = (keys["HASH"], keys.get("RANGE"))
        assert "ProvisionedThroughput" not in gsi  # the table is PAY_PER_REQUEST
    assert declared == layout.INDEXES
    projections = {gsi["IndexName"]: gsi["Projection"]["ProjectionType"] for gsi in table["GlobalSecondaryIndexes"]}
    assert projections == {"by_id": "KEYS_ONLY", "by_session": "ALL", "by_prompt": "ALL", "by_user": "KEYS_ONLY"}
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert types == {name: "S" for name in ("pk", "sk", *(p for p, _ in layout.INDEXES.values()))}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    aggregator = template["Resources"]["AggregatorFunction"]["Properties"]["Environment"]["Variables"]
    assert aggregator[layout.ENV_INDEX_DAYS] == {"Ref": "IndexRetentionDays"}
    assert template["Parameters"]["IndexRetentionDays"]["Default"] == layout.DEFAULT_INDEX_DAYS


def test_the_test_stack_has_the_same_indexes(aws_stack: Stack) -> None:
    described = aws_stack.client("dynamodb").describe_table(TableName=aws_stack.table)["Table"]
    found = {}
    for gsi in described["GlobalSecondaryIndexes"]:
        keys = {k["KeyType"]: k["AttributeName"] for k in gsi["KeySchema"]}
        found[gsi["IndexName"]] = (keys["HASH"], keys.get("RANGE"))
    assert found == layout.INDEXES


# -- items ---------------------------------------------------------------------------------------


def _version(stack: Stack, key: str = RAW_KEY) -> str:
    """What S3 answers for the object's version: moto's bucket keeps none, so its ETag."""
    return str(stack.client("s3").head_object(Bucket=stack.bucket, Key=key)["ETag"].strip('"'))


def test_one_item_per_record_with_its_summary_ttl_source_and_line(aws_stack: Stack) -> None:
    records = _records()
    aws_stack.put_raw_object(RAW_KEY, records)
    started = int(time.time())
    done = _process(aws_stack)
    finished = int(time.time())
    assert done.indexed == 3 and done.records == 3
    for line, record in enumerate(records):
        raw = _get(aws_stack, record)
        assert raw is not None
        item = _plain(raw)
        shard = zlib.crc32(record["request_id"].encode()) % layout.DEFAULT_INDEX_SHARDS
        assert item["pk"] == f"REQS#{DAY}#{shard}" and item["sk"] == f"{record['created_at']}#{record['request_id']}"
        for name in SUMMARY_FIELDS:
            value = record[name]
            if value is None or value == {}:
                assert name not in item, name  # absent, not NULL: sparse GSIs leave the item out
            elif isinstance(value, float):
                assert item[name] == Decimal(repr(value)), name
            else:
                assert item[name] == value, name
        assert "request_body" not in item and "response_body" not in item
        assert (item["source"], item["source_version"], item["line"]) == (RAW_KEY, _version(aws_stack), line)
        created = datetime.fromisoformat(record["created_at"])
        # The index's retention, or the marker's life if that is longer (these records are a few days old).
        retained = int((created + timedelta(days=layout.DEFAULT_INDEX_DAYS)).timestamp())
        assert (
            max(retained, started + MARKER_TTL_S)
            <= item[layout.TTL_ATTRIBUTE]
            <= max(retained, finished + MARKER_TTL_S)
        )
        # Low-level types: numbers in fixed point, bools as BOOL, properties as a map of strings.
        assert all("E" not in v["N"] and "e" not in v["N"] for v in raw.values() if "N" in v)
        assert raw["stream"] == {"BOOL": record["stream"]}
    first, bare, third = (_plain(_get(aws_stack, r) or {}) for r in records)
    assert first["properties"] == {"Team": "search", "env": "prod"}
    assert _get(aws_stack, records[0])["properties"] == {"M": {"Team": {"S": "search"}, "env": {"S": "prod"}}}  # type: ignore[index]
    assert _get(aws_stack, records[2])["cost_usd"] == {"N": "0.000000000001"}  # type: ignore[index]
    assert not {"user_id", "session_id", "prompt_id", "properties", "template", "cost_usd"} & set(bare)
    assert first["template"] == third["template"] == template_hash(template_of(PROMPT_BODY) or "")


@pytest.mark.parametrize("days", [20, 3])
def test_retention_comes_from_the_environment_and_lasts_as_long_as_a_redelivery_can_come(
    aws_stack: Stack, monkeypatch: pytest.MonkeyPatch, days: int
) -> None:
    monkeypatch.setenv(layout.ENV_INDEX_DAYS, str(days))
    now = datetime.now(UTC)
    fresh, old = make_record(now), make_record(now - timedelta(days=40))  # the old one spooled, delivered late
    aws_stack.put_raw_object(RAW_KEY, [fresh, old])
    started = int(time.time())
    _process(aws_stack)
    floor = (started, int(time.time()))
    expires = {r["request_id"]: _plain(_get(aws_stack, r) or {})[layout.TTL_ATTRIBUTE] for r in (fresh, old)}
    if days * 86_400 > MARKER_TTL_S:
        assert expires[fresh["request_id"]] == int((now + timedelta(days=days)).timestamp())
    else:  # an item is the request's marker too (claims.py): it lives as long as its object's redeliveries can come
        assert floor[0] + MARKER_TTL_S <= expires[fresh["request_id"]] <= floor[1] + MARKER_TTL_S
    assert floor[0] + MARKER_TTL_S <= expires[old["request_id"]] <= floor[1] + MARKER_TTL_S


def test_each_prompt_version_text_is_written_once(aws_stack: Stack) -> None:
    aws_stack.put_raw_object(RAW_KEY, _records())
    _process(aws_stack)
    texts = _scan(aws_stack, layout.PROMPT_PK)
    template = template_of(PROMPT_BODY)
    assert template is not None and "{{q}}" in template and SECRET_IN not in template
    assert texts == [{"pk": "PROMPT#greet", "sk": f"T#{template_hash(template)}", "template": template}]


def test_no_body_text_in_any_index_item(aws_stack: Stack) -> None:
    aws_stack.put_raw_object(RAW_KEY, _records())
    _process(aws_stack)
    items = _scan(aws_stack, layout.REQUESTS_PK)
    assert len(items) == 3
    assert SECRET_IN not in repr(items) and SECRET_OUT not in repr(items) and "helicone-prompt-input" not in repr(items)


# -- GSIs ----------------------------------------------------------------------------------------


def test_each_index_finds_its_items(aws_stack: Stack) -> None:
    sessions = [
        make_record(BASE + timedelta(minutes=m), session_id=s, user_id=u, prompt_id=p)
        for m, s, u, p in [(7, "s1", "alice", "p1"), (1, "s1", "bob", None), (4, "s2", "alice", "p1"),
                           (3, "s1", None, "p2"), (9, None, "alice", None)]
    ]  # fmt: skip
    aws_stack.put_raw_object(RAW_KEY, sessions)  # out of time order in the object
    _process(aws_stack)
    in_s1 = _query(aws_stack, "by_session", "session_id", "s1")
    assert [i["request_id"] for i in in_s1] == [sessions[i]["request_id"] for i in (1, 3, 0)]  # time order
    assert in_s1[0]["model"] == "gpt-4o-mini"  # projection ALL: the whole summary
    by_id = _query(aws_stack, "by_id", "request_id", sessions[2]["request_id"])
    assert by_id == [{"pk": aws_stack.index_key(sessions[2])["pk"]["S"], "sk": layout.requests_sk(sessions[2]["created_at"], sessions[2]["request_id"]),
                      "request_id": sessions[2]["request_id"]}]  # fmt: skip
    alice = _query(aws_stack, "by_user", "user_id", "alice")
    assert [i["sk"].split("#")[1] for i in alice] == [sessions[i]["request_id"] for i in (2, 0, 4)]
    assert set(alice[0]) == {"pk", "sk", "user_id"}  # keys only: the sk names the request
    p1 = _query(aws_stack, "by_prompt", "prompt_id", "p1")
    assert [i["request_id"] for i in p1] == [sessions[i]["request_id"] for i in (2, 0)]
    assert _query(aws_stack, "by_session", "session_id", "nope") == []
    # Sparse: the record without a session is in no session's index.
    scanned = aws_stack.client("dynamodb").scan(TableName=aws_stack.table, IndexName="by_session")["Items"]
    assert len(scanned) == 4


def test_values_an_index_cannot_hold_are_left_out_not_failing(aws_stack: Stack) -> None:
    records = [
        make_record(BASE, session_id="", user_id="u" * 3000, prompt_id=""),  # empty, and over 2,048 bytes
        make_record(BASE + timedelta(seconds=1), request_id=None),  # nothing to key it by
    ]
    aws_stack.put_raw_object(RAW_KEY, records)
    done = _process(aws_stack)
    assert done.indexed == 1 and done.records == 2
    item = _plain(_get(aws_stack, records[0]) or {})
    assert not {"session_id", "user_id", "prompt_id"} & set(item) and item["model"] == "gpt-4o-mini"


# -- bodies offloaded to S3 ----------------------------------------------------------------------


def test_an_offloaded_body_is_read_from_s3_for_its_template(aws_stack: Stack) -> None:
    offloaded = make_record(BASE, prompt_id="greet", request_body=None, request_bytes=len(PROMPT_BODY))
    ref = f"{layout.partition_path(layout.BODIES_PREFIX, DAY)}{offloaded['request_id']}.request"
    offloaded["request_body_ref"] = ref
    aws_stack.client("s3").put_object(Bucket=aws_stack.bucket, Key=ref, Body=PROMPT_BODY.encode())
    missing = make_record(BASE + timedelta(seconds=1), prompt_id="greet", request_body=None,
                          request_body_ref=f"{layout.BODIES_PREFIX}dt={DAY}/gone.request")  # fmt: skip
    elsewhere = make_record(BASE + timedelta(seconds=2), prompt_id="greet", request_body=None,
                            request_body_ref=RAW_KEY)  # not a body: never read  # fmt: skip
    inline = make_record(BASE + timedelta(seconds=3), prompt_id="greet", request_body=PROMPT_BODY)
    aws_stack.put_raw_object(RAW_KEY, [offloaded, missing, elsewhere, inline])
    assert _process(aws_stack).indexed == 4
    expected = template_hash(template_of(PROMPT_BODY) or "")
    item = _plain(_get(aws_stack, offloaded) or {})
    assert item["template"] == expected and item["request_body_ref"] == ref and "request_body" not in item
    assert "template" not in _plain(_get(aws_stack, missing) or {})
    assert "template" not in _plain(_get(aws_stack, elsewhere) or {})
    assert _plain(_get(aws_stack, inline) or {})["template"] == expected
    assert [i["sk"] for i in _scan(aws_stack, layout.PROMPT_PK)] == [f"T#{expected}"]


# -- source and line -----------------------------------------------------------------------------


def test_line_points_at_the_record_in_the_decompressed_object(aws_stack: Stack) -> None:
    records = [make_record(BASE + timedelta(seconds=i)) for i in range(4)]
    data = b"".join(
        [
            orjson.dumps(records[0]) + b"\n",  # 0
            b"not a record\n",  # 1
            b"\n",  # 2
            orjson.dumps(records[1]) + b"\r\n",  # 3: CRLF
            b'{"half": \n',  # 4
            orjson.dumps(records[2]) + b"\n",  # 5
            orjson.dumps(records[3]),  # 6: no final newline
        ]
    )
    key = f"spool/dt={DAY}/hour={BASE:%H}/writer.jsonl.gz"
    aws_stack.client("s3").put_object(Bucket=aws_stack.bucket, Key=key, Body=gzip.compress(data))
    done = _process(aws_stack, key)
    assert (done.records, done.bad_lines, done.indexed) == (4, 2, 4)
    for record, expected_line in zip(records, (0, 3, 5, 6), strict=True):
        item = _plain(_get(aws_stack, record) or {})
        assert (item["source"], item["line"]) == (key, expected_line)
        # What a reader does with them: fetch the object, decompress, split on b"\n", take that line.
        body = aws_stack.client("s3").get_object(Bucket=aws_stack.bucket, Key=item["source"])["Body"].read()
        found = orjson.loads(gzip.decompress(body).split(b"\n")[int(item["line"])])
        assert found == record


def test_line_numbers_leave_the_records_the_rollup_sees_unchanged() -> None:
    records = [make_record(BASE + timedelta(seconds=i)) for i in range(3)]
    # A lone b"\r" has always ended a line (splitlines): both records on b"\n" line 0 still count.
    data = orjson.dumps(records[0]) + b"\r" + orjson.dumps(records[1]) + b"\nnope\n" + orjson.dumps(records[2])
    decoded = decode(data, "s3://b/spool/x", REQUIRED)
    assert decoded.records == records and decoded.lines == [0, 0, 2] and decoded.bad_lines == 1


def test_a_template_too_large_for_an_item_is_indexed_by_hash_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index, "MAX_TEMPLATE_BYTES", 10)
    assert index.prompt_items({("p", "h1"): "short", ("p", "h2"): "x" * 11}) == [index.prompt_item("p", "short")]


# -- redelivery ----------------------------------------------------------------------------------


def test_a_redelivery_writes_the_same_items_again(aws_stack: Stack) -> None:
    records = _records()
    records.append(dict(records[1]))  # a record delivered twice within the object: one item
    aws_stack.put_raw_object(RAW_KEY, records)
    event = aws_stack.sqs_event()
    assert invoke(load_aggregator(), event) == {"batchItemFailures": []}

    def items() -> list[dict[str, Any]]:
        # Without the TTL, which may move later (it is at least the marker's life from the last put).
        found = _scan(aws_stack, layout.REQUESTS_PK) + _scan(aws_stack, layout.PROMPT_PK)
        return [{k: v for k, v in item.items() if k != layout.TTL_ATTRIBUTE} for item in found]

    first = items()
    assert invoke(load_aggregator(), event) == {"batchItemFailures": []}  # SQS delivers it again
    assert items() == first
    assert len(first) == 3 + 1
    assert _plain(_get(aws_stack, records[1]) or {})["line"] == 1  # the first of the two lines


# -- BatchWriteItem retries ----------------------------------------------------------------------


class _Unprocessing:
    """A DynamoDB client that leaves the last `keep` items of each of its first `times` batches unprocessed."""

    def __init__(self, real: Any, times: int, keep: int = 3) -> None:
        self.real, self.times, self.keep, self.calls = real, times, keep, 0
        self.sizes: list[int] = []
        self.lock = threading.Lock()  # batches are written from several threads
        # moto's in-memory table is not safe for concurrent writers (it lost 11 of 130 items in
        # one CI run); DynamoDB is, so the writes themselves go one at a time.
        self.moto_lock = threading.Lock()

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:  # noqa: N803
        ((table, requests),) = RequestItems.items()
        with self.lock:
            self.calls += 1
            self.sizes.append(len(requests))
            passes = self.calls > self.times
        split = len(requests) if passes else max(0, len(requests) - self.keep)
        if split:
            with self.moto_lock:
                self.real.batch_write_item(RequestItems={table: requests[:split]})
        return {"UnprocessedItems": {table: requests[split:]}} if split < len(requests) else {"UnprocessedItems": {}}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _items(n: int) -> list[dict[str, Any]]:
    records = [make_record(BASE + timedelta(seconds=i)) for i in range(n)]
    return [item for i, r in enumerate(records) if (item := index_item(r, Source(RAW_KEY, "v1", 30), i)) is not None]


def test_unprocessed_items_are_retried_with_backoff(aws_stack: Stack) -> None:
    client = _Unprocessing(boto3.client("dynamodb", region_name=REGION), times=3)
    slept: list[float] = []
    items = _items(30)
    assert write_index(client, aws_stack.table, items, sleep=slept.append, writers=1) == 30
    # Batch one: 25, then 3 left three times (the third call writes none), then written; batch two: 5.
    assert client.sizes == [25, 3, 3, 3, 5]
    assert len(slept) == 3 and all(0 <= s <= retry.BACKOFF_MAX_S for s in slept)
    assert len(_scan(aws_stack, layout.REQUESTS_PK)) == 30


def test_batches_are_written_several_at_once(aws_stack: Stack) -> None:
    client = _Unprocessing(boto3.client("dynamodb", region_name=REGION), times=4)
    slept: list[float] = []
    assert write_index(client, aws_stack.table, _items(130), sleep=slept.append) == 130
    # Six batches (five of 25, one of 5); each of the first four calls left three items for one more call.
    assert client.calls == 6 + 4 and len(slept) == 4 and sorted(client.sizes).count(25) <= 5
    assert len(_scan(aws_stack, layout.REQUESTS_PK)) == 130


def test_throttling_is_retried(aws_stack: Stack) -> None:
    real = boto3.client("dynamodb", region_name=REGION)
    throttled = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}, "B")

    class Throttled:
        calls = 0

        def batch_write_item(self, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls <= 2:
                raise throttled
            return real.batch_write_item(**kwargs)

    client, slept = Throttled(), []  # type: ignore[var-annotated]
    assert write_index(client, aws_stack.table, _items(2), sleep=slept.append) == 2
    assert client.calls == 3 and len(slept) == 2 and len(_scan(aws_stack, layout.REQUESTS_PK)) == 2


def test_items_left_unprocessed_after_every_attempt_raise(aws_stack: Stack) -> None:
    client = _Unprocessing(boto3.client("dynamodb", region_name=REGION), times=10**6, keep=25)
    slept: list[float] = []
    with pytest.raises(IndexWriteError, match=f"2 index items unprocessed after {MAX_ATTEMPTS} attempts"):
        write_index(client, aws_stack.table, _items(2), sleep=slept.append)
    assert client.calls == MAX_ATTEMPTS and len(slept) == MAX_ATTEMPTS - 1
    # Several batches at once: the failure is raised all the same.
    with pytest.raises(IndexWriteError):
        write_index(client, aws_stack.table, _items(60), sleep=lambda s: None)
    invalid = ClientError({"Error": {"Code": "ValidationException", "Message": "bad"}}, "BatchWriteItem")

    class Invalid:
        calls = 0

        def batch_write_item(self, **kwargs: Any) -> Any:
            self.calls += 1
            raise invalid

    refused = Invalid()
    with pytest.raises(ClientError):
        write_index(refused, aws_stack.table, _items(1), sleep=slept.append)
    assert refused.calls == 1  # not retried: it would fail the same way


def test_a_failed_prompt_text_write_fails_the_message_and_the_redelivery_completes_it(
    aws_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry, "BACKOFF_MAX_S", 0.0)  # no real sleeping between attempts
    records = _records()
    aws_stack.put_raw_object(RAW_KEY, records)
    event = aws_stack.sqs_event()
    module = load_aggregator()
    real = module.dynamodb
    module.dynamodb = _Unprocessing(real, times=10**6, keep=25)  # the prompt texts' batch never goes through
    assert len(invoke(module, event)["batchItemFailures"]) == 1
    # Nothing claimed or counted before the texts that index items point at are in.
    assert _scan(aws_stack, layout.REQUESTS_PK) == [] and aws_stack.objects(layout.CURATED_PREFIX) == []
    assert aws_stack.rollup(layout.rollup_pk("d", DAY), "all#") is None
    module.dynamodb = real
    assert invoke(module, event) == {"batchItemFailures": []}
    assert len(_scan(aws_stack, layout.REQUESTS_PK)) == 3
    assert aws_stack.rollup(layout.rollup_pk("d", DAY), "all#")["requests"] == 3  # type: ignore[index]
