"""The query function (functions/query/app.py) as Lambda runs it: Function URL events through Mangum into
the query API, answered from the moto stack the aggregator filled."""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from relaylog.aggregate.process import process_object
from relaylog.aws import layout
from relaylog.keys.dynamo import DynamoKeyStore
from relaylog.query import dashboard

from tests.support.aggregator import LambdaContext
from tests.support.aws import Stack
from tests.support.records import make_record

pytestmark = pytest.mark.aws

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "functions" / "query" / "app.py"
EVENT = json.loads((ROOT / "events" / "function_url_query.json").read_text())


@pytest.fixture
def query(aws_stack: Stack) -> Iterator[tuple[ModuleType, list[dict[str, Any]]]]:
    """The function loaded as Lambda loads it (its clients made at import, under moto), over four
    aggregated records."""
    start = datetime.now(UTC) - timedelta(hours=1)
    records = [make_record(start + timedelta(minutes=i), model=m) for i, m in enumerate(["gpt-4o-mini", "gpt-4o"] * 2)]
    key = layout.partition_path(layout.RAW_PREFIX, records[0]["dt"], records[0]["hour"]) + "records-1.gz"
    aws_stack.put_raw_object(key, records)
    process_object(aws_stack.client("s3"), aws_stack.client("dynamodb"), aws_stack.table, aws_stack.bucket, key)
    # The function points relaylog's loggers at its Powertools handler: undone for the tests after this one.
    logger = logging.getLogger("relaylog")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    spec = importlib.util.spec_from_file_location(f"query_app_{uuid.uuid4().hex}", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module, records
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


def _invoke(
    module: ModuleType, path: str, query: str = "", key: str | None = None, method: str = "GET", body: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    event = copy.deepcopy(EVENT)
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["rawQueryString"] = query
    event.pop("queryStringParameters")
    if key is not None:
        event["headers"]["authorization"] = f"Bearer {key}"
    if body is not None:
        event["body"] = body
        event["headers"]["content-type"] = "application/json"
    answer = module.handler(event, LambdaContext(function_name="relaylog-query"))
    assert not answer["isBase64Encoded"]
    return answer["statusCode"], answer["headers"], answer["body"].encode()


def test_the_api_refuses_calls_without_a_key_even_before_any_key_exists(query: tuple[ModuleType, Any]) -> None:
    module, _ = query
    status, headers, body = _invoke(module, EVENT["rawPath"], EVENT["rawQueryString"])
    assert status == 401 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["type"] == "unauthorized"
    assert _invoke(module, "/api/v1/requests", key="rl-not-a-key")[0] == 401


def test_a_key_created_in_the_table_opens_the_api(query: tuple[ModuleType, Any], aws_stack: Stack) -> None:
    module, records = query
    secret, _ = DynamoKeyStore(aws_stack.table, aws_stack.client("dynamodb")).create("dashboard")
    status, _, body = _invoke(module, EVENT["rawPath"], EVENT["rawQueryString"], key=secret)
    assert status == 200
    page = json.loads(body)
    expected = [r["request_id"] for r in records if r["model"] == "gpt-4o-mini"][::-1]
    assert [row["request_id"] for row in page["data"]] == expected and page["next_cursor"] is None
    request_id = records[0]["request_id"]
    status, _, body = _invoke(module, f"/api/v1/requests/{request_id}", key=secret)
    assert status == 200 and json.loads(body)["data"]["request_body"] == records[0]["request_body"]
    feedback = json.dumps({"rating": True, "comment": "good"})
    status, _, body = _invoke(
        module, f"/api/v1/requests/{request_id}/feedback", key=secret, method="POST", body=feedback
    )
    assert (status, json.loads(body)["data"]["scores"]) == (200, {"feedback": True})
    status, _, body = _invoke(module, "/api/v1/stats", "bucket=hour&by=model", key=secret)
    assert status == 200 and json.loads(body)["data"]["total"]["requests"] == len(records)


def test_what_aws_cannot_answer_is_a_json_refusal(query: tuple[ModuleType, Any], aws_stack: Stack) -> None:
    module, _ = query
    secret, _ = DynamoKeyStore(aws_stack.table, aws_stack.client("dynamodb")).create()
    status, _, body = _invoke(module, "/api/v1/requests", "search=hello", key=secret)
    assert status == 400 and json.loads(body)["error"]["type"] == "unsupported"
    for path in ("/api/v1/requests/no-such-id", "/api/v1/nothing-here"):
        status, _, body = _invoke(module, path, key=secret)
        assert status == 404 and json.loads(body)["error"]["type"] == "not_found"


def test_the_dashboard_is_served_without_a_key(query: tuple[ModuleType, Any]) -> None:
    module, _ = query
    status, headers, body = _invoke(module, "/dashboard/")
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert body == dashboard.files()["index.html"][1] and b"<title>relaylog</title>" in body
    assert "default-src 'self'" in headers["content-security-policy"]
    status, headers, _ = _invoke(module, "/dashboard/app.js")
    assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")


@pytest.mark.parametrize("path", ["/", "/v1/chat/completions", "/api", "/dashboard/no-such-file.js"])
def test_paths_outside_the_api_are_json_not_found(query: tuple[ModuleType, Any], path: str) -> None:
    module, _ = query
    status, headers, body = _invoke(module, path)
    assert (status, headers["content-type"]) == (404, "application/json")
    assert json.loads(body)["error"]["type"] == "not_found"
