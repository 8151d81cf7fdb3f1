"""Running SQL in the stack's Athena workgroup and reading the answer back."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .clients import make_client
from .stack import StackError


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]


_INTEGERS = frozenset({"tinyint", "smallint", "integer", "int", "bigint"})
_FLOATS = frozenset({"real", "float", "double"})


def _value(text: str | None, kind: str) -> Any:
    """Athena returns every value as text; numbers and booleans become Python values again."""
    if text is None:
        return None  # SQL NULL: Athena leaves VarCharValue out
    if kind in _INTEGERS:
        return int(text)
    if kind in _FLOATS:
        return float(text)
    if kind == "decimal":
        return Decimal(text)
    if kind == "boolean":
        return text == "true"
    return text


def run_query(
    sql: str,
    database: str,
    workgroup: str,
    client: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    timeout_s: float = 600,
) -> QueryResult:
    client = client or make_client("athena")
    try:
        started = client.start_query_execution(
            QueryString=sql, QueryExecutionContext={"Database": database}, WorkGroup=workgroup
        )
        execution = started["QueryExecutionId"]
        waited, delay = 0.0, 0.2
        while True:
            status = client.get_query_execution(QueryExecutionId=execution)["QueryExecution"]["Status"]
            if status["State"] == "SUCCEEDED":
                break
            if status["State"] in ("FAILED", "CANCELLED"):
                raise StackError(f"Athena query {status['State'].lower()}: {status.get('StateChangeReason', '')}")
            if waited > timeout_s:
                client.stop_query_execution(QueryExecutionId=execution)  # it would go on scanning (and billing)
                raise StackError(f"Athena query {execution} still running after {timeout_s:.0f} s")
            sleep(delay)
            waited += delay
            delay = min(delay * 2, 2.0)
        pages = client.get_paginator("get_query_results").paginate(QueryExecutionId=execution)
        columns: list[str] = []
        kinds: list[str] = []
        rows: list[list[Any]] = []
        for page in pages:
            if not columns:
                info = page["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
                columns, kinds = [c["Name"] for c in info], [c["Type"].lower() for c in info]
            for row in page["ResultSet"]["Rows"]:
                texts = [cell.get("VarCharValue") for cell in row["Data"]]
                if not rows and texts == columns:
                    continue  # Athena repeats the header as the first row of a SELECT
                rows.append([_value(text, kind) for text, kind in zip(texts, kinds, strict=True)])
        return QueryResult(columns, rows)
    except (ClientError, BotoCoreError) as exc:
        raise StackError(f"Athena: {exc}") from exc
