"""`--stack NAME`: keys in the stack's DynamoDB table and saved queries in its Athena workgroup."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.athena.models import QueryResults, athena_backends
from relaylog.aggregate.process import process_object
from relaylog.aws import layout
from relaylog.aws.athena import run_query
from relaylog.aws.stack import StackError
from relaylog.cli import main
from relaylog.keys.dynamo import DynamoKeyStore

from tests.support.aws import REGION, Stack
from tests.support.records import make_record
from tests.test_queries import QUERIES

pytestmark = pytest.mark.aws

STACK = "relaylog-prod"


class _CloudFormation:
    """DescribeStacks as CloudFormation answers it (moto's CloudFormation needs a dozen more
    packages, docker among them, for this one call)."""

    def __init__(self, outputs: dict[str, str]) -> None:
        self.outputs = outputs

    def describe_stacks(self, StackName: str) -> dict[str, Any]:  # noqa: N803 (boto3's argument name)
        if StackName != STACK:
            message = f"Stack with id {StackName} does not exist"
            raise ClientError({"Error": {"Code": "ValidationError", "Message": message}}, "DescribeStacks")
        outputs = [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]
        return {"Stacks": [{"StackName": STACK, "StackStatus": "CREATE_COMPLETE", "Outputs": outputs}]}


@pytest.fixture
def deployed(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """A stack named STACK whose outputs point at the moto resources."""
    from relaylog.aws import clients

    outputs = {"TableName": aws_stack.table, "DatabaseName": "relaylog_prod", "AthenaWorkGroup": "primary",
               "BucketName": aws_stack.bucket}  # fmt: skip
    real = clients.make_client
    monkeypatch.setattr(
        "relaylog.aws.stack.make_client",
        lambda service: _CloudFormation(outputs) if service == "cloudformation" else real(service),
    )
    return aws_stack


def test_keys_live_hashed_in_the_stacks_table(deployed: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--stack", STACK, "--name", "ci", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    store = DynamoKeyStore(deployed.table, deployed.client("dynamodb"), reload_interval_s=0)
    assert store.verify(created["key"]) == created["key_id"]
    assert created["key"] not in str(deployed.client("dynamodb").scan(TableName=deployed.table)["Items"])
    assert main(["keys", "list", "--stack", STACK]) == 0
    assert created["key_id"] in capsys.readouterr().out
    assert main(["keys", "revoke", "--stack", STACK, created["key_id"]]) == 0
    assert store.verify(created["key"]) is None
    assert main(["keys", "revoke", "--stack", STACK, created["key_id"]]) == 1
    assert "already revoked" in capsys.readouterr().err


def _athena() -> Any:
    return athena_backends["123456789012"][REGION]


def test_a_saved_query_runs_in_the_stacks_workgroup(deployed: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    header = {"Data": [{"VarCharValue": "user_id"}, {"VarCharValue": "cost_usd"}]}
    row = {"Data": [{"VarCharValue": "alice"}, {"VarCharValue": "0.26"}]}
    columns = [{"Name": "user_id", "Type": "varchar"}, {"Name": "cost_usd", "Type": "double"}]
    _athena().query_results_queue.append(QueryResults(rows=[header, row], column_info=columns))
    assert main(["query", "--stack", STACK, "cost_by_user", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"user_id": "alice", "cost_usd": 0.26}]  # typed by ColumnInfo
    (execution,) = _athena().executions.values()
    assert execution.query == QUERIES["cost_by_user"]
    assert execution.context["Database"] == "relaylog_prod" and execution.workgroup.name == "primary"


def test_ad_hoc_sql_and_errors(deployed: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--stack", STACK, "SELECT 1"]) == 0
    (execution,) = _athena().executions.values()
    assert execution.query == "SELECT 1"
    assert main(["query", "--stack", "no-such-stack", "errors"]) == 1
    assert "no-such-stack" in capsys.readouterr().err
    assert main(["query", "--stack", STACK, "cost_by_dya_model"]) == 1  # a typo is not sent to Athena as SQL
    assert "saved queries: cost_by_day_model, cost_by_user" in capsys.readouterr().err
    assert len(_athena().executions) == 1
    assert main(["keys", "list", "--stack", STACK, "--data-dir", "/tmp/x"]) == 2
    assert main(["query", "--stack", STACK, "--data-dir=/tmp/x", "errors"]) == 2
    assert main(["query", "--stack", STACK, "--data", "/tmp/x", "errors"]) == 2  # argparse's abbreviation
    assert "give one" in capsys.readouterr().err


class _Athena:
    """An Athena client that runs one query through the states real Athena reports."""

    def __init__(self, states: list[str], pages: list[dict[str, Any]]) -> None:
        self.states, self.pages = states, pages
        self.calls: list[str] = []

    def start_query_execution(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("start")
        return {"QueryExecutionId": "q1"}

    def get_query_execution(self, QueryExecutionId: str) -> dict[str, Any]:  # noqa: N803 (boto3's name)
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"QueryExecution": {"Status": {"State": state, "StateChangeReason": "SYNTAX_ERROR: line 1:8"}}}

    def stop_query_execution(self, QueryExecutionId: str) -> None:  # noqa: N803
        self.calls.append("stop")

    def get_paginator(self, name: str) -> Any:
        assert name == "get_query_results"
        return self

    def paginate(self, QueryExecutionId: str) -> list[dict[str, Any]]:  # noqa: N803
        return self.pages


def _page(rows: list[list[str | None]]) -> dict[str, Any]:
    info = [{"Name": "model", "Type": "varchar"}, {"Name": "requests", "Type": "bigint"},
            {"Name": "p95", "Type": "double"}, {"Name": "stream", "Type": "boolean"}]  # fmt: skip
    data = [{"Data": [{} if v is None else {"VarCharValue": v} for v in row]} for row in rows]
    return {"ResultSet": {"ResultSetMetadata": {"ColumnInfo": info}, "Rows": data}}


def test_athena_polls_with_backoff_and_reads_every_page() -> None:
    pages = [_page([["model", "requests", "p95", "stream"], ["gpt-4o", "21", "1900.0", "true"]]),
             _page([["claude", "1", None, "false"]])]  # fmt: skip
    client, slept = _Athena(["QUEUED", "RUNNING", "RUNNING", "SUCCEEDED"], pages), list[float]()
    result = run_query("SELECT 1", "db", "wg", client=client, sleep=slept.append)
    assert slept == [0.2, 0.4, 0.8]
    assert result.columns == ["model", "requests", "p95", "stream"]
    assert result.rows == [["gpt-4o", 21, 1900.0, True], ["claude", 1, None, False]]


def test_athena_failures_and_timeouts_are_stack_errors() -> None:
    with pytest.raises(StackError, match="failed: SYNTAX_ERROR"):
        run_query("SELEC 1", "db", "wg", client=_Athena(["FAILED"], []), sleep=lambda _: None)
    stuck = _Athena(["RUNNING"], [])
    with pytest.raises(StackError, match="still running after 10 s"):
        run_query("SELECT 1", "db", "wg", client=stuck, sleep=lambda _: None, timeout_s=10)
    assert stuck.calls == ["start", "stop"]  # not left scanning


@pytest.fixture
def aggregated(deployed: Stack) -> list[dict[str, Any]]:
    """Records of the last hours, delivered and aggregated into the stack's index and rollups."""
    now = datetime.now(UTC).replace(microsecond=0)
    prompt = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Tell me about <helicone-prompt-input key=\\"t\\">x</helicone-prompt-input>"}]}'
    records = [
        make_record(now - timedelta(hours=2), user_id="ada", model="gpt-4o"),
        make_record(now - timedelta(hours=1), user_id="bob", prompt_id="about", request_body=prompt),
        make_record(now - timedelta(minutes=30), user_id="ada", status=500, error_type="upstream_error"),
    ]
    for number, record in enumerate(records):
        key = layout.partition_path(layout.RAW_PREFIX, record["dt"], record["hour"]) + f"cli-{number}"
        deployed.put_raw_object(key, [record])
        process_object(deployed.client("s3"), deployed.client("dynamodb"), deployed.table, deployed.bucket, key)
    return records


def test_requests_show_stats_and_prompts_read_the_stack(
    aggregated: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["requests", "--stack", STACK, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["request_id"] for r in listed] == [r["request_id"] for r in reversed(aggregated)]
    assert main(["requests", "--stack", STACK, "--user", "ada"]) == 0
    table = capsys.readouterr().out
    assert table.count("ada") == 2 and "bob" not in table

    first = aggregated[0]
    assert main(["show", "--stack", STACK, first["request_id"]]) == 0
    shown = capsys.readouterr().out
    assert "gpt-4o" in shown and "--- request ---\n[user]\nhi\n" in shown  # the body, read from the S3 object
    assert main(["show", "--stack", STACK, first["request_id"], "--raw"]) == 0
    assert '"content": "hi"' in capsys.readouterr().out
    assert main(["show", "--stack", STACK, "no-such-id"]) == 1
    assert "no request with id 'no-such-id'" in capsys.readouterr().err

    assert main(["stats", "--stack", STACK, "--by", "user", "--since", "1d", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["total"]["requests"] == 3 and stats["total"]["errors"] == 1
    assert {g["key"]: g["requests"] for g in stats["groups"]} == {"ada": 2, "bob": 1}
    assert stats["total"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] or 0 for r in aggregated))

    assert main(["prompts", "--stack", STACK, "about", "--json"]) == 0
    (version,) = json.loads(capsys.readouterr().out)
    assert version["template"] == "[user]\nTell me about {{t}}" and version["requests"] == 1
