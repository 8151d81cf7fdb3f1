"""The deployed shape end to end under moto: the openai SDK → Function URL (emulator) → relaylog's
runtime → relay → provider stand-in; record → Firehose → S3 → SQS → aggregator → DynamoDB rollups
and Parquet → the saved Athena queries on DuckDB. Then the same under faults."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import duckdb
import openai
import pytest
from botocore.exceptions import ClientError
from relaylog.aws import layout
from relaylog.aws.proxy import create_app
from relaylog.providers.registry import PROVIDERS
from relaylog.standin import StandIn

from tests.support.aggregator import invoke, load_aggregator
from tests.support.aws import REGION, Stack
from tests.support.lambda_emulator import LambdaEmulator
from tests.support.lambda_runtime import InProcessRuntime
from tests.support.sdk import OPENAI
from tests.test_queries import QUERIES
from tests.test_sink_firehose import Flaky, _error

pytestmark = pytest.mark.aws


@pytest.fixture
def deployed(
    aws_stack: Stack, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Stack, LambdaEmulator, InProcessRuntime]]:
    for name in PROVIDERS:
        monkeypatch.setenv(f"RELAYLOG_UPSTREAM_{name.upper()}", standin.url)
    standin.fault = None
    with LambdaEmulator() as emulator, InProcessRuntime(emulator, create_app()) as runtime:
        yield aws_stack, emulator, runtime


def _calls(emulator: LambdaEmulator, tag: str) -> list[str]:
    """Four SDK calls through the Function URL: streamed, plain, attributed, and a provider 429."""
    ids = [str(uuid.uuid4()) for _ in range(4)]
    base = emulator.url + "/v1"
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {tag}"}]}
    streamed = OPENAI.call(
        "sync", base, lambda c: c.chat.completions.create(**chat, stream=True), {"Helicone-Request-Id": ids[0]}
    )
    assert streamed.result[-1].choices == [] or streamed.result[-1].choices[0].finish_reason == "stop"
    OPENAI.call("sync", base, lambda c: c.chat.completions.create(**chat), {"Helicone-Request-Id": ids[1]})
    attributed = {"Helicone-Request-Id": ids[2], "Helicone-User-Id": "alice", "Helicone-Session-Id": "s-1",
                  "Helicone-Property-Team": "search"}  # fmt: skip
    OPENAI.call("sync", base, lambda c: c.chat.completions.create(**chat), attributed)
    with pytest.raises(openai.RateLimitError):
        OPENAI.call(
            "sync",
            base,
            lambda c: c.chat.completions.create(**chat),
            {"Helicone-Request-Id": ids[3], "x-standin-fault": "status=429"},
        )
    emulator.settle()  # the runtime flushed before asking for more work
    return ids


def _aggregate(stack: Stack, module: Any = None) -> dict[str, Any]:
    return invoke(module or load_aggregator(), stack.sqs_event())


def _parquet_db(stack: Stack, tmp_path: Path) -> Any:
    s3 = stack.client("s3")
    for key in stack.objects("curated/"):
        target = tmp_path / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read())
    db = duckdb.connect()
    db.execute(
        f"CREATE VIEW requests AS SELECT * FROM read_parquet('{tmp_path}/curated/*/*.parquet', "
        "hive_partitioning = true, hive_types = {'dt': VARCHAR})"
    )
    return db


def _check_everything(stack: Stack, ids: list[str], tmp_path: Path) -> None:
    db = _parquet_db(stack, tmp_path)
    rows = db.execute("SELECT request_id, status, error_type, cost_usd, dt, user_id FROM requests").fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids)  # exactly one record per call
    by_id = {r[0]: r for r in rows}
    assert by_id[ids[3]][1] == 429 and by_id[ids[3]][2] == "upstream_error"
    assert by_id[ids[2]][5] == "alice"
    dt = rows[0][4]
    costs = [Decimal(repr(r[3])) for r in rows if r[3] is not None]
    assert len(costs) == len(ids) // 4 * 3  # the 429s have no usage
    day = stack.rollup(layout.rollup_pk("d", dt), "all#")
    assert day is not None
    assert day["requests"] == len(ids) and day["errors"] == len(ids) // 4 and day["cost_usd"] == sum(costs)
    team = stack.rollup(layout.rollup_pk("d", dt), "property#team=search")
    assert team is not None and team["requests"] == len(ids) // 4
    (saved,) = [r for r in db.execute(QUERIES["cost_by_day_model"]).fetchall()]
    assert saved[0] == dt and saved[2] == len(ids) and saved[3] == pytest.approx(float(sum(costs)))
    errors = db.execute(QUERIES["errors"]).fetchall()
    assert [(e[1], e[2], e[3]) for e in errors] == [(429, "upstream_error", len(ids) // 4)]


def test_a_call_becomes_rollups_parquet_and_query_answers(deployed: Any, tmp_path: Path) -> None:
    stack, emulator, _ = deployed
    ids = _calls(emulator, "a")
    assert stack.objects("raw/")  # Firehose delivered (moto: one plain object per PutRecordBatch)
    assert _aggregate(stack) == {"batchItemFailures": []}
    _check_everything(stack, ids, tmp_path)


def test_the_same_under_firehose_faults_s3_errors_and_redelivery(deployed: Any, tmp_path: Path) -> None:
    stack, emulator, runtime = deployed
    sink = runtime.app.sink
    real = boto3.client("firehose", region_name=REGION)
    # Throttled, then two entries failed, then accepted; later Firehose is down for good: spool.
    sink._firehose = Flaky(real, plan=[_error("ThrottlingException"), {0}, {0}])
    ids = _calls(emulator, "first")
    sink._firehose = Flaky(real, plan=[_error("ServiceUnavailableException")] * 100)
    ids += _calls(emulator, "second")
    assert stack.objects("spool/")

    aggregator = load_aggregator()
    s3 = aggregator.s3

    class S3Down:
        def get_object(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "GetObject")

    aggregator.s3 = S3Down()
    event = stack.sqs_event()
    failed = invoke(aggregator, event)["batchItemFailures"]
    objects = [r for r in event["Records"] if "s3:TestEvent" not in r["body"]]
    assert len(failed) == len(objects) > 1  # every object message comes back later
    aggregator.s3 = s3
    assert invoke(aggregator, event) == {"batchItemFailures": []}
    assert invoke(aggregator, event) == {"batchItemFailures": []}  # delivered once more: no change
    _check_everything(stack, ids, tmp_path)
