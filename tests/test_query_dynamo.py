"""The query API's AWS back end (DynamoBackend, under moto) against the local one (LocalBackend, DuckDB)
over the same records: the aggregator's index and rollups must give the answers the record files give."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from moto import mock_aws
from relaylog.aggregate.process import process_object
from relaylog.aws import layout
from relaylog.config import Retention
from relaylog.query.backend import NotFound, Unsupported, version_diff
from relaylog.query.dynamo import index
from relaylog.query.dynamo.backend import DynamoBackend
from relaylog.query.dynamo.scan import Scan, Span, Stream
from relaylog.query.dynamo.table import Table
from relaylog.query.filters import Filters, ScoreFilter, matches
from relaylog.query.local import LocalBackend
from relaylog.query.params import ListParams, PageParams, StatsParams, decode_cursor
from relaylog.store.local import LocalStore

from tests.support.aws import create_stack, fake_credentials
from tests.support.records import NO_USAGE, make_record, write_records

pytestmark = pytest.mark.aws

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAY0, DAY1 = TODAY - timedelta(days=2), TODAY - timedelta(days=1)
MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5")]
TRIP_PATHS = ["/plan", "/plan/flights", "/plan/hotels", "/book", None]
OFFLOADED = 26  # the record whose request body is in S3 under bodies/


def _prompt_body(version: int, question: str) -> str:
    system = "You are terse." if version == 1 else "You are terse and kind.\nAnswer in one line."
    user = f'Say <helicone-prompt-input key="q">{question}</helicone-prompt-input>'
    return json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "system", "content": system},
                                                           {"role": "user", "content": user}]})  # fmt: skip


def _records() -> list[dict[str, Any]]:
    """Two days, five hours a day: three models, users, keys, properties, three sessions (one with a
    path tree, one across both days), a prompt with two versions, errors, ties in cost."""
    records = []
    for i in range(40):
        day = DAY0 if i < 20 else DAY1
        # Whole milliseconds: the local session list's duration works in whole milliseconds.
        created = day + timedelta(hours=1 + 5 * ((i % 20) // 4), minutes=7 * (i % 4), seconds=i, milliseconds=3 * i)
        provider, model = MODELS[i % 3]
        o: dict[str, Any] = {
            "provider": provider,
            "model": model,
            "latency_ms": 150.0 + (i * 53) % 1700 + i / 4,
            "ttft_ms": None if i % 6 == 0 else 40.0 + (i * 17) % 400,
            "input_tokens": 90 + 7 * i,
            "output_tokens": 15 + i,
            "cache_read_tokens": 32 if i % 5 == 0 else 0,
            "cost_usd": [0.0002, 0.0005, 0.0011][i % 3],  # ties: the sort falls back to created_at, id
            "user_id": ["alice", "bob", "carol", None][i % 4],
            "key_id": None if i % 7 == 0 else ["key_a", "key_b"][i % 2],
            "properties": {"env": "prod" if i % 2 else "dev", **({"team": "ml"} if i % 3 == 0 else {})},
            "stream": i % 2 == 0,
        }
        if 2 <= i <= 9:
            o.update(session_id="s-old", session_path=f"/step{i % 3}")
        elif 14 <= i <= 27:
            o.update(session_id="s-trip", session_path=TRIP_PATHS[i % 5], session_name="Trip" if i > 20 else None)
        elif 30 <= i <= 35:
            o.update(session_id="s-chat", session_name="Chat")
        if i % 5 == 1:
            o.update(prompt_id="greet", request_body=_prompt_body(1 if i < 20 else 2, f"question {i}"))
        if i % 9 == 4:
            o.update(status=500, error_type="upstream_error", **NO_USAGE)
        if i == 13:
            o.update(status=429, error_type="rate_limited", **NO_USAGE)
        if i == 22:
            o.update(status=0, error_type="client_disconnect")
        if i == 17:
            o.update(model="my-finetune", cost_usd=None, cost_source="unknown_model")
        records.append(make_record(created, **o))
    offloaded = records[OFFLOADED]
    offloaded["request_body_ref"] = f"{layout.BODIES_PREFIX}dt={offloaded['dt']}/{offloaded['request_id']}.request"
    offloaded["request_body"] = None
    return records


LARGE_BODY = _prompt_body(2, "a long question " + "x" * 50_000)


@dataclass
class Pair:
    local: LocalBackend
    aws: DynamoBackend
    records: list[dict[str, Any]]
    table: str
    bucket: str
    dynamodb: Any
    s3: Any


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """The records aggregated into a moto stack, and written into a local data dir: built once (the
    tests that add scores add the same to both)."""
    fake_credentials()
    records = _records()
    offloaded = records[OFFLOADED]
    data_dir = tmp_path_factory.mktemp("local")
    write_records(data_dir, records)
    (data_dir / offloaded["request_body_ref"]).parent.mkdir(parents=True)
    (data_dir / offloaded["request_body_ref"]).write_text(LARGE_BODY)
    with mock_aws():
        stack = create_stack("relaylog-query")
        s3, dynamodb = stack.client("s3"), stack.client("dynamodb")
        s3.put_object(Bucket=stack.bucket, Key=offloaded["request_body_ref"], Body=LARGE_BODY.encode())
        # Three objects (moto copies the whole table for each rollup transaction): gzip as Firehose
        # writes them, and the last hours plain under spool/, as the proxy writes them. Two more
        # hold copies of records, as a resent PutRecordBatch or a spooled batch Firehose took after
        # all leave them: one read before the objects it repeats, one after, across both days.
        # The local side holds each record once: every answer must still be the same.
        objects = [
            (layout.RAW_PREFIX, records[:20]),
            (layout.SPOOL_PREFIX, records[30:36]),
            (layout.RAW_PREFIX, records[20:32]),
            (layout.SPOOL_PREFIX, records[32:]),
            (layout.RAW_PREFIX, records[15:25]),
        ]
        for number, (prefix, members) in enumerate(objects):
            key = f"{layout.partition_path(prefix, members[0]['dt'], members[0]['hour'])}records-{number}"
            stack.put_raw_object(key, members, compress=prefix == layout.RAW_PREFIX)
            process_object(s3, dynamodb, stack.table, stack.bucket, key)
        aws = DynamoBackend(stack.table, stack.bucket, dynamodb, s3)
        yield Pair(LocalBackend(LocalStore(data_dir)), aws, records, stack.table, stack.bucket, dynamodb, s3)


def _approx(value: Any) -> Any:
    """Floats compared to the last few bits: DuckDB sums floats, the rollups sum exact decimals."""
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-9, abs=1e-12)
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    return value


def _all_pages(backend: Any, params: ListParams) -> list[dict[str, Any]]:
    pages = []
    while True:
        page = backend.list_requests(params)
        pages.append(page)
        if page["next_cursor"] is None:
            return pages
        params = replace(params, cursor=decode_cursor(page["next_cursor"], params.sort, params.order))


def _id(pair: Pair, number: int) -> str:
    request_id: str = pair.records[number]["request_id"]
    return request_id


# -- request lists ---------------------------------------------------------------------------------


def test_the_module_needs_no_duckdb() -> None:
    """The Lambda layer has no DuckDB: the AWS back end and the API must import without it."""
    code = "import sys; sys.modules['duckdb'] = None; import relaylog.query.dynamo.backend, relaylog.query.api"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


FILTERS = [
    Filters(),
    Filters(model="gpt-4o"),
    Filters(provider="anthropic"),
    Filters(user="alice"),  # by_user (keys only)
    Filters(user="bob", model="gpt-4o-mini"),
    Filters(session="s-trip"),  # by_session
    Filters(prompt="greet"),  # by_prompt
    Filters(key="key_b"),
    Filters(error_type="upstream_error"),
    Filters(status="ok"),
    Filters(status="error"),
    Filters(status=429),
    Filters(properties=(("env", "prod"),)),
    Filters(properties=(("env", "dev"), ("team", "ml"))),
    Filters(since=DAY0 + timedelta(hours=10), until=DAY1 + timedelta(hours=12)),
    Filters(since=DAY1, session="s-trip"),
    Filters(until=DAY1, user="carol"),
    Filters(session="no-such-session"),
]


PAGES = [*((f, "desc") for f in FILTERS), *((FILTERS[i], "asc") for i in (0, 3, 5, 14))]


@pytest.mark.parametrize(("filters", "order"), PAGES, ids=range(len(PAGES)))
def test_request_pages_are_the_local_ones(pair: Pair, filters: Filters, order: Any) -> None:
    params = ListParams(filters=filters, limit=7, order=order)
    local = _all_pages(pair.local, params)
    assert _all_pages(pair.aws, params) == _approx(local)
    # What they hold, not only the same on both sides: matches() counts as local's SQL does.
    assert sum(len(p["data"]) for p in local) == sum(1 for r in pair.records if matches(r, filters))


@pytest.mark.parametrize(
    ("sort", "order", "filters"),
    [
        ("cost", "desc", Filters(since=DAY0)),
        ("cost", "asc", Filters(user="alice")),
        ("latency", "desc", Filters(properties=(("env", "prod"),))),
        ("latency", "asc", Filters(since=DAY1)),
    ],
)
def test_pages_by_cost_and_latency_are_the_local_ones(pair: Pair, sort: Any, order: Any, filters: Filters) -> None:
    params = ListParams(filters=filters, limit=8, sort=sort, order=order)
    assert _all_pages(pair.aws, params) == _approx(_all_pages(pair.local, params))


def test_list_rows_have_the_previews_of_their_bodies(pair: Pair) -> None:
    """Previews come from the bodies in the record: on AWS from the records in S3, read once per object."""
    params = ListParams(filters=Filters(), limit=500)
    local = {row["request_id"]: row for row in pair.local.list_requests(params)["data"]}
    fresh = DynamoBackend(pair.table, pair.bucket, pair.dynamodb, pair.s3)
    reads: list[str] = []
    real = pair.s3.get_object

    def counted(**kwargs: Any) -> Any:
        reads.append(kwargs["Key"])
        return real(**kwargs)

    fresh.records.s3 = type("S3", (), {"get_object": staticmethod(counted)})()
    aws = {row["request_id"]: row for row in fresh.list_requests(params)["data"]}
    assert aws == _approx(local)
    # Each object that owns a listed request (its index item's `source`: copies delivered in other
    # objects are not read) is read once.
    items = pair.dynamodb.scan(TableName=pair.table)["Items"]
    owners = {item["source"]["S"] for item in items if "source" in item and item["request_id"]["S"] in aws}
    assert sorted(reads) == sorted(owners)
    fresh.list_requests(params)
    assert len(reads) == len(owners)  # kept: records never change
    previews = {(row["request_preview"], row["response_preview"]) for row in aws.values()}
    assert ("hi", "hello") in previews
    prompt = 'Say <helicone-prompt-input key="q">question 11</helicone-prompt-input>'
    assert (aws[_id(pair, 11)]["request_preview"], aws[_id(pair, 11)]["response_preview"]) == (prompt, "hello")
    # A body kept apart from its record (here in S3 under bodies/) is not read for a preview.
    assert aws[_id(pair, OFFLOADED)]["request_preview"] is None


def test_a_page_cut_short_carries_on_where_it_stopped(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """One Query call a page: pages come back part full (or empty) with a cursor, and all of them
    together are the local list."""
    monkeypatch.setattr(index, "MAX_LIST_CALLS", 1)
    params = ListParams(filters=Filters(model="gpt-4o"), limit=4)
    pages = _all_pages(pair.aws, params)
    assert len(pages) > 4  # every day of the index's range is a call of its own
    rows = [row for page in pages for row in page["data"]]
    local = [row for page in _all_pages(pair.local, params) for row in page["data"]]
    assert rows == _approx(local)


def test_sorting_a_range_too_large_is_refused(pair: Pair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index, "MAX_RANGE_ITEMS", 5)
    with pytest.raises(Unsupported, match="narrow since/until"):
        pair.aws.list_requests(ListParams(sort="cost"))


def test_body_search_is_refused(pair: Pair) -> None:
    with pytest.raises(Unsupported, match="Athena"):
        pair.aws.list_requests(ListParams(filters=Filters(search="hello")))


# -- one request, scores ---------------------------------------------------------------------------


@pytest.mark.parametrize("number", [0, 1, 13, OFFLOADED, 39])
def test_a_request_is_the_local_one_with_its_bodies(pair: Pair, number: int) -> None:
    request_id = _id(pair, number)
    record = pair.aws.get_request(request_id)
    assert record == _approx(pair.local.get_request(request_id))
    assert record["request_body"] is not None
    assert pair.aws.request_template(request_id) == pair.local.request_template(request_id)


def test_the_offloaded_body_comes_from_s3(pair: Pair) -> None:
    record = pair.aws.get_request(_id(pair, OFFLOADED))
    assert record["request_body"] == LARGE_BODY and record["request_body_ref"].startswith("bodies/")


def test_a_body_too_large_for_a_function_url_answer_is_a_link(pair: Pair) -> None:
    linking = DynamoBackend(pair.table, pair.bucket, pair.dynamodb, pair.s3, inline_body_max=len(LARGE_BODY) - 1)
    record = linking.get_request(_id(pair, OFFLOADED))
    assert record["request_body"] is None and record["response_body"] is not None
    url = record["request_body_url"]
    assert unquote(url.split("?")[0]).endswith(record["request_body_ref"]) and "Signature" in url and "Expires=" in url
    assert record["response_body_url"] is None


def test_unknown_ids_are_not_found(pair: Pair) -> None:
    prefix = _id(pair, 0)[:8]  # the local store takes a unique prefix; the index takes exact ids
    for request_id in ("no-such-id", prefix):
        with pytest.raises(NotFound):
            pair.aws.get_request(request_id)
        with pytest.raises(NotFound):
            pair.aws.add_scores(request_id, {"helpful": True}, None)
        with pytest.raises(NotFound):
            pair.aws.request_template(request_id)


def test_a_record_gone_from_s3_is_not_found(pair: Pair) -> None:
    item = pair.aws.table.index_item(_id(pair, 5))
    with pytest.raises(NotFound, match="no longer in S3"):
        pair.aws.records.full_record({**item, "source": "raw/dt=2000-01-01/hour=00/gone.gz"})


def test_scores_and_feedback_are_the_local_ones(pair: Pair) -> None:
    given: list[tuple[int, dict[str, Any], str | None]] = [
        (3, {"helpful": True, "accuracy": 0.9}, None),
        (5, {"helpful": False, "accuracy": 0.4}, None),
        (5, {"accuracy": 0.6}, None),  # replaces 0.4
        (8, {"feedback": True}, "spot on"),
        (9, {"feedback": True}, "first"),
        (9, {"feedback": False}, None),  # the latest feedback has no comment
        (OFFLOADED, {"accuracy": 1}, None),
    ]
    for number, scores, comment in given:
        request_id = _id(pair, number)
        answer = pair.aws.add_scores(request_id, scores, comment)
        assert answer == _approx(pair.local.add_scores(request_id, scores, comment))
    assert pair.aws.add_scores(_id(pair, 3), {"helpful": False}, None)["scores"] == {"accuracy": 0.9, "helpful": False}
    pair.local.add_scores(_id(pair, 3), {"helpful": False}, None)
    for number in (3, 5, 8, 9, OFFLOADED):
        aws, local = (backend.get_request(_id(pair, number)) for backend in (pair.aws, pair.local))
        assert (aws["scores"], aws["feedback_comment"]) == (local["scores"], local["feedback_comment"])
    assert pair.aws.get_request(_id(pair, 8))["feedback_comment"] == "spot on"
    for wanted in (
        (ScoreFilter("helpful", "=", 0.0),),
        (ScoreFilter("accuracy", ">=", 0.6),),
        (ScoreFilter("accuracy", "!=", 0.9), ScoreFilter("accuracy", "<", 1.0)),
        (ScoreFilter("feedback", "=", 1.0),),
        (ScoreFilter("nothing", ">", 0.0),),
    ):
        params = ListParams(filters=Filters(scores=wanted), limit=3)
        assert _all_pages(pair.aws, params) == _approx(_all_pages(pair.local, params))


# -- stats -----------------------------------------------------------------------------------------

WHOLE_DAYS = Filters(since=DAY0, until=TODAY)
STATS = [
    ("day", None, WHOLE_DAYS),
    ("day", "model", WHOLE_DAYS),
    ("day", "provider", WHOLE_DAYS),
    ("day", "user", WHOLE_DAYS),  # with the records that have no user
    ("day", "session", WHOLE_DAYS),
    ("day", "key", WHOLE_DAYS),
    ("day", "property:env", WHOLE_DAYS),
    ("day", "property:team", WHOLE_DAYS),
    ("hour", None, WHOLE_DAYS),
    ("hour", "model", Filters(since=DAY1, until=TODAY)),
    ("day", "model", replace(WHOLE_DAYS, model="gpt-4o")),
    ("day", None, replace(WHOLE_DAYS, user="alice")),
    ("hour", None, replace(WHOLE_DAYS, properties=(("team", "ml"),))),
    ("day", "property:team", replace(WHOLE_DAYS, properties=(("team", "ml"),))),
    ("day", None, Filters(since=TODAY, until=TODAY + timedelta(days=1))),  # nothing there
]


@pytest.mark.parametrize(("bucket", "by", "filters"), STATS, ids=range(len(STATS)))
def test_stats_are_the_local_ones(pair: Pair, bucket: Any, by: str | None, filters: Filters) -> None:
    params = StatsParams(filters, bucket, by, top=3)
    aws = pair.aws.stats(params)
    assert aws == _approx(pair.local.stats(params))
    if filters == WHOLE_DAYS:
        assert aws["total"]["requests"] == len(pair.records)
        histograms = aws["histograms"]
        assert sum(b["count"] for b in histograms["latency_ms"]) == len(pair.records)
        assert sum(b["count"] for b in histograms["ttft_ms"]) == 40 - 7  # ttft is null for i % 6 == 0


@pytest.mark.parametrize("by", [None, "model", "user", "property:team"])
def test_stats_without_buckets_are_the_local_ones(pair: Pair, by: str | None) -> None:
    """`relaylog stats`: totals and groups only (here, two days of hourly rollups summed per group)."""
    params = StatsParams(Filters(since=DAY0, until=TODAY), None, by, 0)
    aws = pair.aws.stats(params)
    assert aws == _approx(pair.local.stats(params))
    assert aws["total"]["requests"] == len(pair.records) and aws["series"] == []
    with pytest.raises(Unsupported, match="histograms"):
        pair.aws.stats(replace(params, exact=True))
    assert not pair.aws.exact_percentiles and pair.local.exact_percentiles


@pytest.mark.parametrize(
    ("bucket", "by", "filters", "message"),
    [
        ("day", None, replace(WHOLE_DAYS, model="gpt-4o", user="alice"), "2 filters"),
        ("day", "user", replace(WHOLE_DAYS, model="gpt-4o"), "two dimensions"),
        ("day", None, replace(WHOLE_DAYS, status="error"), "status"),
        ("day", None, replace(WHOLE_DAYS, prompt="greet"), "prompt"),
        ("day", "status", WHOLE_DAYS, "by=status"),
        ("minute", None, Filters(since=DAY1, until=DAY1 + timedelta(hours=2)), "minute"),
        ("hour", None, Filters(since=TODAY - timedelta(days=60)), "hourly rollups are kept 35 days"),
        ("day", None, replace(WHOLE_DAYS, search="x"), "Athena"),
    ],
)
def test_stats_the_rollups_cannot_answer_are_refused(
    pair: Pair, bucket: Any, by: str | None, filters: Filters, message: str
) -> None:
    with pytest.raises(Unsupported, match=message):
        pair.aws.stats(StatsParams(filters, bucket, by, top=10))


# -- sessions, users, prompts -----------------------------------------------------------------------


def _all_offset_pages(method: Any, params: PageParams, *args: Any) -> list[dict[str, Any]]:
    pages = []
    while True:
        page = method(params, *args)
        pages.append(page)
        if page["next_cursor"] is None:
            return pages
        params = replace(params, offset=int(page["next_cursor"]))


@pytest.mark.parametrize(
    ("filters", "limit"),
    [
        (Filters(), 2),  # a page at a time: the newest days' sessions looked at first
        (Filters(), 50),
        (Filters(user="alice"), 2),
        (Filters(model="gpt-4o"), 2),
        (Filters(since=DAY1), 2),
        (Filters(session="s-old"), 2),
    ],
)
def test_sessions_are_the_local_ones(pair: Pair, filters: Filters, limit: int) -> None:
    params = PageParams(filters, limit, 0)
    assert _all_offset_pages(pair.aws.sessions, params) == _approx(_all_offset_pages(pair.local.sessions, params))


@pytest.mark.parametrize("session_id", ["s-old", "s-trip", "s-chat"])
def test_a_session_tree_is_the_local_one(pair: Pair, session_id: str) -> None:
    session = pair.aws.session(session_id)
    assert session == _approx(pair.local.session(session_id))
    if session_id == "s-trip":
        assert [child["path"] for child in session["tree"]["children"]] == ["/plan", "/book"]


def test_an_unknown_session_is_not_found(pair: Pair) -> None:
    with pytest.raises(NotFound):
        pair.aws.session("no-such-session")


@pytest.mark.parametrize(
    ("sort", "filters"),
    [
        ("cost", Filters()),
        ("requests", Filters()),
        ("last_seen", Filters()),
        ("last_seen", Filters(since=DAY1)),
        ("cost", Filters(user="bob")),
        ("requests", Filters(until=DAY1)),
    ],
)
def test_users_are_the_local_ones(pair: Pair, sort: str, filters: Filters) -> None:
    params = PageParams(filters, 1, 0)
    aws = _all_offset_pages(pair.aws.users, params, sort)
    assert aws == _approx(_all_offset_pages(pair.local.users, params, sort))


def test_users_by_anything_but_time_and_user_is_refused(pair: Pair) -> None:
    with pytest.raises(Unsupported, match="since, until and user"):
        pair.aws.users(PageParams(Filters(model="gpt-4o"), 10, 0), "cost")


@pytest.mark.parametrize("filters", [Filters(), Filters(since=DAY1), Filters(user="bob"), Filters(prompt="greet")])
def test_prompts_are_the_local_ones(pair: Pair, filters: Filters) -> None:
    params = PageParams(filters, 10, 0)
    assert pair.aws.prompts(params) == _approx(pair.local.prompts(params))
    assert pair.aws.prompts(params)["data"], "the data set has prompts in every range above"


def test_prompt_versions_and_their_diff_are_the_local_ones(pair: Pair) -> None:
    found = pair.aws.prompt_versions("greet")
    assert found == _approx(pair.local.prompt_versions("greet"))
    assert [v["version"] for v in found] == [1, 2]
    assert sum(v["requests"] for v in found) == sum(1 for r in pair.records if r["prompt_id"] == "greet")
    assert version_diff(found, 1, 2) == version_diff(pair.local.prompt_versions("greet"), 1, 2)
    with pytest.raises(NotFound):
        pair.aws.prompt_versions("no-such-prompt")


def test_a_prompt_text_too_large_for_an_item_is_read_from_the_record(pair: Pair) -> None:
    """The aggregator stores no text item for a template over 350 KB: versions then read the records."""
    texts = pair.aws.template_texts
    pair.aws.template_texts = lambda prompt_id: {}  # type: ignore[method-assign]
    try:
        assert pair.aws.prompt_versions("greet") == _approx(pair.local.prompt_versions("greet"))
        assert pair.aws.request_template(_id(pair, 1)) == pair.local.request_template(_id(pair, 1))
    finally:
        pair.aws.template_texts = texts  # type: ignore[method-assign]


def test_aggregate_lists_refuse_search(pair: Pair) -> None:
    params = PageParams(Filters(search="x"), 10, 0)
    for call in (pair.aws.sessions, pair.aws.prompts, lambda p: pair.aws.users(p, "cost")):
        with pytest.raises(Unsupported, match="Athena"):
            call(params)


def test_scan_stops_at_its_budget_with_a_position() -> None:
    """The position a cut-short scan reports is a cursor the next page starts after."""
    page = {"Items": [{"pk": {"S": "REQS#2026-11-26"}, "sk": {"S": "2026-11-26T10:00:00.000000Z#b"}}],
            "LastEvaluatedKey": {"pk": {"S": "REQS#2026-11-26"}, "sk": {"S": "2026-11-26T10:00:00.000000Z#b"}},
            "ScannedCount": 1}  # fmt: skip

    class Client:
        def query(self, **_: Any) -> dict[str, Any]:
            return page

    span = Span("2026-11-26", "~")
    scan = Scan(Table(Client(), "t"), [Stream([{}], "2026-11-25~")], span, max_calls=2)
    assert len(list(scan.pages())) == 2 and not scan.exhausted
    assert scan.position == "2026-11-26T10:00:00.000000Z#b"


def test_the_index_default_range_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The query function reads the stack's retention from its environment (config.py) and hands it in."""
    monkeypatch.setenv(layout.ENV_INDEX_DAYS, "7")
    monkeypatch.setenv(layout.ENV_HOURLY_TTL_DAYS, "3")
    retention = Retention.from_env()
    assert retention == Retention(index_days=7, hourly_rollup_days=3)
    backend = DynamoBackend("t", "b", object(), object(), retention)
    assert (backend.index.index_days, backend.rollups.hourly_days) == (7, 3)
    span = backend.index.span(Filters())
    assert span.low[:10] == (datetime.now(UTC) - timedelta(days=7)).strftime("%Y-%m-%d") and span.high == "~"
    monkeypatch.delenv(layout.ENV_INDEX_DAYS)
    monkeypatch.delenv(layout.ENV_HOURLY_TTL_DAYS)
    assert Retention.from_env() == Retention(index_days=layout.DEFAULT_INDEX_DAYS, hourly_rollup_days=35)


def test_stats_filter_on_a_value_longer_than_rollup_keys_keep(aws_stack: Any) -> None:
    """Rollup items cut values over 200 characters (with a hash); a filter on the full value still finds them."""
    long_user = "u" * 150 + "-" + "v" * 150
    other_user = "u" * 150 + "-" + "w" * 150  # same first 200 characters
    created = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    records = [
        make_record(created, user_id=long_user, properties={"ticket": long_user}),
        make_record(created + timedelta(seconds=1), user_id=other_user),
    ]
    key = layout.partition_path(layout.RAW_PREFIX, records[0]["dt"], records[0]["hour"]) + "long-values"
    aws_stack.put_raw_object(key, records)
    s3, ddb = aws_stack.client("s3"), aws_stack.client("dynamodb")
    process_object(s3, ddb, aws_stack.table, aws_stack.bucket, key)
    backend = DynamoBackend(aws_stack.table, aws_stack.bucket, ddb, s3)
    since = datetime.now(UTC) - timedelta(days=1)
    for filters in (Filters(since=since, user=long_user), Filters(since=since, properties=(("ticket", long_user),))):
        answer = backend.stats(StatsParams(filters, "hour", None, 10))
        assert answer["total"]["requests"] == 1, filters
