"""DuckDB over a local data dir (relaylog.store) and the local query back end over it (what the
CLI and the API read through), checked against numbers computed in Python."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from relaylog.query.backend import NotFound
from relaylog.query.filters import Filters, matches, record_time
from relaylog.query.local import LocalBackend
from relaylog.query.params import BadRequest, ListParams, StatsParams, parse_group_by
from relaylog.record import FIELDS, SUMMARY_FIELDS
from relaylog.store import StoreError
from relaylog.store.files import has_incomplete_tail, raw_files
from relaylog.store.local import LocalStore
from relaylog.store.schema import COLUMNS
from relaylog.store.since import parse_since

from tests.support.records import BASE, assert_metrics, expected_metrics, make_record, sample_records, write_records


@pytest.fixture
def records() -> list[dict[str, Any]]:
    return sample_records()


@pytest.fixture
def data_dir(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    data = tmp_path / "data"
    write_records(data, records[::2], writer="host-a-1")
    files = write_records(data, records[1::2], writer="host-b-1")
    # A crash while writing: the last line of one file stops half way.
    with files[-1].open("ab") as f:
        f.write(orjson.dumps(make_record(BASE + timedelta(days=1)))[:150])
    # A writer that created its file but had not written yet.
    (files[0].parent / "host-c-1.jsonl").touch()
    return data


def _list(data_dir: Path, limit: int = 1000, filters: Filters | None = None) -> list[dict[str, Any]]:
    """Requests as `relaylog requests` asks for them: newest first, no previews."""
    rows: list[dict[str, Any]] = LocalBackend(LocalStore(data_dir)).list_requests(
        ListParams(filters=filters or Filters(), limit=limit, previews=False)
    )["data"]
    return rows


def _stats(data_dir: Path, by: str | None = None, since: datetime | None = None) -> dict[str, Any]:
    """Stats as `relaylog stats` asks for them: no buckets, exact percentiles."""
    params = StatsParams(Filters(since=since), None, parse_group_by(by), 0, exact=True)
    return LocalBackend(LocalStore(data_dir)).stats(params)


def _record(data_dir: Path, request_id: str) -> dict[str, Any]:
    """The record's own columns of a request."""
    found = LocalBackend(LocalStore(data_dir)).get_request(request_id)
    return {name: found[name] for name in FIELDS}


# -- files, schema, since ------------------------------------------------------------------------


def test_columns_cover_every_field() -> None:
    assert list(COLUMNS) == list(FIELDS)
    assert COLUMNS["properties"] == "MAP(VARCHAR, VARCHAR)"
    assert COLUMNS["status"] == "BIGINT" and COLUMNS["stream"] == "BOOLEAN" and COLUMNS["cost_usd"] == "DOUBLE"
    assert COLUMNS["parse_error"] == "VARCHAR"


def test_parse_since_spans_and_dates() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert parse_since("1h", now) == now - timedelta(hours=1)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since(" 2W ", now) == now - timedelta(weeks=2)
    assert parse_since("2026-11-25") == datetime(2026, 11, 25, tzinfo=UTC)
    assert parse_since("2026-11-25T21:30:00Z") == datetime(2026, 11, 25, 21, 30, tzinfo=UTC)
    assert parse_since("2026-11-25T23:30:00+02:00") == datetime(2026, 11, 25, 21, 30, tzinfo=UTC)
    for bad in ("", "yesterday", "1y", "-1h", "h", "2026-13-01", "99999999999d", "1h; DROP TABLE x"):
        with pytest.raises(ValueError):
            parse_since(bad, now)


def test_raw_files_prunes_partitions_before_since(data_dir: Path) -> None:
    every = raw_files(data_dir)
    hours = sorted({(p.parent.parent.name, p.parent.name) for p in every})
    assert hours[0] == ("dt=2026-11-25", "hour=22") and len(hours) >= 4
    since = datetime(2026, 11, 26, 0, 30, tzinfo=UTC)
    kept = raw_files(data_dir, since)
    assert kept and all((p.parent.parent.name, p.parent.name) >= ("dt=2026-11-26", "hour=00") for p in kept)
    assert len(kept) < len(every)


def test_raw_files_ignores_stray_entries(tmp_path: Path) -> None:
    (tmp_path / "raw" / "dt=2026-11-26" / "hour=01").mkdir(parents=True)
    (tmp_path / "raw" / "dt=2026-11-26" / "hour=01" / "w.jsonl").write_bytes(b"")
    (tmp_path / "raw" / "dt=2026-11-26" / "hour=01" / "w.jsonl.tmp").write_bytes(b"{")
    (tmp_path / "raw" / "tmp").mkdir()
    (tmp_path / "raw" / "notes.txt").write_text("x")
    assert [p.name for p in raw_files(tmp_path)] == ["w.jsonl"]
    assert raw_files(tmp_path / "missing") == []


def test_incomplete_tail_detection(tmp_path: Path) -> None:
    whole, cut, no_newline, empty, big = (tmp_path / n for n in ("a", "b", "c", "d", "e"))
    whole.write_bytes(b'{"a":1}\n{"b":2}\n')
    cut.write_bytes(b'{"a":1}\n{"b":')
    no_newline.write_bytes(b'{"a":1}\n{"b":2}')  # complete record, newline not yet written
    empty.write_bytes(b"")
    big.write_bytes(b'{"a":1}\n{"body":"' + b"x" * 200_000)  # partial line longer than one read
    assert [has_incomplete_tail(p) for p in (whole, cut, no_newline, empty, big)] == [False, True, False, False, True]


# -- empty data dir --------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["missing", "empty", "raw-only", "empty-file"])
def test_empty_data_dir_gives_empty_results(tmp_path: Path, layout: str) -> None:
    data = tmp_path / "data"
    if layout != "missing":
        data.mkdir()
    if layout in ("raw-only", "empty-file"):
        (data / "raw" / "dt=2026-11-26" / "hour=21").mkdir(parents=True)
    if layout == "empty-file":
        (data / "raw" / "dt=2026-11-26" / "hour=21" / "w.jsonl").touch()
    assert _list(data) == []
    with pytest.raises(NotFound):
        LocalBackend(LocalStore(data)).get_request("abc")
    stats = _stats(data, by="model")
    assert stats["groups"] == []
    assert_metrics(dict(stats["total"]), expected_metrics([]))
    store = LocalStore(data)
    result = store.query("SELECT model, count(*) AS n FROM requests GROUP BY 1")
    assert result.columns == ["model", "n"] and result.rows == []
    # The empty view still has every record column with its type.
    described = store.query("DESCRIBE requests")
    assert [(r[0], r[1]) for r in described.rows] == list(COLUMNS.items())


# -- list ------------------------------------------------------------------------------------------


def test_list_requests_newest_first_without_bodies(
    data_dir: Path, records: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="relaylog"):
        rows = _list(data_dir)
    newest_first = sorted(records, key=lambda r: r["created_at"], reverse=True)
    assert [r["request_id"] for r in rows] == [r["request_id"] for r in newest_first]
    assert list(rows[0]) == [*SUMMARY_FIELDS, "scores"]  # no bodies, no previews: they were not asked for
    expected = {k: v for k, v in newest_first[0].items() if k in SUMMARY_FIELDS}
    # Every type round-trips: ints, floats, bools, nulls, properties map.
    assert {k: rows[0][k] for k in SUMMARY_FIELDS} == expected
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "incomplete last line in 1 file" in warnings[0]


def test_list_requests_limit_and_filters(data_dir: Path, records: list[dict[str, Any]]) -> None:
    assert len(_list(data_dir, limit=5)) == 5

    def ids(rows: list[dict[str, Any]]) -> set[str]:
        return {r["request_id"] for r in rows}

    def expected(pred: Any) -> set[str]:
        return {r["request_id"] for r in records if pred(r)}

    assert ids(_list(data_dir, filters=Filters(model="gpt-4o"))) == expected(lambda r: r["model"] == "gpt-4o")
    assert ids(_list(data_dir, filters=Filters(provider="anthropic"))) == expected(
        lambda r: r["provider"] == "anthropic"
    )
    assert ids(_list(data_dir, filters=Filters(user="bob"))) == expected(lambda r: r["user_id"] == "bob")
    assert ids(_list(data_dir, filters=Filters(session="sess-2"))) == expected(lambda r: r["session_id"] == "sess-2")
    both = Filters(provider="openai", user="alice")
    assert ids(_list(data_dir, filters=both)) == expected(
        lambda r: r["provider"] == "openai" and r["user_id"] == "alice"
    )
    assert _list(data_dir, filters=Filters(model="nope")) == []


def test_filters_are_bound_not_spliced(data_dir: Path) -> None:
    for evil in ("' OR '1'='1", "x' OR 1=1 --", "gpt-4o'; DROP VIEW requests; --", '"model"'):
        assert _list(data_dir, filters=Filters(model=evil, user=evil, provider=evil, session=evil)) == []
        assert _list(data_dir, filters=Filters(properties=((evil, evil),))) == []
    assert len(_list(data_dir)) == 36


def test_list_requests_since(data_dir: Path, records: list[dict[str, Any]]) -> None:
    since = datetime(2026, 11, 26, 1, 5, tzinfo=UTC)
    rows = _list(data_dir, filters=Filters(since=since))
    assert {r["request_id"] for r in rows} == {
        r["request_id"] for r in records if datetime.fromisoformat(r["created_at"]) >= since
    }
    assert 0 < len(rows) < len(records)


def test_since_relative_to_now(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    recent = make_record(now - timedelta(minutes=10))
    older = make_record(now - timedelta(hours=3))
    write_records(tmp_path, [older, recent])
    assert [r["request_id"] for r in _list(tmp_path, 10, Filters(since=parse_since("1h")))] == [recent["request_id"]]
    assert len(_list(tmp_path, 10, Filters(since=parse_since("4h")))) == 2
    assert _stats(tmp_path, since=parse_since("30m"))["total"]["requests"] == 1


def test_unreadable_lines_and_schema_drift(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = make_record(BASE)
    old = {
        k: v
        for k, v in make_record(BASE + timedelta(minutes=1)).items()
        if k not in ("parse_error", "ttft_ms", "properties")
    }
    newer = {**make_record(BASE + timedelta(minutes=2)), "some_future_field": {"a": [1, 2]}}
    path = write_records(tmp_path, [good])[0]
    with path.open("ab") as f:
        f.write(b"this is not json\n")  # garbage in the middle of a file
        f.write(orjson.dumps(old) + b"\n")
        f.write(orjson.dumps(newer) + b"\n")
    with caplog.at_level(logging.WARNING, logger="relaylog"):
        rows = _list(tmp_path, 10)
    assert [r["request_id"] for r in rows] == [newer["request_id"], old["request_id"], good["request_id"]]
    assert rows[1]["ttft_ms"] is None and rows[1]["properties"] is None and rows[1]["parse_error"] is None
    assert "some_future_field" not in rows[0]
    assert not caplog.records  # the file ends cleanly, so nothing to warn about


FILTERS = [
    Filters(model="gpt-4o", provider="openai"),
    Filters(user="alice", session="sess-1"),
    Filters(status="ok"),
    Filters(status="error"),
    Filters(status=0),
    Filters(error_type="upstream_error"),
    Filters(properties=(("team", "ml"),)),  # stored as Team: names match whatever their case
    Filters(properties=(("TEAM", "ml"), ("env", "prod"))),
    Filters(properties=(("team", "ML"),)),  # values are exact
    Filters(since=datetime(2026, 11, 26, 1, 5, tzinfo=UTC), until=datetime(2026, 11, 26, 5, tzinfo=UTC)),
]


@pytest.mark.parametrize("filters", FILTERS, ids=range(len(FILTERS)))
def test_the_sql_of_a_filter_and_its_python_agree(
    data_dir: Path, records: list[dict[str, Any]], filters: Filters
) -> None:
    """One definition, two renderings: the local SQL and the test the AWS back end applies in Python."""
    wanted = {r["request_id"] for r in records if matches(r, filters)}
    assert {r["request_id"] for r in _list(data_dir, filters=filters)} == wanted
    if filters.properties and filters.properties[0][1] == "ml":
        assert wanted  # the fixture has such records


# -- one request -----------------------------------------------------------------------------------


def test_get_request_by_id_and_prefix(data_dir: Path, records: list[dict[str, Any]]) -> None:
    target = records[5]
    assert _record(data_dir, target["request_id"]) == target
    assert _record(data_dir, target["request_id"][:13]) == target
    with pytest.raises(NotFound):
        _record(data_dir, "ffffffff-no-such-id")
    with pytest.raises(BadRequest, match="more than one request"):
        _record(data_dir, "")


def test_get_request_ambiguous_prefix(tmp_path: Path) -> None:
    a = make_record(BASE, request_id="abcd0000-0000-4000-8000-000000000001")
    b = make_record(BASE, request_id="abcd0000-0000-4000-8000-000000000002")
    write_records(tmp_path, [a, b])
    with pytest.raises(BadRequest, match="more than one request"):
        _record(tmp_path, "abcd")
    assert _record(tmp_path, b["request_id"]) == b


def test_get_request_loads_body_refs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    big = make_record(BASE, request_body=None, response_body=None)
    big["request_body_ref"] = f"bodies/dt={big['dt']}/{big['request_id']}.request"
    big["response_body_ref"] = f"bodies/dt={big['dt']}/{big['request_id']}.response"
    sse = 'data: {"choices":[{"delta":{"content":"h\u00e9"}}]}\n\ndata: [DONE]\n\n'
    (tmp_path / "bodies" / f"dt={big['dt']}").mkdir(parents=True)
    (tmp_path / big["request_body_ref"]).write_text('{"model":"gpt-4o","big":"' + "x" * 50_000 + '"}')
    (tmp_path / big["response_body_ref"]).write_text(sse, encoding="utf-8")
    missing = make_record(BASE, request_body=None, request_body_ref="bodies/nope.request")
    escaping = make_record(BASE, request_body=None, request_body_ref="../../etc/passwd")
    write_records(tmp_path, [big, missing, escaping])
    loaded = _record(tmp_path, big["request_id"])
    assert loaded["request_body"].startswith('{"model":"gpt-4o","big":"xxx') and len(loaded["request_body"]) > 50_000
    assert loaded["response_body"] == sse
    assert loaded["response_body_ref"] == big["response_body_ref"]

    with caplog.at_level(logging.WARNING, logger="relaylog"):
        assert _record(tmp_path, missing["request_id"])["request_body"] is None
        assert _record(tmp_path, escaping["request_id"])["request_body"] is None
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "bodies/nope.request" in messages and "outside the data dir" in messages


# -- stats -----------------------------------------------------------------------------------------


def test_stats_totals_match_python(data_dir: Path, records: list[dict[str, Any]]) -> None:
    stats = _stats(data_dir)
    assert stats["by"] is None and stats["since"] is None and stats["groups"] == []
    assert stats["series"] == [] and stats["group_series"] == []  # no buckets asked for
    assert stats["histograms"] is None  # nor made: the percentiles are exact
    expected = expected_metrics(records)
    assert_metrics(dict(stats["total"]), expected)
    # The fixture really exercises the tricky cases.
    assert expected["errors"] >= 5 and expected["usage_unknown"] >= 4 and expected["cost_unknown"] >= 5


@pytest.mark.parametrize(
    ("by", "field"),
    [("model", "model"), ("user", "user_id"), ("provider", "provider"), ("session", "session_id")],
)
def test_stats_grouped_match_python(data_dir: Path, records: list[dict[str, Any]], by: str, field: str) -> None:
    stats = _stats(data_dir, by=by)
    keys = {r[field] for r in records}
    assert {g["key"] for g in stats["groups"]} == keys
    for group in stats["groups"]:
        assert_metrics(group, expected_metrics([r for r in records if r[field] == group["key"]]))
    assert_metrics(dict(stats["total"]), expected_metrics(records))
    counts = [g["requests"] for g in stats["groups"]]
    assert counts == sorted(counts, reverse=True)


@pytest.mark.parametrize("name", ["env", "Team", "ENV", "team"])
def test_stats_by_property_any_case(data_dir: Path, records: list[dict[str, Any]], name: str) -> None:
    stats = _stats(data_dir, by=f"property:{name}")
    by_value: dict[str | None, list[dict[str, Any]]] = {}
    for r in records:
        value = next((v for k, v in r["properties"].items() if k.lower() == name.lower()), None)
        by_value.setdefault(value, []).append(r)
    assert {g["key"] for g in stats["groups"]} == set(by_value)
    for group in stats["groups"]:
        assert_metrics(group, expected_metrics(by_value[group["key"]]))


def test_stats_since(data_dir: Path, records: list[dict[str, Any]]) -> None:
    since = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)
    stats = _stats(data_dir, by="provider", since=since)
    recent = [r for r in records if datetime.fromisoformat(r["created_at"]) >= since]
    assert stats["since"] == record_time(since)
    assert_metrics(dict(stats["total"]), expected_metrics(recent))


def test_exact_percentiles_with_time_buckets(data_dir: Path, records: list[dict[str, Any]]) -> None:
    """With buckets the series keep the histogram's percentiles, the totals and groups are exact."""
    backend = LocalBackend(LocalStore(data_dir))
    since = datetime(2026, 11, 25, tzinfo=UTC)
    exact = backend.stats(StatsParams(Filters(since=since), "hour", "model", 10, exact=True))
    read = backend.stats(StatsParams(Filters(since=since), "hour", "model", 10))
    assert_metrics(dict(exact["total"]), expected_metrics(records))
    for group in exact["groups"]:
        assert_metrics(group, expected_metrics([r for r in records if r["model"] == group["key"]]))
    assert (exact["series"], exact["group_series"]) == (read["series"], read["group_series"])
    assert exact["histograms"] == read["histograms"]
    assert exact["total"]["latency_p50_ms"] != read["total"]["latency_p50_ms"]  # histograms are within 9%


def test_group_by_rejects_bad_names_and_binds_odd_ones(data_dir: Path) -> None:
    for bad in ("models", "user_id; DROP VIEW requests", "property:", "property:a b",
                "property:x') OR 1=1 --", "property:env\n", "property:" + "x" * 200):  # fmt: skip
        with pytest.raises(BadRequest):
            parse_group_by(bad)
    # Quotes are legal in header names: the name is a bound parameter, so it is only ever a key.
    stats = _stats(data_dir, by="property:env'--")
    assert [g["key"] for g in stats["groups"]] == [None]
    assert stats["groups"][0]["requests"] == 36


# -- query -----------------------------------------------------------------------------------------


def test_query_runs_sql_on_requests_view(data_dir: Path, records: list[dict[str, Any]]) -> None:
    store = LocalStore(data_dir)
    result = store.query("SELECT model, count(*) AS n FROM requests GROUP BY 1 ORDER BY 1")
    counts: dict[str, int] = {}
    for r in records:
        counts[r["model"]] = counts.get(r["model"], 0) + 1
    assert result.columns == ["model", "n"]
    assert result.rows == sorted(counts.items())
    props = store.query("SELECT properties['env'] AS env, count(*) FROM requests GROUP BY 1 ORDER BY 1")
    assert [row[0] for row in props.rows] == ["dev", "prod"]


def test_query_errors_carry_duckdb_message(data_dir: Path) -> None:
    store = LocalStore(data_dir)
    with pytest.raises(StoreError, match="syntax error"):
        store.query("SELEC 1")
    with pytest.raises(StoreError, match="no_such_column"):
        store.query("SELECT no_such_column FROM requests")
