"""The Firehose sink under moto: batching, body offload, retries, the S3 spool, and no silent loss."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from dataclasses import replace
from typing import Any

import boto3
import httpx
import orjson
import pytest
from aws_lambda_powertools import Metrics
from botocore.exceptions import ClientError, EndpointConnectionError
from relaylog.config import Settings
from relaylog.headers import HeliconeMeta
from relaylog.observe import Exchange
from relaylog.providers.registry import PROVIDERS
from relaylog.sinks.firehose import MAX_RECORD_BYTES, FirehoseSink
from relaylog.standin import StandIn

from tests.support.aws import REGION, Stack

pytestmark = pytest.mark.aws

SETTINGS = Settings()


def _exchange(body_bytes: int = 60) -> Exchange:
    started = time.perf_counter()
    exchange = Exchange(str(uuid.uuid4()), time.time(), started, "POST", "/v1/chat/completions", HeliconeMeta())
    exchange.provider = PROVIDERS["openai"]
    exchange.endpoint = "/v1/chat/completions"
    filler = "x" * max(body_bytes - 60, 0)
    exchange.request_body = json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": filler}]}
    ).encode()
    exchange.request_content_type = "application/json"
    exchange.status = 200
    exchange.finished = started + 0.01
    return exchange


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Flaky:
    """A client that fails chosen calls (or entries of PutRecordBatch) and otherwise delegates.

    With a clock, each call takes `call_s` of its time: a slow service."""

    def __init__(self, real: Any, plan: list[Any] | None = None, clock: Clock | None = None, call_s: float = 0) -> None:
        self.real = real
        self.plan = list(plan or [])  # per call: None (pass), an exception, or a set of entry indexes to fail
        self.calls: list[int] = []
        self.keys: list[str] = []
        self.clock = clock
        self.call_s = call_s

    def put_record_batch(self, **kwargs: Any) -> Any:
        self.calls.append(len(kwargs["Records"]))
        self._take_time()
        step = self.plan.pop(0) if self.plan else None
        if isinstance(step, Exception):
            raise step
        if isinstance(step, set):
            keep = [r for i, r in enumerate(kwargs["Records"]) if i not in step]
            if keep:
                self.real.put_record_batch(**{**kwargs, "Records": keep})
            responses = [
                {"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "slow down"}
                if i in step
                else {"RecordId": "x"}
                for i in range(len(kwargs["Records"]))
            ]
            return {"FailedPutCount": len(step), "RequestResponses": responses}
        return self.real.put_record_batch(**kwargs)

    def put_object(self, **kwargs: Any) -> Any:
        self.keys.append(kwargs["Key"])
        self._take_time()
        step = self.plan.pop(0) if self.plan else None
        if isinstance(step, Exception):
            raise step
        return self.real.put_object(**kwargs)

    def _take_time(self) -> None:
        if self.clock is not None:
            self.clock.now += self.call_s


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "PutRecordBatch")


def _sink(
    stack: Stack, firehose: Any = None, s3: Any = None, settings: Settings = SETTINGS, clock: Clock | None = None
) -> FirehoseSink:
    clock = clock or Clock()
    return FirehoseSink(
        settings,
        stream=stack.stream,
        bucket=stack.bucket,
        firehose=firehose or boto3.client("firehose", region_name=REGION),
        s3=s3 or boto3.client("s3", region_name=REGION),
        metrics=lambda: Metrics(namespace="relaylog", service="proxy"),
        sleep=clock.sleep,
        jitter=lambda: 1.0,
        clock=lambda: clock.now,
    )


def _delivered(stack: Stack, prefix: str = "raw/") -> list[dict[str, Any]]:
    s3 = stack.client("s3")
    found = []
    for key in stack.objects(prefix):
        data = s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        found += [orjson.loads(line) for line in data.splitlines()]
    return found


def _metrics(output: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith("{") and "_aws" in line:
            doc = json.loads(line)
            for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                value = doc[m["Name"]]
                totals[m["Name"]] = totals.get(m["Name"], 0) + (sum(value) if isinstance(value, list) else value)
    return totals


def test_records_reach_s3_through_firehose(aws_stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    sink = _sink(aws_stack)
    exchanges = [_exchange() for _ in range(3)]
    for e in exchanges:
        sink.submit(e)
    assert aws_stack.objects("raw/") == []  # submit does no I/O
    sink.flush(5)
    assert sorted(r["request_id"] for r in _delivered(aws_stack)) == sorted(e.request_id for e in exchanges)
    assert sink.queued == 0
    assert _metrics(capsys.readouterr().out) == {"RecordsSent": 3}


def test_the_batch_is_sent_as_the_json_botocore_would_send(aws_stack: Stack) -> None:
    # Records with every kind of byte, and an empty one: base64 makes them all JSON-safe text.
    records = [{"Data": orjson.dumps({"i": i, "text": 'é\u2028"\\</'}) + b"\n"} for i in range(3)]
    records += [{"Data": bytes(range(256))}, {"Data": b""}]
    bodies: list[bytes] = []
    for taken_over in (False, True):
        client = boto3.client("firehose", region_name=REGION)
        if taken_over:
            _sink(aws_stack, firehose=client)  # the sink builds its PutRecordBatch bodies itself
        client.meta.events.register(
            "request-created.firehose.PutRecordBatch", lambda request, **_: bodies.append(request.body)
        )
        answer = client.put_record_batch(DeliveryStreamName=aws_stack.stream, Records=records)
        assert answer["FailedPutCount"] == 0
    botocores, sinks = bodies
    assert sinks != botocores  # built by the sink, not by botocore's serializer
    assert json.loads(sinks) == json.loads(botocores)


def test_batches_hold_at_most_500_records_and_4_mib(aws_stack: Stack) -> None:
    firehose = Flaky(boto3.client("firehose", region_name=REGION))
    sink = _sink(aws_stack, firehose=firehose)
    for _ in range(600):
        sink.submit(_exchange())
    sink.flush(5)
    assert firehose.calls == [500, 100]
    firehose.calls.clear()
    big = replace(SETTINGS, body_inline_max=2 * 1024 * 1024)
    sink = _sink(aws_stack, firehose=firehose, settings=big)
    for _ in range(5):
        sink.submit(_exchange(900 * 1024))  # five records of ~900 KiB: 4.4 MiB in all
    sink.flush(5)
    assert firehose.calls == [4, 1]
    assert len(_delivered(aws_stack)) == 605


def test_large_bodies_go_to_s3_before_the_record_that_names_them(aws_stack: Stack) -> None:
    sink = _sink(aws_stack)
    exchange = _exchange(300 * 1024)  # over the 256 KiB inline limit
    sink.submit(exchange)
    sink.flush(5)
    (record,) = _delivered(aws_stack)
    assert record["request_body"] is None
    ref = record["request_body_ref"]
    assert ref.startswith(f"bodies/dt={record['dt']}/") and ref.endswith(".request")
    body = aws_stack.client("s3").get_object(Bucket=aws_stack.bucket, Key=ref)["Body"].read()
    assert body == exchange.request_body


def test_a_record_over_firehoses_limit_is_sent_with_its_bodies_in_s3(aws_stack: Stack) -> None:
    sink = _sink(aws_stack, settings=replace(SETTINGS, body_inline_max=4 * 1024 * 1024))
    exchange = _exchange(1200 * 1024)
    sink.submit(exchange)
    sink.flush(5)
    (record,) = _delivered(aws_stack)
    assert record["request_body"] is None and record["request_body_ref"]
    assert len(orjson.dumps(record)) < MAX_RECORD_BYTES


def test_only_the_failed_entries_are_sent_again(aws_stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    firehose = Flaky(boto3.client("firehose", region_name=REGION), plan=[{0, 2}, {1}])
    clock = Clock()
    sink = _sink(aws_stack, firehose=firehose, clock=clock)
    exchanges = [_exchange() for _ in range(5)]
    for e in exchanges:
        sink.submit(e)
    sink.flush(30)
    assert firehose.calls == [5, 2, 1]
    assert sorted(r["request_id"] for r in _delivered(aws_stack)) == sorted(e.request_id for e in exchanges)
    assert clock.slept == [0.1, 0.2]  # exponential backoff (jitter pinned to its maximum)
    assert _metrics(capsys.readouterr().out) == {"RecordsSent": 5, "FirehoseRetries": 3}


def test_throttling_is_retried_until_firehose_takes_the_records(aws_stack: Stack) -> None:
    plan: list[Any] = [_error("ThrottlingException"), EndpointConnectionError(endpoint_url="https://firehose")]
    firehose = Flaky(boto3.client("firehose", region_name=REGION), plan=plan)
    sink = _sink(aws_stack, firehose=firehose)
    sink.submit(_exchange())
    sink.flush(30)
    assert firehose.calls == [1, 1, 1]
    assert len(_delivered(aws_stack)) == 1 and aws_stack.objects("spool/") == []


def test_records_go_to_the_s3_spool_when_firehose_stays_down(
    aws_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    firehose = Flaky(boto3.client("firehose", region_name=REGION), plan=[_error("ServiceUnavailableException")] * 20)
    clock = Clock()
    sink = _sink(aws_stack, firehose=firehose, clock=clock)
    exchanges = [_exchange() for _ in range(4)]
    for e in exchanges:
        sink.submit(e)
    sink.flush(3.0)
    assert sum(clock.slept) <= 3.0 - 1.0  # retries stop in time to leave the spool its reserve
    (key,) = aws_stack.objects("spool/")
    record = _delivered(aws_stack, "spool/")[0]
    assert key.startswith(f"spool/dt={record['dt']}/hour={record['hour']}/") and key.endswith(".jsonl.gz")
    assert sorted(r["request_id"] for r in _delivered(aws_stack, "spool/")) == sorted(e.request_id for e in exchanges)
    assert aws_stack.objects("raw/") == [] and sink.queued == 0
    assert _metrics(capsys.readouterr().out)["RecordsSpilled"] == 4


def test_a_missing_stream_spools_at_once(aws_stack: Stack) -> None:
    firehose = Flaky(boto3.client("firehose", region_name=REGION), plan=[_error("ResourceNotFoundException")])
    clock = Clock()
    sink = _sink(aws_stack, firehose=firehose, clock=clock)
    sink.submit(_exchange())
    sink.flush(30)
    assert firehose.calls == [1] and clock.slept == []
    assert len(aws_stack.objects("spool/")) == 1


def test_with_firehose_and_s3_down_records_wait_for_a_later_flush(
    aws_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    down = _error("ServiceUnavailableException")
    firehose = Flaky(boto3.client("firehose", region_name=REGION), plan=[down] * 6)
    s3 = Flaky(boto3.client("s3", region_name=REGION), plan=[EndpointConnectionError(endpoint_url="https://s3")])
    sink = _sink(aws_stack, firehose=firehose, s3=s3)
    exchanges = [_exchange() for _ in range(2)]
    for e in exchanges:
        sink.submit(e)
    sink.flush(30)
    assert sink.queued == 2 and aws_stack.objects("") == []
    sink.flush(30)  # both back
    assert sink.queued == 0
    assert sorted(r["request_id"] for r in _delivered(aws_stack)) == sorted(e.request_id for e in exchanges)
    assert "RecordsLost" not in _metrics(capsys.readouterr().out)


def test_records_are_counted_lost_only_when_close_cannot_send_them(
    aws_stack: Stack, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    down = _error("ServiceUnavailableException")
    firehose = Flaky(boto3.client("firehose", region_name=REGION), plan=[down] * 100)
    s3 = Flaky(boto3.client("s3", region_name=REGION), plan=[EndpointConnectionError(endpoint_url="https://s3")] * 100)
    clock = Clock()
    sink = _sink(aws_stack, firehose=firehose, s3=s3, clock=clock)
    exchange = _exchange(200)
    sink.submit(exchange)
    sink.flush(5)
    assert "RecordsLost" not in _metrics(capsys.readouterr().out)
    calls, slept = len(firehose.calls), len(clock.slept)
    sink.close()
    # Within Lambda's shutdown window: one try at Firehose, none of the backoff waits.
    assert len(firehose.calls) == calls + 1 and len(clock.slept) == slept
    assert _metrics(capsys.readouterr().out)["RecordsLost"] == 1
    assert exchange.request_id in caplog.text and "xxxx" not in caplog.text  # the id, never the content


def test_batches_left_when_the_budget_runs_out_stay_queued(aws_stack: Stack) -> None:
    clock = Clock()
    firehose = Flaky(boto3.client("firehose", region_name=REGION), clock=clock, call_s=2.5)
    sink = _sink(aws_stack, firehose=firehose, clock=clock)
    for _ in range(600):
        sink.submit(_exchange())
    sink.flush(0)  # no time at all: nothing is tried
    assert firehose.calls == [] and sink.queued == 600
    sink.flush(2.0)  # the first call takes 2.5 s: the second batch waits, it is not spooled
    assert firehose.calls == [500] and sink.queued == 100
    assert aws_stack.objects("spool/") == []
    sink.flush(2.0)
    assert firehose.calls == [500, 100] and sink.queued == 0
    assert len(_delivered(aws_stack)) == 600


def test_body_uploads_stop_when_the_budget_runs_out_and_resume_without_repeats(aws_stack: Stack) -> None:
    clock = Clock()
    s3 = Flaky(boto3.client("s3", region_name=REGION), clock=clock, call_s=2.5)
    sink = _sink(aws_stack, s3=s3, clock=clock)
    exchanges = [_exchange(300 * 1024) for _ in range(2)]
    for e in exchanges:
        sink.submit(e)
    sink.flush(2.0)
    assert len(s3.keys) == 1 and sink.queued == 2 and aws_stack.objects("raw/") == []
    sink.flush(10.0)
    assert len(s3.keys) == 2 and len(set(s3.keys)) == 2  # the first body was not uploaded again
    assert sorted(r["request_id"] for r in _delivered(aws_stack)) == sorted(e.request_id for e in exchanges)


def test_an_exchange_that_cannot_become_a_record_is_counted_lost(
    aws_stack: Stack, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    sink = _sink(aws_stack)
    broken = _exchange()
    broken.response_chunks = None  # type: ignore[assignment]
    sink.submit(broken)
    assert sink.queued == 0
    sink.flush(5)
    assert _metrics(capsys.readouterr().out) == {"RecordsLost": 1}
    assert broken.request_id in caplog.text


def test_the_lambda_app_records_a_real_call_through_firehose(
    aws_stack: Stack, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from relaylog.aws.proxy import create_app
    from relaylog.keys.dynamo import DynamoKeyStore

    monkeypatch.setenv("RELAYLOG_UPSTREAM_OPENAI", standin.url)
    standin.fault = None
    app = create_app()
    secret, _ = DynamoKeyStore(aws_stack.table, boto3.client("dynamodb", region_name=REGION)).create("ci")
    request_id = str(uuid.uuid4())

    async def run() -> httpx.Response:
        await app.startup()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lambda") as client:
                return await client.post(
                    "/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                    headers={
                        "Helicone-Auth": f"Bearer {secret}",
                        "Helicone-Request-Id": request_id,
                        "Authorization": "Bearer sk-provider-secret",
                    },
                )
        finally:
            await app.shutdown()

    response = asyncio.run(run())
    assert response.status_code == 200
    app.sink.flush(5)
    (record,) = _delivered(aws_stack)
    assert record["request_id"] == request_id and record["key_id"] and record["output_tokens"] > 0
    stored = b"".join(
        aws_stack.client("s3").get_object(Bucket=aws_stack.bucket, Key=k)["Body"].read() for k in aws_stack.objects("")
    )
    assert secret.encode() not in stored and b"sk-provider-secret" not in stored
