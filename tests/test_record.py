"""The record builder's output is exactly schema v1."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path

from relaylog.config import Settings
from relaylog.observe import Exchange
from relaylog.headers import HeliconeMeta
from relaylog.providers.registry import PROVIDERS
from relaylog.record import FIELDS
from relaylog.recording import build_record
from relaylog.usage import EMPTY_FIELDS, Usage


class _Bodies:
    def put(self, request_id: str, dt: str, kind: str, data: bytes) -> str:
        return f"bodies/dt={dt}/{request_id}.{kind}"


def test_usage_fields_are_the_schema_usage_columns() -> None:
    pricing_only = {"cache_write_1h_tokens"}
    assert tuple(EMPTY_FIELDS) == tuple(f.name for f in fields(Usage) if f.name not in pricing_only)
    assert Usage(1, 2, 3, 4, 5, 6, 7, 8).as_fields() == dict(zip(EMPTY_FIELDS, range(1, 8), strict=True))
    assert set(EMPTY_FIELDS) <= set(FIELDS)


def test_record_has_every_schema_field_in_order(tmp_path: Path) -> None:
    started = time.perf_counter()
    exchange = Exchange("0b8d0c1e-2f4a-4d5b-9c6e-7f8091a2b3c4", 1_795_000_000.25, started, "GET", "/v1/models", HeliconeMeta())
    exchange.provider = PROVIDERS["openai"]
    exchange.endpoint = "/v1/models"
    exchange.finished = started + 0.002
    record = build_record(exchange, Settings(data_dir=tmp_path), _Bodies())
    assert tuple(record) == FIELDS
    assert record["created_at"] == "2026-11-18T11:06:40.250000Z"
    assert (record["dt"], record["hour"]) == ("2026-11-18", "11")
    assert record["latency_ms"] == 2.0 and record["ttft_ms"] is None


def test_generated_request_ids_are_uuid4_and_caller_ids_are_kept() -> None:
    import uuid

    from relaylog.headers import request_id

    ids = {request_id(None) for _ in range(1000)}
    assert len(ids) == 1000
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == value
    caller = "6F1E3A0C-8B2D-4C5E-9F70-112233445566"
    assert request_id(caller) == caller.lower()
    assert request_id("../../etc/passwd") != "../../etc/passwd"


def test_headers_named_by_connection_are_hop_by_hop_both_ways() -> None:
    from relaylog.headers import response_headers, split_headers

    _, upstream, _ = split_headers(
        [(b"connection", b"keep-alive, X-Hop"), (b"x-hop", b"1"), (b"x-end", b"2"), (b"te", b"trailers")]
    )
    assert upstream == [("x-end", "2")]
    relayed = response_headers(
        ((b"Connection", b"close, X-Trace"), (b"X-Trace", b"a"), (b"Content-Length", b"2"), (b"X-Request-Id", b"r")),
        keep_length=True,
    )
    assert relayed == [(b"Content-Length", b"2"), (b"X-Request-Id", b"r")]
