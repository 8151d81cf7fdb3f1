"""The aggregator's pure parts: records → rollup deltas, and the latency/ttft histograms."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from relaylog import histogram
from relaylog.aggregate.rollup import NUMBERS, TOKEN_FIELDS, rollup

from tests.support.records import BASE, make_record, sample_records

FLOAT_SUMS = ("latency_ms_sum", "ttft_ms_sum")


def _records() -> list[dict[str, Any]]:
    """sample_records (two days, errors, unknown usage and cost) plus every token kind and key."""
    extra = [
        make_record(
            BASE + timedelta(minutes=5),
            provider="anthropic",
            model="claude-sonnet-4-5",
            input_tokens=5000,
            output_tokens=700,
            cache_read_tokens=3000,
            cache_write_tokens=1200,
            reasoning_tokens=300,
            cost_usd=0.0123,
            key_id="key_other",
            session_id="sess-9",
        ),
        make_record(
            BASE + timedelta(minutes=6),
            model="gpt-4o-audio-preview",
            input_tokens=90,
            output_tokens=60,
            audio_input_tokens=40,
            audio_output_tokens=50,
            cost_usd=0.002,
            key_id=None,
            user_id=None,
            ttft_ms=None,
            properties={"env": "prod", "Team": "voice"},
        ),
        make_record(BASE + timedelta(minutes=7), status=200, error_type="client_disconnect", latency_ms=0.4),
    ]
    return sample_records() + extra


def _expected(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each item's additions, summed record by record the slow, obvious way."""
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        keys = [("all", "")]
        for dim, field in (
            ("model", "model"),
            ("provider", "provider"),
            ("user", "user_id"),
            ("session", "session_id"),
            ("key", "key_id"),
        ):
            if r[field]:
                keys.append((dim, r[field]))
        keys += [("property", f"{name}={value}") for name, value in r["properties"].items()]
        usage_known = r["input_tokens"] is not None  # as `relaylog stats` tells usage_unknown
        add: dict[str, Any] = {"requests": 1}
        add["errors"] = int(r["status"] == 0 or r["status"] >= 400 or r["error_type"] is not None)
        for name in TOKEN_FIELDS:
            add[name] = r[name] or 0
        add["usage_absent"] = int(not usage_known)
        add["cost_unknown"] = int(r["cost_usd"] is None and usage_known)
        add["latency_ms_sum"] = r["latency_ms"]
        add[f"lat_{histogram.bucket(r['latency_ms'])}"] = 1
        if r["ttft_ms"] is not None:
            add["ttft_ms_sum"] = r["ttft_ms"]
            add["ttft_count"] = 1
            add[f"ttft_{histogram.bucket(r['ttft_ms'])}"] = 1
        cost = Decimal(repr(r["cost_usd"])) if r["cost_usd"] is not None else Decimal(0)
        for pk in (f"ROLLUP#h#{r['dt']}T{r['hour']}", f"ROLLUP#d#{r['dt']}"):
            for dim, value in keys:
                item = items.setdefault((pk, f"{dim}#{value}"), {"cost_usd": Decimal(0)})
                for name, amount in add.items():
                    item[name] = item.get(name, 0) + amount
                item["cost_usd"] += cost
    return {key: {name: v for name, v in item.items() if v} for key, item in items.items()}


def test_every_item_adds_the_sums_over_its_records() -> None:
    records = _records()
    expected = _expected(records)
    deltas = rollup(records)
    assert {(d.pk, d.sk) for d in deltas} == set(expected)
    for delta in deltas:
        got = delta.additions()
        want = expected[(delta.pk, delta.sk)]
        for name in FLOAT_SUMS:
            assert float(got.pop(name, 0)) == pytest.approx(want.pop(name, 0), abs=1e-3), (delta.sk, name)
        assert got == want, (delta.pk, delta.sk)
        assert delta.grain == delta.pk.split("#")[1] and delta.period == delta.pk.split("#")[2]
        assert delta.sk == f"{delta.dim}#{delta.value}"
    # Spot checks that the expectation itself covers what it should.
    assert ("ROLLUP#d#2026-11-25", "property#Team=ml") in expected
    assert ("ROLLUP#h#2026-11-25T22", "key#key_other") in expected
    both_days = expected[("ROLLUP#d#2026-11-25", "all#")] | {}
    for name, value in expected[("ROLLUP#d#2026-11-26", "all#")].items():
        both_days[name] = both_days.get(name, 0) + value
    assert both_days["requests"] == len(records)
    assert all(both_days.get(name) for name in TOKEN_FIELDS), "every token kind is exercised"
    assert both_days["errors"] == 7 and both_days["usage_absent"] == 6 and both_days["cost_unknown"] == 1


def test_deltas_are_sorted_unique_and_describe_their_item() -> None:
    deltas = rollup(_records())
    keys = [(d.pk, d.sk) for d in deltas]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert {d.dim for d in deltas} == {"all", "model", "provider", "user", "session", "key", "property"}
    assert {d.grain for d in deltas} == {"h", "d"}


def test_hourly_items_expire_and_daily_items_stay() -> None:
    record = make_record(datetime(2026, 11, 26, 21, 59, 59, tzinfo=UTC))
    end_of_hour = datetime(2026, 11, 26, 22, tzinfo=UTC)
    for days in (35, 2):
        deltas = rollup([record], hourly_ttl_days=days)
        hourly = {d.expires_at for d in deltas if d.grain == "h"}
        assert hourly == {int((end_of_hour + timedelta(days=days)).timestamp())}
        assert {d.expires_at for d in deltas if d.grain == "d"} == {None}


def test_cost_sums_are_exact_decimals() -> None:
    # 4.2000000000000004e-05 is 0.000042 with binary noise below the picodollar.
    costs = [0.1] * 10 + [4.2000000000000004e-05, 1e-12, 123.456789]
    exact = Decimal("124.456831000001")
    records = [make_record(BASE, cost_usd=c) for c in costs]
    (day, *_) = [d for d in rollup(records) if d.pk == "ROLLUP#d#2026-11-25" and d.dim == "all"]
    assert day.additions()["cost_usd"] == exact


def test_missing_dimensions_make_no_items_and_long_values_stay_distinct() -> None:
    long_a, long_b = "é" * 3000, "é" * 2999 + "e"
    records = [
        make_record(BASE, user_id=long_a, model=None, key_id=None, session_id="", properties={"k": long_b}),
        make_record(BASE, user_id=long_b, model=None, key_id=None),
    ]
    deltas = rollup(records)
    assert not [d for d in deltas if d.dim in ("model", "key", "session")]
    users = [d for d in deltas if d.dim == "user" and d.grain == "h"]
    assert len({d.sk for d in users}) == 2
    for d in deltas:
        assert len(d.sk.encode()) <= 1024
    assert all(d.additions()["requests"] == 1 for d in users)


def test_unused_numbers_are_left_out_of_the_additions() -> None:
    (delta, *_) = rollup([make_record(BASE, ttft_ms=None, cost_usd=0.0)])
    added = delta.additions()
    assert set(added) <= set(NUMBERS) | {f"lat_{i}" for i in range(histogram.BUCKETS)}
    assert "ttft_count" not in added and "cost_usd" not in added and "errors" not in added


# Histograms


def test_bucket_edges() -> None:
    assert [histogram.bucket(ms) for ms in (-3.0, 0.0, 0.999, 1.0)] == [0, 0, 0, 1]
    assert histogram.bucket(2**0.25) == 2 and histogram.bucket(math.nextafter(2**0.25, 0)) == 1
    assert histogram.bucket(2**20.25) == histogram.TOP == histogram.bucket(1e12)
    assert histogram.bucket(15 * 60_000) < histogram.TOP  # a Lambda's longest call has its own bucket
    for index in range(histogram.BUCKETS):
        low, high, mid = histogram.lower_bound(index), histogram.upper_bound(index), histogram.estimate(index)
        assert low <= mid < high
        assert histogram.bucket(low) == index
        if 0 < index < histogram.TOP:
            assert (
                mid / low <= 1 + histogram.RELATIVE_ERROR + 1e-12 and high / mid <= 1 + histogram.RELATIVE_ERROR + 1e-12
            )


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(round(q * len(ordered), 9))) - 1]


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1000, 5000])
def test_percentiles_from_buckets_are_within_the_stated_bound(n: int) -> None:
    rng = random.Random(n)
    values = [rng.lognormvariate(6, 1.2) for _ in range(n)]
    counts = Counter(histogram.bucket(v) for v in values)
    for q, read in histogram.percentiles(counts).items():
        exact = _nearest_rank(values, q)
        assert read is not None
        if exact >= 1:
            assert abs(read - exact) <= histogram.RELATIVE_ERROR * exact, (q, read, exact)
        else:
            assert abs(read - exact) <= 0.5


def test_merged_histograms_read_like_one() -> None:
    rng = random.Random(3)
    parts = [[rng.expovariate(1 / 400) for _ in range(300)] for _ in range(4)]
    merged = histogram.merge(Counter(histogram.bucket(v) for v in part) for part in parts)
    whole = Counter(histogram.bucket(v) for part in parts for v in part)
    assert merged == whole
    assert histogram.percentile(merged, 0.95) == histogram.percentile(whole, 0.95)
    assert histogram.percentile({}, 0.5) is None


def test_counts_read_back_from_an_item() -> None:
    item = {"ttft_3": Decimal(2), "ttft_count": Decimal(9), "ttft_ms_sum": Decimal("12.5"), "lat_40": Decimal(1)}
    assert histogram.counts_from_item(item, histogram.TTFT) == {3: 2}
    assert histogram.counts_from_item(item, histogram.LATENCY) == {40: 1}
    assert histogram.attribute(histogram.LATENCY, 40) == "lat_40"
