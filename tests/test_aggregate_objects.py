"""Reading a delivered object: gzip or plain told by its bytes, bad lines skipped and logged by number."""

from __future__ import annotations

import gzip
import logging

import orjson
import pytest
from relaylog.aggregate.objects import LOGGED_BAD_LINES, ObjectError, decode
from relaylog.aggregate.rollup import REQUIRED

from tests.support.records import BASE, make_record

SECRET = "the user's secret prompt"


def _lines(*records: dict[str, object]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def test_gzip_and_plain_are_told_by_their_bytes() -> None:
    records = [make_record(BASE, request_id=str(i)) for i in range(3)]
    plain = _lines(*records)
    for data in (plain, gzip.compress(plain), gzip.compress(plain[:500]) + gzip.compress(plain[500:])):
        decoded = decode(data, "s3://b/raw/x.gz", REQUIRED)  # the name says nothing about the format
        assert [r["request_id"] for r in decoded.records] == ["0", "1", "2"] and decoded.bad_lines == 0


def test_bad_lines_are_skipped_and_logged_by_number_only(caplog: pytest.LogCaptureFixture) -> None:
    good = make_record(BASE, request_body=SECRET)
    missing = {k: v for k, v in make_record(BASE, request_body=SECRET).items() if k != "latency_ms"}
    data = b"".join(
        [
            _lines(good),
            SECRET.encode() + b"\n",  # 2: not JSON
            b"[1, 2]\n",  # 3: not an object
            _lines(missing),  # 4: a field the rollup needs is missing
            _lines(make_record(BASE, dt="2026-13-45", request_body=SECRET)),  # 5: no such day
            _lines(make_record(BASE, dt="../../x", request_body=SECRET)),  # 6: would escape the partition
            _lines(make_record(BASE, hour="24")),  # 7
            b"\n   \n",  # 8, 9: blank lines are not records and not bad either
            _lines(good),  # 10
        ]
    )
    with caplog.at_level(logging.WARNING, logger="relaylog.aggregate"):
        decoded = decode(data, "s3://b/spool/y", REQUIRED)
    assert len(decoded.records) == 2 and decoded.bad_lines == 6
    assert [f"skipped line {n} of s3://b/spool/y" in caplog.text for n in (2, 3, 4, 5, 6, 7)] == [True] * 6
    assert SECRET not in caplog.text and "../../x" not in caplog.text


def test_many_bad_lines_are_logged_once_in_total(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="relaylog.aggregate"):
        decoded = decode(b"nope\n" * 500, "s3://b/raw/z", REQUIRED)
    assert decoded.bad_lines == 500 and decoded.records == []
    assert len(caplog.records) == LOGGED_BAD_LINES + 1 and "skipped 500 lines of s3://b/raw/z" in caplog.text


def test_an_unreadable_gzip_fails_the_object_without_its_bytes() -> None:
    with pytest.raises(ObjectError) as failed:
        decode(gzip.compress(_lines(make_record(BASE, request_body=SECRET)))[:60], "s3://b/raw/cut.gz", REQUIRED)
    assert "s3://b/raw/cut.gz" in str(failed.value) and SECRET not in str(failed.value)
