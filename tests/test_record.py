"""The record builder's output is exactly schema v1."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import get_args

from relaylog.config import Settings
from relaylog.headers import HeliconeMeta
from relaylog.observe import Exchange
from relaylog.providers.registry import PROVIDERS
from relaylog.record import FIELDS, CacheStatus, CostSourceKind, ErrorType, UsageSource
from relaylog.recording import build_record
from relaylog.usage import EMPTY_FIELDS, Usage

from tests.support.records import NamedBodies


def test_usage_fields_are_the_schema_usage_columns() -> None:
    pricing_only = {"cache_write_1h_tokens"}
    assert tuple(EMPTY_FIELDS) == tuple(name for name in Usage._fields if name not in pricing_only)
    assert Usage(1, 2, 3, 4, 5, 6, 7, 8).as_fields() == dict(zip(EMPTY_FIELDS, range(1, 8), strict=True))
    assert set(EMPTY_FIELDS) <= set(FIELDS)


def test_record_has_every_schema_field_in_order(tmp_path: Path) -> None:
    started = time.perf_counter()
    exchange = Exchange(
        "0b8d0c1e-2f4a-4d5b-9c6e-7f8091a2b3c4", 1_795_000_000.25, started, "GET", "/v1/models", HeliconeMeta()
    )
    exchange.provider = PROVIDERS["openai"]
    exchange.endpoint = "/v1/models"
    exchange.finished = started + 0.002
    record = build_record(exchange, Settings(data_dir=tmp_path), NamedBodies())
    assert tuple(record) == FIELDS
    assert record["created_at"] == "2026-11-18T11:06:40.250000Z"
    assert (record["dt"], record["hour"]) == ("2026-11-18", "11")
    assert record["latency_ms"] == 2.0 and record["ttft_ms"] is None


def test_created_at_text_is_what_datetime_writes() -> None:
    import math
    import random
    from datetime import UTC, datetime

    from relaylog.recording import utc_text

    rng = random.Random(17)
    seconds = [0, 1_795_000_000, 1_795_003_599, 1_795_003_600, 1_798_761_599, 4_102_444_799]
    seconds += [rng.randrange(1_000_000_000, 4_000_000_000) for _ in range(300)]
    stamps: list[float] = []
    for second in seconds:
        for micros in (0, 1, 499_999, 500_000, 999_998, 999_999, rng.randrange(1_000_000)):
            exact = second + micros / 1e6
            # The float nearest a whole microsecond, one half-way to the next (datetime rounds half
            # to even), and the floats either side of each.
            for value in (exact, exact + 5e-7, second + (micros + 0.5) / 1e6):
                stamps += [value, math.nextafter(value, 0.0), math.nextafter(value, math.inf)]
        stamps += [second + rng.random() for _ in range(20)]
    for stamp in stamps:
        assert utc_text(stamp) == datetime.fromtimestamp(stamp, UTC).isoformat(timespec="microseconds")[:26], stamp


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
        ((b"connection", b"close, X-Trace"), (b"x-trace", b"a"), (b"content-length", b"2"), (b"x-request-id", b"r")),
        keep_length=True,
        connection=[b"close, X-Trace"],  # the response's Connection values (relay/http1 collects them)
    )
    assert relayed == [(b"content-length", b"2"), (b"x-request-id", b"r")]


# -- the record's closed sets: the Literals in record.py, the README, and what the code produces --

README = Path(__file__).resolve().parent.parent / "README.md"
_CLOSED: dict[str, object] = {"usage_source": UsageSource, "cost_source": CostSourceKind, "cache_status": CacheStatus}


def _table_after(line: str) -> list[list[str]]:
    """The body rows (cells) of the Markdown table that follows `line` in the README."""
    lines = README.read_text().splitlines()
    rows: list[list[str]] = []
    for row in lines[lines.index(line) + 1 :]:
        if row.startswith("|"):
            rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
        elif rows:
            break
    assert len(rows) > 2, f"no table after {line!r} in the README"
    return rows[2:]  # past the header and the |---| line


def _quoted(cell: str) -> list[str]:
    """The `values` in a cell, leaving out those its (explanations) mention."""
    return re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", cell))


def _kind(field: str, value: str) -> str:
    # A priced call's cost_source names the price data: genai-prices@<version>.
    return value.split("@", 1)[0] if field == "cost_source" else value


def test_the_readme_error_table_lists_exactly_the_error_types() -> None:
    documented = [value for row in _table_after("`error_type` values:") for value in _quoted(row[0])]
    assert len(documented) == len(set(documented))
    assert set(documented) == set(get_args(ErrorType))


def test_the_readme_lists_exactly_the_values_of_each_closed_record_field() -> None:
    rows = _table_after(
        "Fields with a fixed set of values (`record.py` types them; a test checks this section against it):"
    )
    documented = {_quoted(row[0])[0]: [_kind(_quoted(row[0])[0], v) for v in _quoted(row[1])] for row in rows}
    assert set(documented) == set(_CLOSED)
    for name, values in documented.items():
        assert set(values) == set(get_args(_CLOSED[name])), name


def test_every_value_the_readme_quotes_for_a_closed_field_is_one() -> None:
    """Prose such as `usage_source = "absent"` or `cache_status: "HIT"`, anywhere in the README."""
    allowed = {name: set(get_args(kind)) for name, kind in _CLOSED.items()} | {"error_type": set(get_args(ErrorType))}
    quoted = re.findall(
        r"\b(error_type|usage_source|cost_source|cache_status)`?\s*[:=]\s*`?\"([^\"]+)\"", README.read_text()
    )
    assert len(quoted) >= 5  # the pattern still finds the README's mentions
    for name, value in quoted:
        assert _kind(name, value) in allowed[name], (name, value)


def test_the_values_the_code_produces_are_in_the_literals() -> None:
    """What the type checker cannot see: routing's refusals typed by providers' own Literal, the
    cost sources as cost.py names them, and the cache hit's, as a record has them."""
    from relaylog import cost
    from relaylog.providers.routing import RouteErrorType

    assert set(get_args(RouteErrorType)) <= set(get_args(ErrorType))
    kinds = set(get_args(CostSourceKind))
    assert {_kind("cost_source", cost.COST_SOURCE), cost.UNKNOWN_MODEL, cost.NO_USAGE} <= kinds
    started = time.perf_counter()
    exchange = Exchange(
        "0b8d0c1e-2f4a-4d5b-9c6e-7f8091a2b3c4", 1_795_000_000.25, started, "GET", "/v1/models", HeliconeMeta()
    )
    exchange.routed(PROVIDERS["openai"], "/v1/models")
    exchange.cache_looked_up("HIT")
    record = build_record(exchange, Settings(), NamedBodies())
    assert (record["cost_source"], record["cache_status"], record["usage_source"]) == ("cache_hit", "HIT", "absent")
