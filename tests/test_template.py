"""template.yaml: lints clean, validates, builds without Docker, and matches the code's names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from relaylog.aws import layout
from relaylog.store.schema import COLUMNS

from tests.support.sam import ROOT, load_template, run, tool

GLUE_TYPES = {"VARCHAR": "string", "BIGINT": "bigint", "DOUBLE": "double", "BOOLEAN": "boolean",
              "MAP(VARCHAR, VARCHAR)": "map<string,string>"}  # fmt: skip


def test_cfn_lint_passes() -> None:
    result = run([tool("cfn-lint"), "template.yaml"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_validate_lint_passes() -> None:
    result = run([tool("sam"), "validate", "--lint"])
    assert result.returncode == 0, result.stdout + result.stderr


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_sam_build_without_docker_gives_a_small_proxy(tmp_path: Path) -> None:
    build = tmp_path / "build"
    result = run([tool("sam"), "build", "--build-dir", str(build)])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wrapper = build / "ProxyFunction" / "relaylog-bootstrap"
    assert os.access(wrapper, os.X_OK)
    layer = build / "SharedLayer" / "python"
    assert (layer / "relaylog" / "runtime" / "loop.py").exists()
    assert (layer / "relaylog" / "queries" / "errors.sql").exists()
    assert not list(layer.glob("duckdb*")) and not list(layer.glob("uvicorn*"))  # aggregator-only / local-only
    assert list((build / "AggregatorFunction").glob("duckdb*"))
    proxy_mb = (_size(build / "ProxyFunction") + _size(build / "SharedLayer")) / 2**20
    assert proxy_mb < 40, f"proxy function + layer is {proxy_mb:.1f} MB unzipped"


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
    table = resources["Table"]["Properties"]
    assert table["TimeToLiveSpecification"]["AttributeName"] == layout.TTL_ATTRIBUTE
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


@pytest.mark.parametrize(("table", "skipped"), [("RequestsTable", {"dt"}), ("RawRequestsTable", {"dt", "hour"})])
def test_glue_columns_are_the_record_schema(table: str, skipped: set[str]) -> None:
    described = load_template()["Resources"][table]["Properties"]["TableInput"]
    columns = [(c["Name"], c["Type"]) for c in described["StorageDescriptor"]["Columns"]]
    assert columns == [(name, GLUE_TYPES[kind]) for name, kind in COLUMNS.items() if name not in skipped]
    assert described["Parameters"]["projection.enabled"] == "true"  # partitions never need MSCK REPAIR
