"""The request index's shards (moto): each day's count decided once and kept, a day indexed before
shards kept in one partition, claims exact across a change of RELAYLOG_INDEX_SHARDS, and request
lists over days of different shard counts in the same order as the records, page after page."""

from __future__ import annotations

import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from relaylog.aggregate.process import process_object
from relaylog.aws import layout
from relaylog.query.dynamo import index
from relaylog.query.dynamo.backend import DynamoBackend
from relaylog.query.filters import Filters
from relaylog.query.params import ListParams, decode_cursor

from tests.support.aws import Stack, shards_key
from tests.support.records import make_record

pytestmark = pytest.mark.aws

DAYS = [datetime(2026, 11, day, 9, tzinfo=UTC) for day in (24, 25, 26)]


def _process(stack: Stack, key: str, records: list[dict[str, Any]]) -> Any:
    stack.put_raw_object(key, records)
    return process_object(stack.client("s3"), stack.client("dynamodb"), stack.table, stack.bucket, key)


def _shards(stack: Stack, dt: str) -> int | None:
    item = stack.client("dynamodb").get_item(TableName=stack.table, Key=shards_key(dt)).get("Item")
    return int(item["shards"]["N"]) if item else None


def _day(moment: datetime, count: int) -> list[dict[str, Any]]:
    return [make_record(moment + timedelta(minutes=m)) for m in range(count)]


def test_each_day_keeps_the_count_it_was_given_and_a_copy_counts_once(
    aws_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, third = (_day(moment, 6) for moment in DAYS)
    monkeypatch.setenv(layout.ENV_INDEX_SHARDS, "4")
    done = _process(aws_stack, "raw/dt=x/hour=09/a.gz", first + second)
    assert done.counted == 12
    assert (_shards(aws_stack, "2026-11-24"), _shards(aws_stack, "2026-11-25")) == (4, 4)
    ddb = aws_stack.client("dynamodb")
    for record in first + second:
        shard = zlib.crc32(record["request_id"].encode()) % 4
        key = {"pk": {"S": f"REQS#{record['dt']}#{shard}"}, "sk": {"S": aws_stack.index_key(record)["sk"]["S"]}}
        assert ddb.get_item(TableName=aws_stack.table, Key=key).get("Item") is not None
    # The setting changes: days already decided keep theirs, so a copy of a record of theirs finds
    # its claim where the first object put it; a new day gets the new count.
    monkeypatch.setenv(layout.ENV_INDEX_SHARDS, "8")
    again = _process(aws_stack, "raw/dt=x/hour=09/b.gz", second[:3] + third)
    assert (again.counted, again.duplicates) == (6, 3)
    assert (_shards(aws_stack, "2026-11-25"), _shards(aws_stack, "2026-11-26")) == (4, 8)
    everything = aws_stack.rollup(layout.rollup_pk("d", "2026-11-25"), layout.rollup_sk("all", ""))
    assert everything is not None and everything["requests"] == 6


def test_a_day_indexed_before_shards_stays_in_one_partition(aws_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stack updated in the middle of a day: that day's items are under REQS#<dt> already."""
    monkeypatch.setenv(layout.ENV_INDEX_SHARDS, "1")
    before, after = _day(DAYS[0], 3), _day(DAYS[0] + timedelta(hours=1), 3)
    _process(aws_stack, "raw/dt=x/hour=09/old.gz", before)
    ddb = aws_stack.client("dynamodb")
    ddb.delete_item(TableName=aws_stack.table, Key=shards_key("2026-11-24"))  # as the code before shards left it
    monkeypatch.setenv(layout.ENV_INDEX_SHARDS, "16")
    done = _process(aws_stack, "raw/dt=x/hour=10/new.gz", after + before[:1])
    assert (done.counted, done.duplicates) == (3, 1)  # the copy found its claim in the one partition
    assert _shards(aws_stack, "2026-11-24") == 1
    pages = ddb.get_paginator("scan").paginate(TableName=aws_stack.table)
    partitions = {item["pk"]["S"] for page in pages for item in page["Items"] if item["pk"]["S"].startswith("REQS#")}
    assert partitions == {"REQS#2026-11-24"}


def _pages(backend: DynamoBackend, params: ListParams) -> list[list[str]]:
    pages = []
    while True:
        page = backend.list_requests(params)
        pages.append([row["request_id"] for row in page["data"]])
        if page["next_cursor"] is None:
            return pages
        params = replace(params, cursor=decode_cursor(page["next_cursor"], params.sort, params.order))


@pytest.mark.parametrize("budget", [index.MAX_LIST_CALLS, 1])
def test_lists_merge_days_of_any_shard_count_in_order(
    aws_stack: Stack, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """A day from before shards (no count), one of 3 shards, one of 7: pages in time order, each
    request once, whether a page reads every shard to its end or stops after one round of calls."""
    monkeypatch.setattr(index, "MAX_LIST_CALLS", budget)
    records = []
    for moment, shards in zip(DAYS, ("1", "3", "7"), strict=True):
        monkeypatch.setenv(layout.ENV_INDEX_SHARDS, shards)
        day = _day(moment, 11)
        _process(aws_stack, f"raw/dt=x/hour=09/{shards}.gz", day)
        records += day
    aws_stack.client("dynamodb").delete_item(TableName=aws_stack.table, Key=shards_key("2026-11-24"))
    backend = DynamoBackend(aws_stack.table, aws_stack.bucket, aws_stack.client("dynamodb"), aws_stack.client("s3"))
    in_order = [r["request_id"] for r in sorted(records, key=lambda r: (r["created_at"], r["request_id"]))]
    window = Filters(since=DAYS[0] - timedelta(days=1), until=DAYS[-1] + timedelta(days=1))
    for order in ("asc", "desc"):
        pages = _pages(backend, ListParams(filters=window, limit=4, order=order, previews=False))
        listed = [request_id for page in pages for request_id in page]
        assert listed == (in_order if order == "asc" else in_order[::-1])
        assert all(len(page) <= 4 for page in pages)
    # A filter DynamoDB cannot apply (here in Python) still finds each of them once.
    model = Filters(since=window.since, until=window.until, model="gpt-4o-mini")
    listed = [i for page in _pages(backend, ListParams(filters=model, limit=5, previews=False)) for i in page]
    assert listed == in_order[::-1]
