"""template.yaml: lints clean, validates, and matches the code's names (its build: test_artifacts.py)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from relaylog.aggregate.process import process_object
from relaylog.aws import layout
from relaylog.gateway.cache.dynamo import DynamoCacheStore
from relaylog.gateway.counters.dynamo import DynamoCounters
from relaylog.keys.dynamo import DynamoKeyStore
from relaylog.otel.aws import ENV_HEADERS_ARN
from relaylog.query.dynamo.backend import DynamoBackend
from relaylog.runtime.invocations import DEADLINE_MARGIN_S
from relaylog.store.schema import COLUMNS

from tests.support.aws import Stack
from tests.support.records import make_record
from tests.support.sam import ROOT, deployed, load_template, run, tool, transformed
from tests.support.sam import TEMPLATE as TEMPLATE_PATH
from tests.test_gateway_aws import _entry

pytestmark = [pytest.mark.sam, pytest.mark.aws]

GLUE_TYPES = {"VARCHAR": "string", "BIGINT": "bigint", "DOUBLE": "double", "BOOLEAN": "boolean",
              "MAP(VARCHAR, VARCHAR)": "map<string,string>"}  # fmt: skip


def test_cfn_lint_passes() -> None:
    result = run([tool("cfn-lint"), "template.yaml"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint_passes() -> None:
    result = run([tool("sam"), "validate", "--lint"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_transform_makes_the_url_public_and_streaming() -> None:
    resources = deployed()["Resources"]  # classic capacity; both: test_template_capacity.py
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


def _statements(function: str) -> list[dict[str, Any]]:
    """The statements of the function's first policy, what its data needs (inline, or a managed policy
    of the template's own); a later one is conditional (the aggregator's span-export secret)."""
    resources = load_template()["Resources"]
    policy = resources[function]["Properties"]["Policies"][0]
    if "Ref" in policy:
        policy = resources[policy["Ref"]]["Properties"]["PolicyDocument"]
    # As deployed with the defaults: a statement under a condition (the Bedrock one, BedrockModels
    # empty) is not granted; test_template_bedrock.py works that one out for each value.
    statements: list[dict[str, Any]] = [statement for statement in policy["Statement"] if "If" not in statement]
    return statements


def _conditional_statements(function: str) -> list[str]:
    """The conditions the function's policy grants statements under."""
    resources = load_template()["Resources"]
    policy = resources[function]["Properties"]["Policies"][0]
    if "Ref" in policy:
        policy = resources[policy["Ref"]]["Properties"]["PolicyDocument"]
    return [statement["If"][0] for statement in policy["Statement"] if "If" in statement]


def _grants(function: str) -> set[tuple[str, str]]:
    granted = set()
    for statement in _statements(function):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            for resource in resources:
                granted.add((action, str(resource.get("Sub", resource.get("GetAtt")))))
    return granted


def test_each_function_may_do_only_its_job() -> None:
    bucket = "${DataBucket.Arn}/"
    assert _grants("ProxyManagedFunction") == _grants("ProxyFunction")  # one policy, both capacities
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
        # Only a day's shard count and its index (LeadingKeys; aggregate/shards.py).
        ("dynamodb:GetItem", "Table.Arn"),
        ("dynamodb:Query", "Table.Arn"),
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
    assert (query["MemorySize"], query["Timeout"], query["Runtime"]) == (512, 30, "python3.13")
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
    (cache,) = [rule for rule in rules if rule.get("Prefix") == layout.CACHE_PREFIX]
    assert cache["Status"] == "Enabled"
    # An entry is served until its item's TTL (at most MAX_TTL_S); its object must still be there.
    assert cache["ExpirationInDays"] * 86400 > MAX_TTL_S
    assert cache["ExpirationInDays"] == MAX_TTL_S // 86400 + 1
    # No other rule reaches into cache/ and removes entries early.
    expiring = [r for r in rules if r is not cache and "ExpirationInDays" in r]
    assert not [r for r in expiring if layout.CACHE_PREFIX.startswith(r.get("Prefix", ""))]


# -- what a careful operator asks of the stack ---------------------------------------------------

NO_VALUE = object()  # a property left out (AWS::NoValue)


def _resolve(node: Any, parameters: dict[str, str], conditions: dict[str, Any]) -> Any:
    """A template value with these parameter values: Ref to a parameter, If, Equals, Not and Or
    resolved (the intrinsics the parameters' conditions use); other values as they are."""
    if isinstance(node, list):
        return [_resolve(item, parameters, conditions) for item in node]
    if not isinstance(node, dict) or len(node) != 1:
        return node
    ((name, args),) = node.items()
    if name == "Ref":
        return parameters.get(args, NO_VALUE if args == "AWS::NoValue" else node)
    if name == "Condition":
        return _resolve(conditions[args], parameters, conditions)
    if name == "If":
        chosen = args[1] if _resolve(conditions[args[0]], parameters, conditions) else args[2]
        return _resolve(chosen, parameters, conditions)
    if name == "Equals":
        first, second = _resolve(args, parameters, conditions)
        return str(first) == str(second)
    if name == "Not":
        return not _resolve(args[0], parameters, conditions)
    if name == "Or":
        return any(_resolve(args, parameters, conditions))
    if name == "And":
        return all(_resolve(args, parameters, conditions))
    return node


def _rendered(resource: str, prop: str, **values: str) -> Any:
    """`prop` of `resource` (a dotted path) as CloudFormation would set it with these parameter values
    (the others at their defaults)."""
    template = load_template()
    parameters = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()} | values
    node: Any = template["Resources"][resource]
    for step in prop.split("."):
        node = node.get(step, NO_VALUE) if isinstance(node, dict) else NO_VALUE
    return _resolve(node, parameters, template.get("Conditions", {}))


def _accepts(parameter: str, value: str) -> bool:
    """Whether CloudFormation takes `value` for `parameter` (AllowedPattern: a whole-value match)."""
    spec = load_template()["Parameters"][parameter]
    return re.fullmatch(spec["AllowedPattern"], value) is not None


@pytest.mark.parametrize(("function", "parameter"), [("ProxyFunction", "ProxyReservedConcurrency"),
                                                     ("QueryFunction", "QueryReservedConcurrency")])  # fmt: skip
def test_concurrency_caps_are_reserved_only_when_set(function: str, parameter: str) -> None:
    prop = "Properties.ReservedConcurrentExecutions"
    # Reserved concurrency 0 throttles every call: 0, like the empty default, reserves nothing.
    assert _rendered(function, prop) is NO_VALUE
    assert _rendered(function, prop, **{parameter: "0"}) is NO_VALUE
    assert _rendered(function, prop, **{parameter: "25"}) == "25"
    assert [v for v in ("", "0", "1", "25", "1000") if _accepts(parameter, v)] == ["", "0", "1", "25", "1000"]
    assert not [v for v in ("00", "025", "-1", "x", "2.5", " 5") if _accepts(parameter, v)]
    # The SAM transform hands the choice to CloudFormation as it is.
    assert transformed()["Resources"][function]["Properties"]["ReservedConcurrentExecutions"] == {
        "Fn::If": [f"{function.removesuffix('Function')}ConcurrencyCapped", {"Ref": parameter}, {"Ref": "AWS::NoValue"}]
    }


def test_the_aggregator_reads_the_queue_with_bounded_concurrency() -> None:
    parameter = load_template()["Parameters"]["AggregatorMaxConcurrency"]
    assert parameter["MinValue"] == 2  # the least SQS event sources take
    assert 2 <= parameter["Default"] <= parameter["MaxValue"] <= 1000
    mapping = transformed()["Resources"]["AggregatorFunctionObjects"]["Properties"]
    assert mapping["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "AggregatorMaxConcurrency"}}
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_the_proxy_timeout_is_a_parameter_that_bounds_a_call() -> None:
    parameter = load_template()["Parameters"]["ProxyTimeout"]
    assert parameter["MaxValue"] == 900 and 60 <= parameter["Default"] <= 900
    assert _rendered("ProxyFunction", "Properties.Timeout") == str(parameter["Default"])
    assert _rendered("ProxyFunction", "Properties.Timeout", ProxyTimeout="120") == "120"
    # The runtime stops a call this long before the deadline; the smallest timeout leaves room.
    assert parameter["MinValue"] > 10 * DEADLINE_MARGIN_S


def test_the_data_outlives_the_stack_and_the_bucket_takes_only_https() -> None:
    resources = load_template()["Resources"]
    for name in ("DataBucket", "Table"):
        assert (resources[name]["DeletionPolicy"], resources[name]["UpdateReplacePolicy"]) == ("Retain", "Retain")
    (statement,) = resources["DataBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert resources["DataBucketPolicy"]["Properties"]["Bucket"] == {"Ref": "DataBucket"}
    assert (statement["Effect"], statement["Principal"], statement["Action"]) == ("Deny", "*", "s3:*")
    assert statement["Resource"] == [{"GetAtt": "DataBucket.Arn"}, {"Sub": "${DataBucket.Arn}/*"}]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    rules = resources["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (abort,) = [rule for rule in rules if "AbortIncompleteMultipartUpload" in rule]
    assert abort["Status"] == "Enabled" and "Prefix" not in abort and "Filter" not in abort  # the whole bucket
    assert abort["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1


@pytest.mark.parametrize("capacity", ["Lambda", "ManagedInstances"])
def test_every_function_and_firehose_log_to_groups_with_a_retention(capacity: str) -> None:
    resources = deployed(ProxyCapacity=capacity)["Resources"]
    functions = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::Lambda::Function"}
    proxy = "ProxyFunction" if capacity == "Lambda" else "ProxyManagedFunction"
    assert set(functions) == {proxy, "AggregatorFunction", "QueryFunction"}
    groups = set()
    for properties in functions.values():
        group = properties["LoggingConfig"]["LogGroup"]["Ref"]
        assert resources[group]["Type"] == "AWS::Logs::LogGroup"
        assert resources[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        groups.add(group)
    assert len(groups) == 3  # one each
    firehose = resources["DeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"]
    logging = firehose["CloudWatchLoggingOptions"]
    assert logging["Enabled"] is True
    stream = resources[logging["LogStreamName"]["Ref"]]["Properties"]
    assert logging["LogGroupName"] == stream["LogGroupName"] == {"Ref": "DeliveryLogGroup"}
    assert resources["DeliveryLogGroup"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    statements = resources["DeliveryRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert {"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": {"Fn::GetAtt": ["DeliveryLogGroup", "Arn"]}} in statements  # fmt: skip


def test_dead_letters_raise_an_alarm_that_mails_only_when_an_address_is_given() -> None:
    template = load_template()
    alarm = template["Resources"]["DeadLettersAlarm"]["Properties"]
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": {"GetAtt": "ObjectsDeadLetterQueue.QueueName"}}]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)  # one message is enough
    assert alarm["TreatMissingData"] == "notBreaching"
    assert _rendered("DeadLettersAlarm", "Properties.AlarmActions") is NO_VALUE
    assert _rendered("DeadLettersAlarm", "Properties.AlarmActions", AlarmEmail="ops@example.com") == [
        {"Ref": "AlarmTopic"}
    ]
    conditions = template["Conditions"]
    for name in ("AlarmTopic", "AlarmSubscription"):
        condition = {"Condition": template["Resources"][name]["Condition"]}
        assert _resolve(condition, {"AlarmEmail": ""}, conditions) is False
        assert _resolve(condition, {"AlarmEmail": "ops@example.com"}, conditions) is True
    subscription = template["Resources"]["AlarmSubscription"]["Properties"]
    assert (subscription["Protocol"], subscription["Endpoint"]) == ("email", {"Ref": "AlarmEmail"})
    assert _accepts("AlarmEmail", "") and _accepts("AlarmEmail", "ops@example.com")
    assert not _accepts("AlarmEmail", "not an address")


# -- OpenTelemetry: the aggregator's span export, and its one secret --------------------------------

SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:relaylog/otel-AbCdEf"
PARAMETER = "arn:aws:ssm:us-east-1:123456789012:parameter/relaylog/otel-headers"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ENDPOINT = "https://api.honeycomb.io"
READ = {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue", "ssm:GetParameter"],
        "Resource": {"Ref": "OtelHeadersSecretArn"}}  # fmt: skip
VIA = [{"Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}, {"Sub": "ssm.${AWS::Region}.amazonaws.com"}]
DECRYPT = {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": {"Ref": "OtelHeadersKeyArn"},
           "Condition": {"StringEquals": {"kms:ViaService": VIA}}}  # fmt: skip


def _variables(function: str) -> dict[str, Any]:
    variables: dict[str, Any] = load_template()["Resources"][function]["Properties"]["Environment"]["Variables"]
    return variables


def _otel_statements(**values: str) -> list[dict[str, Any]]:
    """The aggregator's statements beyond its data's, as CloudFormation would create them."""
    policies = _rendered("AggregatorFunction", "Properties.Policies", **values)
    return [statement for policy in policies[1:] if policy is not NO_VALUE for statement in policy["Statement"]]


def test_span_export_is_off_by_default_and_configured_on_the_aggregator_only() -> None:
    template = load_template()
    parameters = template["Parameters"]
    assert parameters["OtelEndpoint"]["Default"] == "" and parameters["OtelHeadersSecretArn"]["Default"] == ""
    env = _variables("AggregatorFunction")
    # An empty endpoint is export off (relaylog.config.otel_from_env); only the ARN of the headers
    # is in the environment, never the headers.
    assert {name: value for name, value in env.items() if name.startswith("OTEL_") or name == ENV_HEADERS_ARN} == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": {"Ref": "OtelEndpoint"},
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",  # the only exporter the package holds
        "OTEL_SERVICE_NAME": {"Ref": "OtelServiceName"},
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": {"Ref": "OtelCaptureContent"},
        ENV_HEADERS_ARN: {"Ref": "OtelHeadersSecretArn"},
    }
    assert parameters["OtelCaptureContent"]["AllowedValues"] == ["false", "true"]
    for function in ("ProxyFunction", "QueryFunction"):
        assert not [name for name in _variables(function) if name.startswith("OTEL_") or name == ENV_HEADERS_ARN]
        actions = {action for statement in _statements(function) for action in _as_list(statement["Action"])}
        assert not [a for a in actions if a.split(":")[0] in ("secretsmanager", "ssm", "kms")]
        # Beyond what its data needs, the proxy may only be granted Bedrock (issue 18), never OTel.
        assert _conditional_statements(function) == (["BedrockAllowed"] if function == "ProxyFunction" else [])
    assert _otel_statements() == []


def test_the_aggregator_may_read_exactly_the_one_secret_and_decrypt_only_with_its_own_key() -> None:
    # Export off: no grant, even with an ARN given.
    assert _otel_statements(OtelHeadersSecretArn=SECRET, OtelHeadersKeyArn=KEY) == []
    assert _otel_statements(OtelEndpoint=ENDPOINT) == []  # no headers: nothing to read
    for arn in (SECRET, PARAMETER):
        # The AWS managed keys (aws/secretsmanager, aws/ssm) let the account's principals decrypt
        # through their service: no kms grant.
        assert _otel_statements(OtelEndpoint=ENDPOINT, OtelHeadersSecretArn=arn) == [READ]
        given = {"OtelEndpoint": ENDPOINT, "OtelHeadersSecretArn": arn}
        assert _otel_statements(**given, OtelHeadersKeyArn=KEY) == [READ, DECRYPT]
        # One resource, the ARN itself (no wildcard), and of the two actions only its own service's
        # can ever match it.
        service = arn.split(":")[2]
        assert [a for a in READ["Action"] if a.startswith(service + ":")] == [
            {"secretsmanager": "secretsmanager:GetSecretValue", "ssm": "ssm:GetParameter"}[service]
        ]
    assert _otel_statements(OtelEndpoint=ENDPOINT, OtelHeadersKeyArn=KEY) == []  # a key without a secret


def test_the_otel_parameters_take_only_what_they_are_for() -> None:
    urls = ("", ENDPOINT, "https://otlp-gateway.grafana.net/otlp", "https://cloud.langfuse.com/api/public/otel")
    assert [v for v in urls if _accepts("OtelEndpoint", v)] == list(urls)
    # Plain HTTP would carry the collector's key in clear; a comma or a space is no URL.
    assert not [v for v in ("http://collector:4318", "api.honeycomb.io", "https://a b", "https://a,b")
                if _accepts("OtelEndpoint", v)]  # fmt: skip
    gov = SECRET.replace("arn:aws:", "arn:aws-us-gov:").replace("us-east-1", "us-gov-west-1")
    arns = ("", SECRET, PARAMETER, gov)
    assert [v for v in arns if _accepts("OtelHeadersSecretArn", v)] == list(arns)
    others = ("relaylog/otel", "arn:aws:s3:::bucket/headers", "x-honeycomb-team=KEY",
              "arn:aws:ssm:us-east-1:123456789012:document/x")  # fmt: skip
    assert not [v for v in others if _accepts("OtelHeadersSecretArn", v)]
    assert _accepts("OtelHeadersKeyArn", KEY) and _accepts("OtelHeadersKeyArn", "")
    # IAM matches kms:Decrypt on the key's ARN, never on an alias's.
    assert not _accepts("OtelHeadersKeyArn", "arn:aws:kms:us-east-1:123456789012:alias/aws/ssm")


def _with_defaults(path: Path, **values: str) -> Path:
    """template.yaml with these parameter defaults: what CloudFormation checks when they are given."""
    text = TEMPLATE_PATH.read_text()
    for name, value in values.items():
        start = text.index(f"\n  {name}:\n")
        default = text.index('Default: ""', start)
        text = text[:default] + f'Default: "{value}"' + text[default + len('Default: ""') :]
    path.write_text(text)
    return path


@pytest.mark.parametrize("values", [
    {"OtelEndpoint": ENDPOINT, "OtelHeadersSecretArn": SECRET},
    {"OtelEndpoint": ENDPOINT, "OtelHeadersSecretArn": PARAMETER, "OtelHeadersKeyArn": KEY},
], ids=["secret", "parameter-and-key"])  # fmt: skip
def test_lint_and_validate_pass_with_the_otel_parameters_given(values: dict[str, str], tmp_path: Path) -> None:
    # cfn-lint's --parameters is not applied to a SAM template (its transform drops them): the
    # values go in as the defaults, which cfn-lint checks against each parameter's pattern too.
    given = _with_defaults(tmp_path / "template.yaml", **values)
    assert load_template()["Parameters"]["OtelEndpoint"]["Default"] == ""  # the real one untouched
    result = run([tool("cfn-lint"), str(given)])
    assert result.returncode == 0, result.stdout + result.stderr
    result = run([tool("sam"), "validate", "--lint", "-t", str(given)])
    assert result.returncode == 0, result.stdout + result.stderr
    bad = _with_defaults(tmp_path / "bad.yaml", **{**values, "OtelHeadersKeyArn": "alias/aws/ssm"})
    assert run([tool("cfn-lint"), str(bad)]).returncode != 0  # the check above can fail


# -- DynamoDB: each internet-facing role writes only its own item kinds ----------------------------

# The item kinds each role may touch, from the code's own names (relaylog/aws/layout.py).
PROXY_ITEMS = {
    "Query": {layout.KEY_PK},  # the relaylog keys
    "GetItem": {layout.cache_pk("*"), layout.rate_pk("*")},
    "PutItem": {layout.cache_pk("*")},
    "UpdateItem": {layout.rate_pk("*")},
}
QUERY_WRITES = {"UpdateItem": {layout.score_pk("*")}}
DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "PartiQLInsert", "PartiQLUpdate",
                   "PartiQLDelete", "ImportTable", "RestoreTableToPointInTime")  # fmt: skip


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _leading_key_patterns(statement: dict[str, Any]) -> set[str] | None:
    """The dynamodb:LeadingKeys values a statement allows (IAM wildcards), None without a condition."""
    if "Condition" not in statement:
        return None
    ((operator, tests),) = statement["Condition"].items()
    # ForAllValues: every key the request names must match. Only these two forms are understood here.
    assert operator in ("ForAllValues:StringLike", "ForAllValues:StringEquals"), operator
    ((name, values),) = tests.items()
    assert name == "dynamodb:LeadingKeys"
    return set(values) if operator.endswith("Like") else {v.replace("*", "[*]") for v in values}


def _allows(function: str, operation: str, resource: str, leading_keys: list[str]) -> bool:
    """Whether the function's policy lets it call `operation` on `resource` ("Table.Arn" or the
    indexes) for items with these partition keys."""
    for statement in _statements(function):
        if statement["Effect"] != "Allow" or f"dynamodb:{operation}" not in _as_list(statement["Action"]):
            continue
        if resource not in [str(r.get("Sub", r.get("GetAtt"))) for r in _as_list(statement["Resource"])]:
            continue
        patterns = _leading_key_patterns(statement)
        if patterns is None:
            return True
        if leading_keys and all(any(fnmatchcase(k, p) for p in patterns) for k in leading_keys):
            return True
    return False


@pytest.mark.parametrize(("function", "expected"), [("ProxyFunction", PROXY_ITEMS), ("QueryFunction", QUERY_WRITES)])
def test_internet_facing_roles_write_only_their_own_item_kinds(function: str, expected: dict[str, set[str]]) -> None:
    conditioned: dict[str, set[str]] = {}
    for statement in _statements(function):
        for action in _as_list(statement["Action"]):
            operation = action.removeprefix("dynamodb:")
            if operation in DYNAMODB_WRITES:
                patterns = _leading_key_patterns(statement)
                assert patterns is not None, f"{function} may {operation} any item"
            if (patterns := _leading_key_patterns(statement)) is not None:
                conditioned[operation] = conditioned.get(operation, set()) | patterns
    assert conditioned == expected
    for operation in DYNAMODB_WRITES:  # a key item is the way in: neither function may make one
        assert not _allows(function, operation, "Table.Arn", [layout.KEY_PK])


class _Recorder:
    """Every DynamoDB call a client makes: (operation, resource, partition keys named)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[tuple[str, str, list[str]]] = []
        client.meta.events.register("provide-client-params.dynamodb", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        operation = model.name
        if operation == "Query":
            placeholder = params["KeyConditionExpression"].split(" AND ")[0].split("=")[1].strip()
            keys = [params["ExpressionAttributeValues"][placeholder]["S"]]
        elif operation == "BatchGetItem":
            keys = [key["pk"]["S"] for wanted in params["RequestItems"].values() for key in wanted["Keys"]]
        elif operation == "BatchWriteItem":
            keys = [put["PutRequest"]["Item"]["pk"]["S"] for puts in params["RequestItems"].values() for put in puts]
        elif operation == "TransactWriteItems":
            # IAM has no action for the transaction: it authorises each of its actions on its own.
            for action in params["TransactItems"]:
                ((kind, details),) = action.items()
                operation = "ConditionCheckItem" if kind == "ConditionCheck" else f"{kind}Item"
                self.calls.append((operation, "Table.Arn", [(details.get("Key") or details["Item"])["pk"]["S"]]))
            return
        else:
            keys = [(params.get("Key") or params["Item"])["pk"]["S"]]
        self.calls.append((operation, "${Table.Arn}/index/*" if "IndexName" in params else "Table.Arn", keys))

    def take(self) -> list[tuple[str, str, list[str]]]:
        calls, self.calls = self.calls, []
        return calls


def test_the_calls_the_code_makes_are_the_calls_its_role_allows(aws_stack: Stack) -> None:
    """The stores each function runs, under moto, with every DynamoDB call checked against the policy."""
    dynamodb, s3 = aws_stack.client("dynamodb"), aws_stack.client("s3")
    recorder = _Recorder(dynamodb)
    table = aws_stack.table
    # The proxy: keys, the response cache (one entry in its item, one in S3), the rate-limit counters.
    DynamoKeyStore(table, dynamodb).verify("rl-not-a-key")
    cache = DynamoCacheStore(table, aws_stack.bucket, dynamodb, s3, inline_max=1000)
    asyncio.run(cache.put("small", 0, _entry(size=100)))
    asyncio.run(cache.put("large", 0, _entry(size=5000)))
    assert asyncio.run(cache.get("small", 0)) is not None and asyncio.run(cache.get("large", 0)) is not None
    counters = DynamoCounters(table, dynamodb)
    asyncio.run(counters.take("key_1:requests", 1, 10, time.time() + 60))
    asyncio.run(counters.take("key_1:requests", 20, 10, time.time() + 60))  # more than the limit: a read
    counters.add("key_1:cents", 3, time.time() + 60)
    proxy_calls = recorder.take()
    assert {operation for operation, _, _ in proxy_calls} == set(PROXY_ITEMS)
    assert [call for call in proxy_calls if not _allows("ProxyFunction", *call)] == []
    # The query function: reading a request and storing a score on it.
    request_id = str(uuid.uuid4())
    item = {"pk": {"S": layout.requests_pk("2026-01-02")}, "request_id": {"S": request_id},
            "sk": {"S": layout.requests_sk("2026-01-02T03:04:05.000000Z", request_id)}}  # fmt: skip
    aws_stack.client("dynamodb").put_item(TableName=table, Item=item)
    DynamoBackend(table, aws_stack.bucket, dynamodb, s3).add_scores(request_id, {"helpful": True}, None)
    query_calls = recorder.take()
    assert "UpdateItem" in {operation for operation, _, _ in query_calls}
    assert [call for call in query_calls if not _allows("QueryFunction", *call)] == []
    # The aggregator: an object indexed (a day's shard count decided), rolled up and written.
    record = make_record(datetime.now(UTC), prompt_id="p1")
    aws_stack.put_raw_object("raw/dt=x/hour=00/one.gz", [record])
    process_object(s3, dynamodb, table, aws_stack.bucket, "raw/dt=x/hour=00/one.gz")
    aggregator_calls = recorder.take()
    assert {"GetItem", "Query", "PutItem", "UpdateItem"} <= {c[0] for c in aggregator_calls}
    assert [call for call in aggregator_calls if not _allows("AggregatorFunction", *call)] == []
    # `relaylog keys create` and `revoke`: an operator's calls, which neither function may make.
    store = DynamoKeyStore(table, dynamodb)
    _, info = store.create("ops")
    store.revoke(info.key_id)
    writes = [call for call in recorder.take() if call[0] in DYNAMODB_WRITES]
    assert {operation for operation, _, _ in writes} == {"PutItem", "UpdateItem"}
    assert [call for call in writes if _allows("ProxyFunction", *call) or _allows("QueryFunction", *call)] == []
