"""The saved Athena queries: the template ships exactly these files, and they run on DuckDB over
the aggregator's Parquet with the numbers the records say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import duckdb
import pytest
from relaylog.aggregate.parquet import write_parquet

from tests.support.records import make_record
from tests.support.sam import load_template

QUERIES = {p.name[:-4]: p.read_text() for p in resources.files("relaylog.queries").iterdir() if p.name.endswith(".sql")}
TODAY = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)


def test_the_template_ships_every_query_file_verbatim() -> None:
    shipped = {
        props["Name"]["Sub"].split("}-", 1)[1]: props["QueryString"]
        for r in load_template()["Resources"].values()
        if r["Type"] == "AWS::Athena::NamedQuery"
        for props in [r["Properties"]]
    }
    assert shipped == QUERIES
    assert set(QUERIES) == {"cost_by_day_model", "cost_by_user", "latency_p95_by_model", "sessions", "errors"}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A `requests` view over Parquet laid out as the aggregator writes it, typed as Glue declares it."""
    root = tmp_path_factory.mktemp("curated")
    days: dict[str, list[dict[str, Any]]] = {}
    for record in _records():
        days.setdefault(record["dt"], []).append(record)
    for dt, rows in days.items():
        (root / f"curated/dt={dt}").mkdir(parents=True)
        write_parquet(rows, root / f"curated/dt={dt}/part.parquet")
    con = duckdb.connect()
    con.execute(
        f"CREATE VIEW requests AS SELECT * FROM read_parquet('{root}/curated/*/*.parquet', "
        "hive_partitioning = true, hive_types = {'dt': VARCHAR})"
    )
    return con


def _records() -> list[dict[str, Any]]:
    rows = []
    for i, ms in enumerate(range(100, 2100, 100)):  # 20 gpt-4o calls today: 100 .. 2000 ms
        rows.append(
            make_record(
                TODAY + timedelta(seconds=i),
                model="gpt-4o",
                latency_ms=float(ms),
                cost_usd=0.001,
                user_id="alice" if i % 2 else "bob",
                session_id="s1" if i < 4 else None,
            )
        )
    rows.append(
        make_record(
            TODAY,
            model="claude-sonnet-4",
            provider="anthropic",
            latency_ms=50.0,
            cost_usd=0.25,
            user_id="alice",
            session_id="s1",
            session_name="plan",
        )
    )
    rows.append(
        make_record(
            TODAY,
            model="claude-sonnet-4",
            provider="anthropic",
            status=529,
            error_type="upstream_error",
            cost_usd=None,
            input_tokens=None,
            output_tokens=None,
        )
    )
    rows.append(make_record(TODAY - timedelta(days=1), model="gpt-4o", cost_usd=0.5, user_id="carol"))
    rows.append(make_record(TODAY - timedelta(days=60), model="gpt-4o", cost_usd=99.0, user_id="old"))  # out of range
    return rows


def _run(db: Any, name: str) -> list[dict[str, Any]]:
    cursor = db.execute(QUERIES[name])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_cost_by_day_and_model(db: Any) -> None:
    rows = {(r["dt"], r["model"]): r for r in _run(db, "cost_by_day_model")}
    today, yesterday = TODAY.strftime("%Y-%m-%d"), (TODAY - timedelta(days=1)).strftime("%Y-%m-%d")
    assert set(rows) == {(today, "gpt-4o"), (today, "claude-sonnet-4"), (yesterday, "gpt-4o")}
    assert rows[(today, "gpt-4o")]["requests"] == 20 and rows[(today, "gpt-4o")]["cost_usd"] == pytest.approx(0.02)
    assert rows[(today, "claude-sonnet-4")]["unpriced"] == 1 and rows[(yesterday, "gpt-4o")]["cost_usd"] == 0.5


def test_cost_by_user(db: Any) -> None:
    rows = {r["user_id"]: r for r in _run(db, "cost_by_user")}
    assert "old" not in rows
    assert rows["alice"]["requests"] == 12 and rows["alice"]["cost_usd"] == pytest.approx(0.26)
    assert rows["carol"]["cost_usd"] == 0.5


def test_p95_latency_by_model(db: Any) -> None:
    rows = {r["model"]: r for r in _run(db, "latency_p95_by_model")}
    gpt = rows["gpt-4o"]  # yesterday's call (812.5 ms) is in the last 7 days too: 21 calls
    assert gpt["requests"] == 21
    assert gpt["latency_p95_ms"] == 1900.0 and gpt["latency_p50_ms"] == 1000.0  # nearest rank
    assert rows["claude-sonnet-4"]["requests"] == 1  # the 529 is not a latency sample


def test_sessions(db: Any) -> None:
    (s1,) = _run(db, "sessions")
    assert s1["session_id"] == "s1" and s1["requests"] == 5 and s1["session_name"] == "plan"
    assert s1["cost_usd"] == pytest.approx(0.254) and s1["busy_ms"] == 100 + 200 + 300 + 400 + 50


def test_errors(db: Any) -> None:
    (row,) = _run(db, "errors")
    assert (row["provider"], row["status"], row["error_type"], row["requests"]) == (
        "anthropic",
        529,
        "upstream_error",
        1,
    )


def test_queries_are_plain_files_in_the_package() -> None:
    for name, text in QUERIES.items():
        assert text.startswith("-- ") and text.endswith("\n"), name
        assert "approx_percentile" not in text and "quantile" not in text  # engine-specific
