"""`--stack NAME`: keys in the stack's DynamoDB table and saved queries in its Athena workgroup."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto.athena.models import QueryResults, athena_backends
from relaylog.aws.keys import DynamoKeyStore
from relaylog.cli import main

from tests.support.aws import REGION, Stack
from tests.test_queries import QUERIES

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
    assert json.loads(capsys.readouterr().out) == [{"user_id": "alice", "cost_usd": "0.26"}]
    (execution,) = _athena().executions.values()
    assert execution.query == QUERIES["cost_by_user"]
    assert execution.context["Database"] == "relaylog_prod" and execution.workgroup.name == "primary"


def test_ad_hoc_sql_and_errors(deployed: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", "--stack", STACK, "SELECT 1"]) == 0
    (execution,) = _athena().executions.values()
    assert execution.query == "SELECT 1"
    assert main(["query", "--stack", "no-such-stack", "errors"]) == 1
    assert "no-such-stack" in capsys.readouterr().err
    assert main(["keys", "list", "--stack", STACK, "--data-dir", "/tmp/x"]) == 2
