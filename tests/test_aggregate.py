"""The aggregator under moto: S3 object → SQS → rollups in DynamoDB exactly once, and Parquet."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest
from botocore.exceptions import ClientError
from relaylog.aggregate import histogram
from relaylog.aggregate.dynamo import CHUNK_ITEMS, apply_once
from relaylog.aggregate.rollup import TOKEN_FIELDS, rollup
from relaylog.aws import layout

from tests.support.aggregator import invoke, load_aggregator
from tests.support.aws import REGION, Stack
from tests.support.records import BASE, make_record

EVENTS = Path(__file__).resolve().parent.parent / "events"
HOUR = BASE.strftime("%Y-%m-%dT%H")
DAY = BASE.strftime("%Y-%m-%d")
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
    for name in TOKEN_FIELDS:
        values = [r[name] for r in chosen if r.get(name) is not None]
        if values:
            out[name] = sum(values)
    out["cost_usd"] = sum((Decimal(repr(r["cost_usd"])) for r in chosen if r["cost_usd"] is not None), Decimal(0))
    return out


def _check(stack: Stack, pk: str, sk: str, expected: dict[str, Any]) -> dict[str, Any]:
    item = stack.rollup(pk, sk)
    assert item is not None, (pk, sk)
    for name, value in expected.items():
        if name == "cost_usd" and value == 0:
            assert name not in item
            continue
        assert item.get(name, 0) == value, (sk, name, item.get(name), value)
    return item


def _deliver(stack: Stack, records: list[dict[str, Any]], key: str = RAW_KEY, compress: bool = True) -> dict[str, Any]:
    stack.put_raw_object(key, records, compress=compress)
    event = stack.sqs_event()
    return invoke(load_aggregator(), event)


def test_rollups_equal_the_sums_over_the_records(aws_stack: Stack) -> None:
    records = _records()
    assert _deliver(aws_stack, records) == {"batchItemFailures": []}
    for grain, period in (("h", HOUR), ("d", DAY)):
        pk = layout.rollup_pk(grain, period)
        all_ = _check(aws_stack, pk, "all#", _sums(records))
        assert all_["errors"] == 1 and all_["usage_absent"] == 1 and all_["cost_unknown"] == 1
        assert all_["latency_ms_sum"] == Decimal("4010.0") and all_["ttft_count"] == 3
        _check(aws_stack, pk, "model#gpt-4o", _sums(records, model="gpt-4o"))
        _check(aws_stack, pk, "provider#anthropic", _sums(records, provider="anthropic"))
        _check(aws_stack, pk, "user#alice", _sums(records, user_id="alice"))
        _check(aws_stack, pk, "session#s1", _sums(records, session_id="s1"))
        _check(aws_stack, pk, "key#key_ab12cd34", _sums(records))
        _check(aws_stack, pk, "property#team=search", {"requests": 1, "input_tokens": 1000})
        assert all_["grain"] == grain and all_["period"] == period and all_["dim"] == "all"
    hourly = aws_stack.rollup(layout.rollup_pk("h", HOUR), "all#")
    daily = aws_stack.rollup(layout.rollup_pk("d", DAY), "all#")
    assert hourly is not None and daily is not None
    assert hourly[layout.TTL_ATTRIBUTE] > BASE.timestamp() + 34 * 86400 and layout.TTL_ATTRIBUTE not in daily


def test_percentiles_read_back_from_the_merged_histogram(aws_stack: Stack) -> None:
    latencies = [float(ms) for ms in range(10, 1010, 10)]  # 100 calls, 10 ms .. 1000 ms
    records = [make_record(BASE, latency_ms=ms) for ms in latencies]
    _deliver(aws_stack, records)
    item = aws_stack.rollup(layout.rollup_pk("d", DAY), "all#")
    assert item is not None
    counts = {int(k[4:]): int(v) for k, v in item.items() if k.startswith("lat_")}
    for q, exact in ((0.5, 500.0), (0.95, 950.0), (0.99, 990.0)):
        read = histogram.percentile(counts, q)
        assert read is not None and exact <= read <= exact * (1 + histogram.RELATIVE_ERROR)


def test_the_same_object_delivered_twice_counts_once(aws_stack: Stack) -> None:
    records = _records()
    aws_stack.put_raw_object(RAW_KEY, records)
    event = aws_stack.sqs_event()
    assert invoke(load_aggregator(), event) == {"batchItemFailures": []}
    assert invoke(load_aggregator(), event) == {"batchItemFailures": []}  # SQS redelivery
    _check(aws_stack, layout.rollup_pk("d", DAY), "all#", _sums(records))
    assert len(aws_stack.objects("curated/")) == 1  # the Parquet was overwritten, not duplicated


class _CrashAfter:
    """A DynamoDB client whose process dies after `n` transactions."""

    def __init__(self, real: Any, n: int) -> None:
        self.real, self.left = real, n

    def transact_write_items(self, **kwargs: Any) -> Any:
        if self.left == 0:
            raise SystemExit("killed")
        self.left -= 1
        return self.real.transact_write_items(**kwargs)


def test_a_crash_halfway_then_redelivery_applies_every_chunk_once(aws_stack: Stack) -> None:
    records = [make_record(BASE, user_id=f"user-{i}", input_tokens=i, output_tokens=1) for i in range(150)]
    items = rollup(records)
    assert len(items) > 2 * CHUNK_ITEMS  # at least three chunks
    ddb = boto3.client("dynamodb", region_name=REGION)
    source = layout.object_pk(aws_stack.bucket, RAW_KEY) + "#etag1"
    with pytest.raises(SystemExit):
        apply_once(_CrashAfter(ddb, 1), aws_stack.table, source, items)
    partial = aws_stack.rollup(layout.rollup_pk("d", DAY), "all#")
    assert partial is not None and partial["requests"] == 150  # the first chunk (sorted first) was applied
    again = apply_once(ddb, aws_stack.table, source, items)
    assert again.skipped == 1 and again.chunks == len(range(0, len(items), CHUNK_ITEMS)) - 1
    for i in (0, 77, 149):
        _check(aws_stack, layout.rollup_pk("h", HOUR), f"user#user-{i}", {"requests": 1, "input_tokens": i})
    _check(aws_stack, layout.rollup_pk("d", DAY), "all#", _sums(records))
    assert apply_once(ddb, aws_stack.table, source, items).chunks == 0


def test_plain_and_spool_objects_with_encoded_keys_and_bad_lines(
    aws_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    records = _records()[:2]
    key = f"spool/dt={DAY}/hour={BASE:%H}/writer a+b=1.jsonl.gz"
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records) + b'{"not": "a record"}\nsecret prompt text\n'
    aws_stack.client("s3").put_object(Bucket=aws_stack.bucket, Key=key, Body=data)
    event = aws_stack.sqs_event()
    assert "writer+a%2Bb%3D1" in json.dumps(event) or "writer%20a%2Bb%3D1" in json.dumps(event)
    assert invoke(load_aggregator(), event) == {"batchItemFailures": []}
    _check(aws_stack, layout.rollup_pk("d", DAY), "all#", _sums(records))
    assert "line 3 is not a record" in caplog.text and "secret prompt text" not in caplog.text


def test_one_failing_message_is_reported_alone(aws_stack: Stack) -> None:
    aws_stack.put_raw_object(RAW_KEY, _records())
    aws_stack.client("s3").put_object(
        Bucket=aws_stack.bucket, Key="raw/dt=2026-11-25/hour=22/broken.gz", Body=b"\x1f\x8bnot gzip"
    )
    event = aws_stack.sqs_event()
    module = load_aggregator()
    result = invoke(module, event)
    bodies = {r["messageId"]: r["body"] for r in event["Records"]}
    assert [bodies[f["itemIdentifier"]] for f in result["batchItemFailures"]] == [
        next(b for b in bodies.values() if "broken.gz" in b)
    ]
    _check(aws_stack, layout.rollup_pk("d", DAY), "all#", _sums(_records()))


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


def test_the_test_event_and_other_prefixes_are_ignored(aws_stack: Stack) -> None:
    event = aws_stack.sqs_event()  # only the s3:TestEvent so far
    assert "s3:TestEvent" in event["Records"][0]["body"]
    assert invoke(load_aggregator(), event) == {"batchItemFailures": []}


def test_parquet_has_the_record_columns_and_one_file_per_day(aws_stack: Stack, tmp_path: Path) -> None:
    records = _records() + [make_record(BASE + timedelta(hours=2), model="gpt-4o")]  # past midnight
    _deliver(aws_stack, records)
    keys = aws_stack.objects("curated/")
    assert [k.split("/")[1] for k in keys] == ["dt=2026-11-25", "dt=2026-11-26"]
    for key in keys:
        target = tmp_path / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(aws_stack.client("s3").get_object(Bucket=aws_stack.bucket, Key=key)["Body"].read())
    rows = duckdb.sql(
        f"SELECT dt, request_id, properties, cost_usd, status, stream FROM read_parquet('{tmp_path}/curated/*/*.parquet', "
        "hive_partitioning = true, hive_types = {'dt': VARCHAR}) ORDER BY created_at"
    ).fetchall()
    assert [r[1] for r in rows] == [r["request_id"] for r in records]
    assert rows[0][0] == "2026-11-25" and rows[-1][0] == "2026-11-26"
    assert rows[0][2] == {"team": "search"} and rows[0][3] == 0.0045 and rows[2][4] == 529 and rows[0][5] is False


def test_sample_events_are_what_the_handler_takes(aws_stack: Stack) -> None:
    notification = json.loads((EVENTS / "s3_object_created.json").read_text())
    sqs = json.loads((EVENTS / "sqs_s3_notification.json").read_text())
    assert json.loads(sqs["Records"][0]["body"]) == notification
    key = notification["Records"][0]["s3"]["object"]["key"]
    from urllib.parse import unquote_plus

    aws_stack.put_raw_object(unquote_plus(key), _records())
    sqs["Records"][0]["body"] = json.dumps(
        {
            **notification,
            "Records": [
                {
                    **notification["Records"][0],
                    "s3": {
                        **notification["Records"][0]["s3"],
                        "bucket": {**notification["Records"][0]["s3"]["bucket"], "name": aws_stack.bucket},
                    },
                }
            ],
        }
    )
    assert invoke(load_aggregator(), sqs) == {"batchItemFailures": []}
    _check(aws_stack, layout.rollup_pk("d", DAY), "all#", _sums(_records()))
