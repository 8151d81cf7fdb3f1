"""The aggregator function under moto: S3 object → SQS → handler → DynamoDB rollups and Parquet."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from botocore.exceptions import ClientError
from relaylog import histogram
from relaylog.aws import layout

from tests.support.aggregator import invoke, load_aggregator
from tests.support.aws import Stack
from tests.support.records import BASE, make_record

pytestmark = pytest.mark.aws

EVENTS = Path(__file__).resolve().parent.parent / "events"
DAY = BASE.strftime("%Y-%m-%d")
HOUR = BASE.strftime("%Y-%m-%dT%H")
RAW_KEY = f"raw/dt={DAY}/hour={BASE:%H}/relaylog-records-1-{DAY}-22-10-00-0f1e2d3c.gz"


def _records() -> list[dict[str, Any]]:
    return [
        make_record(
            BASE,
            model="gpt-4o",
            user_id="alice",
            session_id="s1",
            properties={"team": "search"},
            input_tokens=1000,
            output_tokens=200,
            cache_read_tokens=300,
            cost_usd=0.0045,
            latency_ms=850.0,
            ttft_ms=300.0,
        ),
        make_record(
            BASE + timedelta(minutes=1),
            model="gpt-4o",
            user_id="bob",
            properties={"team": "ads"},
            input_tokens=10,
            output_tokens=5,
            reasoning_tokens=2,
            cost_usd=0.0001,
            latency_ms=120.0,
            ttft_ms=None,
        ),
        make_record(
            BASE + timedelta(minutes=2),
            model="claude-sonnet-4",
            provider="anthropic",
            user_id="alice",
            session_id="s1",
            status=529,
            error_type="upstream_error",
            input_tokens=None,
            output_tokens=None,
            cache_read_tokens=None,
            reasoning_tokens=None,
            usage_source="absent",
            cost_usd=None,
            latency_ms=40.0,
        ),
        make_record(
            BASE + timedelta(minutes=3),
            model="mystery-model",
            user_id="carol",
            cost_usd=None,
            cost_source="unknown_model",
            input_tokens=7,
            output_tokens=3,
            latency_ms=3000.0,
        ),
    ]


def _sums(records: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    chosen = [r for r in records if all(r.get(k) == v for k, v in match.items())]
    out: dict[str, Any] = {"requests": len(chosen)}
    for name in ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens"):
        out[name] = sum(r[name] or 0 for r in chosen)
    out["cost_usd"] = sum((Decimal(repr(r["cost_usd"])) for r in chosen if r["cost_usd"] is not None), Decimal(0))
    return out


def _check(stack: Stack, pk: str, sk: str, expected: dict[str, Any]) -> dict[str, Any]:
    item = stack.rollup(pk, sk)
    assert item is not None, (pk, sk)
    for name, value in expected.items():
        assert item.get(name, 0) == value, (sk, name, item.get(name), value)
    return item


def _deliver(stack: Stack, records: list[dict[str, Any]], key: str = RAW_KEY, compress: bool = True) -> dict[str, Any]:
    stack.put_raw_object(key, records, compress=compress)
    return invoke(load_aggregator(), stack.sqs_event())


def test_rollups_equal_the_sums_over_the_records(aws_stack: Stack) -> None:
    records = _records()
    assert _deliver(aws_stack, records) == {"batchItemFailures": []}
    for grain, period in (("h", HOUR), ("d", DAY)):
        pk = layout.rollup_pk(grain, period)
        all_ = _check(aws_stack, pk, "all#", _sums(records))
        assert (all_["errors"], all_["usage_absent"], all_["cost_unknown"], all_["ttft_count"]) == (1, 1, 1, 3)
        assert all_["latency_ms_sum"] == Decimal("4010") and all_["ttft_ms_sum"] == Decimal("1880")
        assert (all_["grain"], all_["period"], all_["dim"], all_["value"]) == (grain, period, "all", "")
        _check(aws_stack, pk, "model#gpt-4o", _sums(records, model="gpt-4o"))
        _check(aws_stack, pk, "provider#anthropic", _sums(records, provider="anthropic"))
        _check(aws_stack, pk, "user#alice", _sums(records, user_id="alice"))
        _check(aws_stack, pk, "session#s1", _sums(records, session_id="s1"))
        _check(aws_stack, pk, "key#key_ab12cd34", _sums(records))
        _check(aws_stack, pk, "property#team=search", _sums(records[:1]))
        _check(aws_stack, pk, "property#team=ads", _sums(records[1:2]))
        latency = histogram.counts_from_item(all_, histogram.LATENCY)
        assert latency == {histogram.bucket(r["latency_ms"]): 1 for r in records}
    hourly = aws_stack.rollup(layout.rollup_pk("h", HOUR), "all#")
    daily = aws_stack.rollup(layout.rollup_pk("d", DAY), "all#")
    assert hourly is not None and daily is not None
    assert hourly[layout.TTL_ATTRIBUTE] == int((BASE.replace(minute=0) + timedelta(hours=1, days=35)).timestamp())
    assert layout.TTL_ATTRIBUTE not in daily


def test_hourly_retention_comes_from_the_environment(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(layout.ENV_HOURLY_TTL_DAYS, "3")
    _deliver(aws_stack, _records()[:1])
    hourly = aws_stack.rollup(layout.rollup_pk("h", HOUR), "all#")
    assert hourly is not None
    assert hourly[layout.TTL_ATTRIBUTE] == int((BASE.replace(minute=0) + timedelta(hours=1, days=3)).timestamp())


def test_percentiles_read_back_from_the_stored_histogram(aws_stack: Stack) -> None:
    latencies = [float(ms) for ms in range(10, 1010, 10)]  # 100 calls, 10 ms .. 1000 ms
    _deliver(aws_stack, [make_record(BASE, latency_ms=ms, user_id=None) for ms in latencies])
    item = aws_stack.rollup(layout.rollup_pk("d", DAY), "all#")
    assert item is not None
    counts = histogram.counts_from_item(item, histogram.LATENCY)
    for q, exact in ((0.5, 500.0), (0.95, 950.0), (0.99, 990.0)):
        read = histogram.percentile(counts, q)
        assert read is not None and abs(read - exact) <= histogram.RELATIVE_ERROR * exact


def _metrics(out: str) -> list[dict[str, Any]]:
    """The EMF metric lines (one per invocation) printed to stdout."""
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_the_same_message_delivered_twice_counts_once(aws_stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    records = _records()
    aws_stack.put_raw_object(RAW_KEY, records)
    event = aws_stack.sqs_event()
    assert invoke(load_aggregator(), event) == {"batchItemFailures": []}
    curated = aws_stack.objects(layout.CURATED_PREFIX)
    assert invoke(load_aggregator(), event) == {"batchItemFailures": []}  # SQS delivers it again
    _check(aws_stack, layout.rollup_pk("d", DAY), "all#", _sums(records))
    assert aws_stack.objects(layout.CURATED_PREFIX) == curated and len(curated) == 1  # overwritten, not added
    first, second = _metrics(capsys.readouterr().out)
    assert first["ObjectsProcessed"] == [1.0] and first["RecordsAggregated"] == [4.0]
    assert "ObjectsSkippedDuplicate" not in first
    assert second["ObjectsProcessed"] == [1.0] and second["ObjectsSkippedDuplicate"] == [1.0]
    assert "RecordsAggregated" not in second


class _CrashAfter:
    """A DynamoDB client whose Lambda is killed after `n` transactions (its other calls go through)."""

    def __init__(self, real: Any, n: int) -> None:
        self.real, self.left = real, n
        self.lock = threading.Lock()  # an object's chunks go from several threads

    def transact_write_items(self, **kwargs: Any) -> Any:
        with self.lock:
            if self.left == 0:
                raise RuntimeError("Lambda timed out")
            self.left -= 1
        return self.real.transact_write_items(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _CrashOn:
    """A DynamoDB client whose Lambda is killed while it writes chunk `number` (its other calls go through)."""

    def __init__(self, real: Any, number: int) -> None:
        self.real, self.marker = real, f"chunk#{number}"

    def transact_write_items(self, **kwargs: Any) -> Any:
        if kwargs["TransactItems"][-1]["Put"]["Item"]["sk"]["S"] == self.marker:
            raise RuntimeError("Lambda timed out")
        return self.real.transact_write_items(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("dies_on", [0, 1])
def test_a_crash_halfway_then_redelivery_counts_every_record_once(aws_stack: Stack, dies_on: int) -> None:
    # 60 users: 2 x (60 + 4) items, two transactions of 99 + 1, written at once: either may die.
    records = [make_record(BASE, user_id=f"user-{i}", input_tokens=i) for i in range(60)]
    aws_stack.put_raw_object(RAW_KEY, records)
    event = aws_stack.sqs_event()
    module = load_aggregator()
    real = module.dynamodb
    module.dynamodb = _CrashOn(real, dies_on)
    assert len(invoke(module, event)["batchItemFailures"]) == 1
    assert aws_stack.objects(layout.CURATED_PREFIX) == []  # it died before writing Parquet
    markers = aws_stack.client("dynamodb").scan(
        TableName=aws_stack.table,
        FilterExpression="begins_with(pk, :object)",
        ExpressionAttributeValues={":object": {"S": f"{layout.OBJECT_PK}#"}},
    )["Items"]
    applied = [item["sk"]["S"] for item in markers]
    # Chunk 0 is taken first and waited for before a failure is raised: it lands when chunk 1 dies.
    # When chunk 0 dies, chunk 1 lands if it had started, or is cancelled if it had not.
    assert applied == ["chunk#0"] if dies_on == 1 else applied in ([], ["chunk#1"])
    module.dynamodb = real
    assert invoke(module, event) == {"batchItemFailures": []}
    _check(aws_stack, layout.rollup_pk("d", DAY), "all#", {"requests": 60, "input_tokens": sum(range(60))})
    _check(aws_stack, layout.rollup_pk("h", HOUR), "all#", {"requests": 60, "input_tokens": sum(range(60))})
    for i in (0, 31, 59):
        _check(aws_stack, layout.rollup_pk("h", HOUR), f"user#user-{i}", {"requests": 1, "input_tokens": i})
    assert len(aws_stack.objects(layout.CURATED_PREFIX)) == 1


def test_spool_objects_plain_with_encoded_keys_and_bad_lines(
    aws_stack: Stack, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    records = _records()[:2]
    key = f"spool/dt={DAY}/hour={BASE:%H}/writer a+b=1 (retry).jsonl"
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    data += b'{"not": "a record"}\nsecret prompt text\n\n' + json.dumps(_records()[3]).encode()
    aws_stack.client("s3").put_object(Bucket=aws_stack.bucket, Key=key, Body=data)
    event = aws_stack.sqs_event()
    assert quote_plus(key.split("/")[-1]) in json.dumps(event), json.dumps(event)  # S3 sends keys URL-encoded
    assert invoke(load_aggregator(), event) == {"batchItemFailures": []}
    _check(aws_stack, layout.rollup_pk("d", DAY), "all#", _sums(records + _records()[3:]))
    assert f"skipped line 3 of s3://{aws_stack.bucket}/{key}" in caplog.text
    assert "skipped line 4 of" in caplog.text and "secret prompt text" not in caplog.text
    out = capsys.readouterr().out
    assert _metrics(out)[0]["BadLines"] == [2.0] and "secret prompt text" not in out


def test_one_failing_message_is_reported_alone(aws_stack: Stack) -> None:
    aws_stack.put_raw_object(RAW_KEY, _records())
    broken = f"raw/dt={DAY}/hour=22/broken.gz"
    aws_stack.client("s3").put_object(Bucket=aws_stack.bucket, Key=broken, Body=b"\x1f\x8bnot gzip at all")
    aws_stack.put_raw_object(RAW_KEY.replace(".gz", "-2.gz"), _records()[:1])
    event = aws_stack.sqs_event()
    assert len(event["Records"]) == 4  # with the TestEvent
    result = invoke(load_aggregator(), event)
    bodies = {r["messageId"]: r["body"] for r in event["Records"]}
    assert [bodies[f["itemIdentifier"]] for f in result["batchItemFailures"]] == [
        next(b for b in bodies.values() if "broken.gz" in b)
    ]
    expected = _sums(_records() + _records()[:1])
    _check(aws_stack, layout.rollup_pk("d", DAY), "all#", expected)


def test_s3_unavailable_fails_the_message_for_a_later_retry(aws_stack: Stack) -> None:
    aws_stack.put_raw_object(RAW_KEY, _records())
    event = aws_stack.sqs_event()
    module = load_aggregator()
    real = module.s3

    class Down:
        def get_object(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "GetObject")

    module.s3 = Down()
    assert len(invoke(module, event)["batchItemFailures"]) == 1
    assert aws_stack.rollup(layout.rollup_pk("d", DAY), "all#") is None
    module.s3 = real
    assert invoke(module, event) == {"batchItemFailures": []}
    _check(aws_stack, layout.rollup_pk("d", DAY), "all#", _sums(_records()))


def test_the_test_event_is_ignored(aws_stack: Stack) -> None:
    event = aws_stack.sqs_event()  # only the s3:TestEvent so far
    assert len(event["Records"]) == 1 and "s3:TestEvent" in event["Records"][0]["body"]
    assert invoke(load_aggregator(), event) == {"batchItemFailures": []}
    assert aws_stack.client("dynamodb").scan(TableName=aws_stack.table)["Items"] == []
    assert aws_stack.objects(layout.CURATED_PREFIX) == []


def test_the_sample_events_are_what_the_handler_takes(aws_stack: Stack) -> None:
    notification = json.loads((EVENTS / "s3_object_created.json").read_text())
    sqs = json.loads((EVENTS / "sqs_s3_notification.json").read_text())
    assert json.loads(sqs["Records"][0]["body"]) == notification
    entry = notification["Records"][0]
    assert "%3D" in entry["s3"]["object"]["key"]  # keys arrive URL-encoded
    module = load_aggregator()
    assert module.objects_in(sqs["Records"][0]["body"]) == [
        ("relaylog-prod-123456789012-us-east-1", entry["s3"]["object"]["key"].replace("%3D", "="))
    ]
    # The same event, pointed at the test bucket.
    entry["s3"]["bucket"]["name"] = aws_stack.bucket
    sqs["Records"][0]["body"] = json.dumps(notification)
    aws_stack.put_raw_object(module.objects_in(sqs["Records"][0]["body"])[0][1], _records())
    assert invoke(module, sqs) == {"batchItemFailures": []}
    _check(aws_stack, layout.rollup_pk("d", DAY), "all#", _sums(_records()))
