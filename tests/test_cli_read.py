"""The reading commands' output: error types in the list, one cost format, JSON without float
noise, every `stats --by` the API takes, and `relaylog query`: empty SQL, the saved queries, and a
DuckDB that can neither write nor read outside the record files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from relaylog.cli import main, output
from relaylog.cli.sql import saved_queries
from relaylog.query.filters import GROUP_DIMENSIONS

from tests.support.records import BASE, make_record, write_records


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    records = [
        make_record(BASE, status=200, error_type="upstream_disconnect", stream=True, cost_usd=1.41e-05,
                    latency_ms=3.7419999999999995, key_id="key_a", prompt_id="greeting"),
        make_record(BASE, status=429, error_type="upstream_error", cost_usd=None, key_id="key_a"),
        make_record(BASE, status=200, cost_usd=0.1 + 0.2, latency_ms=10.0, prompt_id="greeting"),
    ]  # fmt: skip
    write_records(tmp_path, records)
    return tmp_path


def test_requests_names_the_error_of_a_cut_stream(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    code, out, _ = run(capsys, "requests", "--data-dir", str(data_dir))
    assert code == 0
    header, *rows = out.splitlines()
    at = header.index("ERROR")
    errors = sorted(row[at:].split()[0] for row in rows)
    assert errors == ["-", "upstream_disconnect", "upstream_error"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [(1.41e-05, "$0.000014"), (0.0, "$0.000000"), (1.6e-07, "$0.0000002"), (12.5, "$12.500000"), (None, "-")],
)
def test_one_cost_format(value: float | None, shown: str) -> None:
    assert output.cost(value) == shown


def test_costs_and_numbers_have_no_exponent_anywhere(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    code, out, _ = run(capsys, "query", "SELECT min(cost_usd) AS cost_usd, min(latency_ms) / 1000000 AS tiny FROM requests",
                       "--data-dir", str(data_dir))  # fmt: skip
    assert code == 0 and out.splitlines()[1].split() == ["$0.000014", "0.000003742"]
    code, out, _ = run(capsys, "show", "--data-dir", str(data_dir), _id_where(capsys, data_dir, "stream"))
    assert "\ncost_usd             $0.000014\n" in out and "e-05" not in out


def _id_where(capsys: pytest.CaptureFixture[str], data_dir: Path, condition: str) -> str:
    code, out, _ = run(
        capsys, "query", f"SELECT request_id FROM requests WHERE {condition}", "--data-dir", str(data_dir), "--json"
    )
    return str(orjson.loads(out)[0]["request_id"])


def test_json_has_no_float_noise(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    request_id = _id_where(capsys, data_dir, "stream")
    code, out, _ = run(capsys, "show", request_id, "--json", "--data-dir", str(data_dir))
    shown = orjson.loads(out)
    assert shown["latency_ms"] == 3.742 and shown["cost_usd"] == 1.41e-05
    code, out, _ = run(capsys, "query", "SELECT sum(cost_usd) AS cost_usd, 0.1::DOUBLE + 0.2 AS x FROM requests",
                       "--json", "--data-dir", str(data_dir))  # fmt: skip
    assert orjson.loads(out) == [{"cost_usd": 0.3000141, "x": 0.3}]
    assert "0.30000000000000004" not in out


def _groups(capsys: pytest.CaptureFixture[str], data_dir: Path, by: str) -> dict[Any, int]:
    code, out, err = run(capsys, "stats", "--by", by, "--json", "--data-dir", str(data_dir))
    assert code == 0, err
    return {g["key"]: g["requests"] for g in orjson.loads(out)["groups"]}


def test_stats_by_takes_every_dimension_the_api_takes(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    assert set(GROUP_DIMENSIONS) >= {"status", "key", "prompt"}
    for by in GROUP_DIMENSIONS:
        assert sum(_groups(capsys, data_dir, by).values()) == 3, by
    assert _groups(capsys, data_dir, "status") == {"200": 2, "429": 1}
    assert _groups(capsys, data_dir, "key") == {"key_a": 2, "key_ab12cd34": 1}  # make_record's own key
    assert _groups(capsys, data_dir, "prompt") == {"greeting": 2, None: 1}
    code, out, _ = run(capsys, "stats", "--by", "status", "--data-dir", str(data_dir))
    assert code == 0 and out.startswith("STATUS ")
    code, _, err = run(capsys, "stats", "--by", "colour", "--data-dir", str(data_dir))
    assert code == 2 and "one of model, provider, user, session, key, status, prompt or property:NAME" in err


@pytest.mark.parametrize("sql", ["", "   \n\t", "-- nothing but a comment", "/* still nothing */"])
def test_empty_sql_is_a_clear_error(capsys: pytest.CaptureFixture[str], data_dir: Path, sql: str) -> None:
    code, out, err = run(capsys, "query", sql, "--data-dir", str(data_dir))
    assert (code, out) == (1, "")
    assert (
        err
        == 'relaylog: error: no SQL to run (the query is empty or only comments); e.g. "SELECT model, count(*) FROM requests GROUP BY 1"\n'
    )


@pytest.mark.parametrize("name", sorted(saved_queries()))
def test_saved_queries_run_locally_by_name(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)  # the saved queries look at the last 7 or 30 days
    write_records(
        tmp_path, [make_record(now, session_id="s1"), make_record(now, status=500, error_type="upstream_error")]
    )
    code, out, err = run(capsys, "query", name, "--json", "--data-dir", str(tmp_path))
    assert code == 0, err
    rows = orjson.loads(out)
    assert rows, name
    if name == "errors":
        assert [(r["status"], r["error_type"], r["requests"]) for r in rows] == [(500, "upstream_error", 1)]
    code, _, err = run(capsys, "query", "no_such_query", "--data-dir", str(tmp_path))
    assert code == 1 and "no saved query 'no_such_query'; saved queries: cost_by_day_model" in err


OUTSIDE = [
    ("COPY (SELECT 1) TO '{out}'", "read-only: SELECT and EXPLAIN run, COPY statements do not"),
    ("SELECT * FROM read_csv('/etc/passwd', sep = ':')", 'Cannot access file "/etc/passwd"'),
    ("SELECT * FROM read_text('{secret}')", "file system operations are disabled"),
    ("SELECT * FROM glob('/*')", "file system operations are disabled"),
    ("ATTACH '{out}' AS other", "read-only: SELECT and EXPLAIN run, ATTACH statements do not"),
    ("INSTALL httpfs", "read-only: SELECT and EXPLAIN run, LOAD statements do not"),
    ("LOAD httpfs", "read-only: SELECT and EXPLAIN run, LOAD statements do not"),
    ("SET enable_external_access = true", "read-only: SELECT and EXPLAIN run, SET statements do not"),
    ("RESET lock_configuration", "read-only: SELECT and EXPLAIN run, SET statements do not"),
    ("SELECT 1; COPY requests TO '{out}'", "COPY statements do not"),
    ("CREATE TABLE t AS SELECT 1", "CREATE statements do not"),
    ("EXPORT DATABASE '{out}'", "EXPORT statements do not"),
]


@pytest.mark.parametrize(("sql", "refused"), OUTSIDE)
def test_queries_cannot_write_or_read_outside_the_records(
    capsys: pytest.CaptureFixture[str], data_dir: Path, tmp_path_factory: pytest.TempPathFactory, sql: str, refused: str
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    secret = elsewhere / "secret.txt"
    secret.write_text("not for relaylog")
    out_path = elsewhere / "out.csv"
    code, out, err = run(capsys, "query", sql.format(out=out_path, secret=secret), "--data-dir", str(data_dir))
    assert (code, out) == (1, "") and refused in err and "Traceback" not in err
    assert sorted(p.name for p in elsewhere.iterdir()) == ["secret.txt"]  # nothing written


def test_the_lock_cannot_be_undone_inside_a_select(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    # Settings change only through SET (refused above); a SELECT can read them, not change them.
    code, out, _ = run(capsys, "query", "SELECT current_setting('enable_external_access') AS e, "
                       "current_setting('lock_configuration') AS l", "--json", "--data-dir", str(data_dir))  # fmt: skip
    assert code == 0 and orjson.loads(out) == [{"e": False, "l": True}]
