"""`relaylog verify --stack` against the deployed shape under moto: the proxy's runtime behind the
Lambda emulator, Firehose → S3 → SQS → the aggregator (on an SQS event source thread) → DynamoDB,
the query function under Mangum behind a Function URL, Athena's SQL on DuckDB. Green on a working
pipeline; each broken stage is named, with what to check, and the command exits 1."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from relaylog.aws import clients, layout
from relaylog.aws.proxy import create_app
from relaylog.cli import main
from relaylog.keys.dynamo import DynamoKeyStore
from relaylog.verify import aws as verify_aws
from relaylog.verify.aws import hour_prefix

from tests.support.aggregator import load_aggregator
from tests.support.aws import REGION, CloudFormation, DuckDBAthena, EventSourceMapping, FunctionUrl, Stack
from tests.support.lambda_emulator import LambdaEmulator
from tests.support.lambda_runtime import InProcessRuntime
from tests.support.sam import load_template
from tests.test_sink_firehose import Flaky, _error

pytestmark = pytest.mark.aws

ROOT = Path(__file__).resolve().parents[1]
STACK = "relaylog-prod"
# Functions as CloudFormation names them: stack name, logical id, a random suffix.
FUNCTIONS = {f: f"{STACK}-{f}-AbC123" for f in ("ProxyFunction", "AggregatorFunction", "QueryFunction")}
# The template gives each function a log group of its own, named as the template names it.
LOG_GROUPS = {"ProxyLogGroup": f"/aws/lambda/{STACK}-proxy", "AggregatorLogGroup": f"/aws/lambda/{STACK}-aggregator",
              "QueryLogGroup": f"/aws/lambda/{STACK}-query"}  # fmt: skip
# Short waits: under moto Firehose delivers at once and the event source polls every 50 ms.
FAST = ["--timeout", "delivery=20", "--timeout", "aggregator=20", "--timeout", "athena=20"]


def _load_query_function() -> ModuleType:
    """functions/query/app.py as Lambda loads it: its clients made at import, under moto."""
    spec = importlib.util.spec_from_file_location(f"query_app_{uuid.uuid4().hex}", ROOT / "functions/query/app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Deployed:
    stack: Stack
    key: str
    runtime: InProcessRuntime
    outputs: dict[str, str]
    athena: DuckDBAthena
    aggregator: Any  # the loaded function module: tests replace its clients


@pytest.fixture
def deployed(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Deployed]:
    """The whole stack, found by `--stack relaylog-prod` through CloudFormation's answers, with one
    relaylog key created (so keys are in force, as they must be on AWS)."""
    key, _ = DynamoKeyStore(aws_stack.table, aws_stack.client("dynamodb")).create("verify")
    # The function points relaylog's loggers at its Powertools handler: undone after the test.
    logger = logging.getLogger("relaylog")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    with (
        LambdaEmulator() as emulator,
        InProcessRuntime(emulator, create_app()) as runtime,
        FunctionUrl(_load_query_function().handler) as query,
    ):
        outputs = {
            "ProxyUrl": emulator.url + "/",
            "QueryApiUrl": query.url + "/api/v1/",
            "DashboardUrl": query.url + "/dashboard/",
            "BucketName": aws_stack.bucket,
            "TableName": aws_stack.table,
            "DeliveryStreamName": aws_stack.stream,
            "DatabaseName": "relaylog_prod",
            "AthenaWorkGroup": f"{STACK}-relaylog",
        }
        resources = {"ObjectsQueue": aws_stack.queue_url, "ObjectsDeadLetterQueue": aws_stack.dead_letter_url,
                     "DataBucket": aws_stack.bucket, **FUNCTIONS, **LOG_GROUPS}  # fmt: skip
        athena = DuckDBAthena(aws_stack, tmp_path)
        cloudformation = CloudFormation(STACK, outputs, resources)
        real = clients.make_client
        fakes = {"cloudformation": cloudformation, "athena": athena}
        monkeypatch.setattr(
            clients, "make_client", lambda service, **options: fakes.get(service) or real(service, **options)
        )
        try:
            yield Deployed(aws_stack, key, runtime, outputs, athena, load_aggregator())
        finally:
            logger.handlers[:], logger.propagate = saved[0], saved[1]
            logger.setLevel(saved[2])


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["verify", "--stack", STACK, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _lines(out: str) -> dict[str, str]:
    """Each stage's line of the report, by stage name."""
    found = {}
    for line in out.splitlines():
        match = re.match(r"(ok|FAILED|skipped|not run)\s+(\w+)", line)
        if match:
            found[match[2]] = line
    return found


def test_a_working_stack_passes_every_stage(deployed: Deployed, capsys: pytest.CaptureFixture[str]) -> None:
    with EventSourceMapping(deployed.stack, deployed.aggregator):
        code, out, err = _verify(capsys, "--key", deployed.key, "--athena", *FAST)
    assert code == 0, out + err
    lines = _lines(out)
    assert list(lines) == ["proxy", "delivery", "aggregator", "query_api", "dashboard", "athena"]
    assert all(line.startswith("ok") for line in lines.values()), out
    assert re.search(r"ok\s+delivery\s+\d+\.\d\d s  Firehose delivered it to s3://relaylog-test-data/raw/", out)
    assert "verified: every stage passed" in out
    assert deployed.key not in out + err
    # The call was the echo's: the one record in S3 says so, and no provider was asked.
    (record,) = _delivered(deployed.stack)
    assert (record["provider"], record["endpoint"], record["status"]) == ("relaylog", "/verify", 200)
    assert (record["attempt_count"], record["upstream_ms"], record["cost_usd"]) == (0, None, None)
    assert record["key_id"] is not None and deployed.key not in json.dumps(record)
    assert record["request_id"] in out


def test_json_output_and_athena_left_out_unless_asked(deployed: Deployed, capsys: pytest.CaptureFixture[str]) -> None:
    with EventSourceMapping(deployed.stack, deployed.aggregator):
        code, out, _ = _verify(capsys, "--key", deployed.key, "--json", *FAST)
    assert code == 0
    verdict = json.loads(out[out.index('{\n  "verified"') :])  # after the aggregator's own log lines
    assert verdict["verified"] is True and verdict["failed_stage"] is None
    assert verdict["target"] == {"stack": STACK}
    stages = {s["stage"]: s for s in verdict["stages"]}
    assert [s["status"] for s in verdict["stages"]] == ["ok"] * 5 + ["skipped"]
    assert "billed" in stages["athena"]["detail"] and not deployed.athena.executions
    assert all(isinstance(stages[s]["seconds"], float) for s in ("proxy", "delivery", "aggregator"))


def test_the_delivery_stage_waits_for_firehoses_buffering_interval(deployed: Deployed) -> None:
    """Without --timeout the delivery stage waits the stream's interval (read from Firehose, here as
    the template sets it) plus a margin for Firehose's own delivery."""
    view = verify_aws.StackView.load(STACK, clients.make_client)
    template = load_template()
    configured = template["Resources"]["DeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"]
    assert view.interval_s == configured["BufferingHints"]["IntervalInSeconds"] == 60
    assert view.delivery_timeout_s() == 60 + 120


def test_a_stopped_aggregator_is_named_with_the_queue_depth_and_its_log_group(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _verify(capsys, "--key", deployed.key, "--timeout", "aggregator=1.5")
    assert code == 1
    lines = _lines(out)
    assert lines["proxy"].startswith("ok") and lines["delivery"].startswith("ok")
    assert lines["aggregator"].startswith("FAILED") and "has not indexed the record" in lines["aggregator"]
    assert lines["query_api"].startswith("not run") and lines["dashboard"].startswith("not run")
    # The S3 notification (and S3's test event) wait in the queue: nobody takes them.
    assert re.search(r"check: the queue \S+: [1-9]\d* message\(s\) waiting, 0 in flight \(waiting and none taken", out)
    assert LOG_GROUPS["AggregatorLogGroup"] in out
    assert err.strip().endswith("verify failed at stage aggregator")
    assert deployed.key not in out + err


def test_a_failing_aggregator_is_named_with_the_messages_in_flight(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    from botocore.exceptions import ClientError

    class S3Down:
        def get_object(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "GetObject")

    deployed.aggregator.s3 = S3Down()
    with EventSourceMapping(deployed.stack, deployed.aggregator) as mapping:
        code, out, _ = _verify(capsys, "--key", deployed.key, "--timeout", "aggregator=1.5")
    assert mapping.failures >= 1  # it ran, and failed
    assert code == 1 and _lines(out)["aggregator"].startswith("FAILED")
    assert re.search(r"check: the queue \S+: 0 message\(s\) waiting, [1-9]\d* in flight", out)
    assert "check: the dead-letter queue" in out


def test_firehose_refusing_records_is_named_and_the_spooled_object_shown(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    real = boto3.client("firehose", region_name=REGION)
    deployed.runtime.app.sink._firehose = Flaky(real, plan=[_error("AccessDeniedException")] * 100)
    code, out, _ = _verify(capsys, "--key", deployed.key, "--timeout", "delivery=1")
    assert code == 1
    line = _lines(out)["delivery"]
    assert line.startswith("FAILED") and "Firehose did not take the record" in line
    assert f"s3://{deployed.stack.bucket}/spool/dt=" in line
    assert f"firehose:PutRecordBatch on {deployed.stack.stream}" in out
    assert LOG_GROUPS["ProxyLogGroup"] in out


class _Accepts:
    """A Firehose that answers every batch as accepted and delivers nothing (as one whose role
    cannot write to the bucket does, until its 24 hours of retries run out)."""

    def put_record_batch(self, DeliveryStreamName: str, Records: list[Any]) -> dict[str, Any]:  # noqa: N803
        return {"FailedPutCount": 0, "RequestResponses": [{"RecordId": str(uuid.uuid4())} for _ in Records]}


def test_firehose_not_delivering_is_named_after_its_buffering(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed.runtime.app.sink._firehose = _Accepts()
    code, out, _ = _verify(capsys, "--key", deployed.key, "--timeout", "delivery=1")
    assert code == 1
    line = _lines(out)["delivery"]
    assert line.startswith("FAILED") and "the record is not under s3://relaylog-test-data/raw/" in line
    assert f"check: the delivery stream {deployed.stack.stream}: status ACTIVE" in out
    assert "--timeout delivery=SECONDS" in out


def test_a_query_api_that_does_not_answer_is_named(deployed: Deployed, capsys: pytest.CaptureFixture[str]) -> None:
    deployed.outputs["QueryApiUrl"] = "http://127.0.0.1:9/api/v1/"  # the discard port: nothing listens
    with EventSourceMapping(deployed.stack, deployed.aggregator):
        code, out, _ = _verify(capsys, "--key", deployed.key, *FAST)
    assert code == 1
    lines = _lines(out)
    assert [lines[s].split()[0] for s in ("proxy", "delivery", "aggregator")] == ["ok"] * 3
    assert lines["query_api"].startswith("FAILED") and "no answer from http://127.0.0.1:9/api/v1" in lines["query_api"]
    assert LOG_GROUPS["QueryLogGroup"] in out


def test_without_a_key_the_proxy_refuses_and_says_how_to_pass_one(
    deployed: Deployed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELAYLOG_KEY", raising=False)
    code, out, _ = _verify(capsys)
    assert code == 1
    assert "FAILED   proxy" in out and "401" in _lines(out)["proxy"]
    assert "check: relaylog keys exist here: pass one with --key or the RELAYLOG_KEY environment variable" in out
    code, out, err = _verify(capsys, "--key", "rl-" + "x" * 40)
    assert code == 1 and "the key given was refused" in out and "x" * 40 not in out + err
    # Both calls were refused, and both are recorded as refusals of the echo route.
    records = [r for r in _delivered(deployed.stack) if r["provider"] == "relaylog"]
    assert [(r["status"], r["error_type"]) for r in records] == [(401, "unauthorized")] * 2


def test_a_missing_stack_or_a_wrong_combination_is_refused(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", "--stack", "no-such-stack"]) == 1
    assert "no-such-stack" in capsys.readouterr().err
    assert main(["verify"]) == 2
    assert main(["verify", "--stack", STACK, "--url", "http://127.0.0.1:8787"]) == 2
    assert main(["verify", "--url", "http://127.0.0.1:8787", "--athena"]) == 2
    assert main(["verify", "--stack", STACK, "--timeout", "nothing=3"]) == 2
    assert main(["verify", "--stack", STACK, "--timeout", "delivery=-1"]) == 2
    assert main(["verify", "--url", "ftp://127.0.0.1/"]) == 2


def test_the_names_verify_reads_are_the_templates() -> None:
    """Logical ids, their resource types and the outputs verify reads are those template.yaml declares."""
    template = load_template()
    types = {name: body["Type"] for name, body in template["Resources"].items()}
    assert types[verify_aws.QUEUE] == types[verify_aws.DEAD_LETTER_QUEUE] == "AWS::SQS::Queue"
    for function in (verify_aws.PROXY_FUNCTION, verify_aws.AGGREGATOR_FUNCTION, verify_aws.QUERY_FUNCTION):
        assert types[function] == "AWS::Serverless::Function"
        # The log group verify names in its hints is the one the function logs to.
        group = function.removesuffix("Function") + "LogGroup"
        assert types[group] == "AWS::Logs::LogGroup"
        assert template["Resources"][function]["Properties"]["LoggingConfig"]["LogGroup"] == {"Ref": group}
        assert template["Resources"][group]["Properties"]["LogGroupName"] == {
            "Sub": LOG_GROUPS[group].replace(STACK, "${AWS::StackName}")
        }
    read = {"ProxyUrl", "QueryApiUrl", "DashboardUrl", "BucketName", "TableName", "DeliveryStreamName",
            "DatabaseName", "AthenaWorkGroup"}  # fmt: skip
    assert read <= set(template["Outputs"])
    assert "by_id" in layout.INDEXES


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("raw/dt=!{timestamp:yyyy-MM-dd}/hour=!{timestamp:HH}/", "raw/dt=2026-11-26/hour=07/"),
        ("raw/", "raw/2026/11/26/07/"),  # no timestamp: Firehose appends yyyy/MM/dd/HH/
        ("", "2026/11/26/07/"),
        ("logs/!{timestamp:yyyy'y'MM}/!{firehose:random-string}/x/", "logs/2026y11/"),
        ("a/!{timestamp:yyyy}/!{timestamp:EEE}/", "a/2026/"),  # a field not read: listed from before it
    ],
)
def test_firehose_prefixes_are_evaluated_as_firehose_does(template: str, expected: str) -> None:
    from datetime import UTC, datetime

    assert hour_prefix(template, datetime(2026, 11, 26, 7, tzinfo=UTC)) == expected


def _delivered(stack: Stack) -> list[dict[str, Any]]:
    from relaylog.aggregate.objects import decode

    s3 = stack.client("s3")
    found = []
    for key in stack.objects(layout.RAW_PREFIX) + stack.objects(layout.SPOOL_PREFIX):
        found += decode(s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read(), key, {"request_id"}).records
    return found
