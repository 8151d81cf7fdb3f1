"""template.yaml: lints clean, validates, and matches the code's names (its build: test_artifacts.py)."""

from __future__ import annotations

import pytest
from relaylog.aws import layout
from relaylog.store.schema import COLUMNS

from tests.support.sam import ROOT, load_template, run, tool, transformed

GLUE_TYPES = {"VARCHAR": "string", "BIGINT": "bigint", "DOUBLE": "double", "BOOLEAN": "boolean",
              "MAP(VARCHAR, VARCHAR)": "map<string,string>"}  # fmt: skip


def test_cfn_lint_passes() -> None:
    result = run([tool("cfn-lint"), "template.yaml"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint_passes() -> None:
    result = run([tool("sam"), "validate", "--lint"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_transform_makes_the_url_public_and_streaming() -> None:
    resources = transformed()["Resources"]
    url = resources["ProxyFunctionUrl"]["Properties"]
    assert (url["AuthType"], url["InvokeMode"]) == ("NONE", "RESPONSE_STREAM")
    permissions = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"]
    # Function URLs created since October 2025 need both grants; SAM writes them only for a literal NONE.
    assert {"Action": "lambda:InvokeFunctionUrl", "FunctionName": {"Ref": "ProxyFunction"}, "Principal": "*",
            "FunctionUrlAuthType": "NONE"} in permissions  # fmt: skip
    assert {"Action": "lambda:InvokeFunction", "FunctionName": {"Ref": "ProxyFunction"}, "Principal": "*",
            "InvokedViaFunctionUrl": True} in permissions  # fmt: skip
    query = resources["QueryFunctionUrl"]["Properties"]
    assert query["AuthType"] == "NONE" and query.get("InvokeMode", "BUFFERED") == "BUFFERED"  # Mangum answers whole
    assert {"Action": "lambda:InvokeFunctionUrl", "FunctionName": {"Ref": "QueryFunction"}, "Principal": "*",
            "FunctionUrlAuthType": "NONE"} in permissions  # fmt: skip
    assert {"Action": "lambda:InvokeFunction", "FunctionName": {"Ref": "QueryFunction"}, "Principal": "*",
            "InvokedViaFunctionUrl": True} in permissions  # fmt: skip
    assert len(permissions) == 4  # nothing else may invoke the functions


def test_resource_names_match_the_code() -> None:
    resources = load_template()["Resources"]
    proxy = resources["ProxyFunction"]["Properties"]
    env = proxy["Environment"]["Variables"]
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/var/task/relaylog-bootstrap"
    assert (ROOT / proxy["CodeUri"] / "relaylog-bootstrap").exists()
    assert {layout.ENV_BUCKET, layout.ENV_TABLE, layout.ENV_FIREHOSE_STREAM} <= set(env)
    assert proxy["FunctionUrlConfig"] == {"AuthType": "NONE", "InvokeMode": "RESPONSE_STREAM"}
    assert "VpcConfig" not in proxy  # Function URL streaming does not work from a VPC
    aggregator = resources["AggregatorFunction"]["Properties"]
    assert (ROOT / aggregator["CodeUri"] / "app.py").exists()
    assert {layout.ENV_BUCKET, layout.ENV_TABLE, layout.ENV_HOURLY_TTL_DAYS} <= set(
        aggregator["Environment"]["Variables"]
    )
    assert aggregator["Events"]["Objects"]["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    firehose = resources["DeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"]
    assert firehose["Prefix"].startswith(layout.RAW_PREFIX) and firehose["CompressionFormat"] == "GZIP"
    assert firehose["ErrorOutputPrefix"].startswith(layout.ERRORS_PREFIX)
    rules = resources["DataBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert {r["Filter"]["S3Key"]["Rules"][0]["Value"] for r in rules} == {layout.RAW_PREFIX, layout.SPOOL_PREFIX}
    # Only our bucket may send to the queue: the policy builds the bucket's name the same way.
    bucket_name = resources["DataBucket"]["Properties"]["BucketName"]["Sub"]
    policy = resources["ObjectsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    source = policy["Condition"]["ArnEquals"]["aws:SourceArn"]["Sub"]
    assert source[0] == "arn:${AWS::Partition}:s3:::" + bucket_name[0] and source[1] == bucket_name[1]
    table = resources["Table"]["Properties"]
    assert table["TimeToLiveSpecification"]["AttributeName"] == layout.TTL_ATTRIBUTE
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def _grants(function: str) -> set[tuple[str, str]]:
    statements = load_template()["Resources"][function]["Properties"]["Policies"][0]["Statement"]
    granted = set()
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            for resource in resources:
                granted.add((action, str(resource.get("Sub", resource.get("GetAtt")))))
    return granted


def test_each_function_may_do_only_its_job() -> None:
    bucket = "${DataBucket.Arn}/"
    assert _grants("ProxyFunction") == {
        ("firehose:PutRecordBatch", "DeliveryStream.Arn"),
        ("s3:PutObject", bucket + layout.BODIES_PREFIX + "*"),
        ("s3:PutObject", bucket + layout.SPOOL_PREFIX + "*"),
        ("dynamodb:Query", "Table.Arn"),
        # The response cache (items, and large entries in S3) and the rate-limit counters.
        ("dynamodb:GetItem", "Table.Arn"),
        ("dynamodb:PutItem", "Table.Arn"),
        ("dynamodb:UpdateItem", "Table.Arn"),
        ("s3:GetObject", bucket + layout.CACHE_PREFIX + "*"),
        ("s3:PutObject", bucket + layout.CACHE_PREFIX + "*"),
    }
    assert _grants("AggregatorFunction") == {
        ("s3:GetObject", bucket + layout.RAW_PREFIX + "*"),
        ("s3:GetObject", bucket + layout.SPOOL_PREFIX + "*"),
        ("s3:PutObject", bucket + layout.CURATED_PREFIX + "*"),
        ("s3:GetObject", bucket + layout.BODIES_PREFIX + "*"),
        ("dynamodb:UpdateItem", "Table.Arn"),
        ("dynamodb:PutItem", "Table.Arn"),
        ("dynamodb:ConditionCheckItem", "Table.Arn"),
        ("dynamodb:BatchWriteItem", "Table.Arn"),
    }
    assert _grants("QueryFunction") == {
        ("s3:GetObject", bucket + layout.RAW_PREFIX + "*"),
        ("s3:GetObject", bucket + layout.SPOOL_PREFIX + "*"),
        ("s3:GetObject", bucket + layout.BODIES_PREFIX + "*"),
        ("dynamodb:GetItem", "Table.Arn"),
        ("dynamodb:Query", "Table.Arn"),
        ("dynamodb:BatchGetItem", "Table.Arn"),
        ("dynamodb:UpdateItem", "Table.Arn"),
        ("dynamodb:Query", "${Table.Arn}/index/*"),
    }


def test_the_query_function_serves_the_dashboard_and_api_from_its_url() -> None:
    template = load_template()
    query = template["Resources"]["QueryFunction"]["Properties"]
    assert (ROOT / query["CodeUri"] / "app.py").exists() and query["Handler"] == "app.handler"
    assert "mangum" in (ROOT / query["CodeUri"] / "requirements.txt").read_text()
    assert query["FunctionUrlConfig"] == {"AuthType": "NONE"}
    assert (query["MemorySize"], query["Timeout"], query["Runtime"]) == (512, 30, "python3.12")
    env = query["Environment"]["Variables"]
    assert {layout.ENV_BUCKET, layout.ENV_TABLE, layout.ENV_HOURLY_TTL_DAYS, layout.ENV_INDEX_DAYS} <= set(env)
    assert query["Layers"] == [{"Ref": "SharedLayer"}]
    outputs = template["Outputs"]
    assert outputs["DashboardUrl"]["Value"] == {"Sub": "${QueryFunctionUrl.FunctionUrl}dashboard/"}
    assert outputs["QueryApiUrl"]["Value"] == {"Sub": "${QueryFunctionUrl.FunctionUrl}api/v1/"}


@pytest.mark.parametrize(("table", "skipped"), [("RequestsTable", {"dt"}), ("RawRequestsTable", {"dt", "hour"})])
def test_glue_columns_are_the_record_schema(table: str, skipped: set[str]) -> None:
    described = load_template()["Resources"][table]["Properties"]["TableInput"]
    columns = [(c["Name"], c["Type"]) for c in described["StorageDescriptor"]["Columns"]]
    assert columns == [(name, GLUE_TYPES[kind]) for name, kind in COLUMNS.items() if name not in skipped]
    assert described["Parameters"]["projection.enabled"] == "true"  # partitions never need MSCK REPAIR


def test_cache_objects_outlive_the_longest_cache_ttl_and_no_more() -> None:
    from relaylog.gateway.cache_policy import MAX_TTL_S

    rules = load_template()["Resources"]["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (cache,) = [rule for rule in rules if rule["Prefix"] == layout.CACHE_PREFIX]
    assert cache["Status"] == "Enabled"
    # An entry is served until its item's TTL (at most MAX_TTL_S); its object must still be there.
    assert cache["ExpirationInDays"] * 86400 > MAX_TTL_S
    assert cache["ExpirationInDays"] == MAX_TTL_S // 86400 + 1
    # No other rule reaches into cache/ and removes entries early.
    assert not [r for r in rules if r is not cache and layout.CACHE_PREFIX.startswith(r["Prefix"])]
