"""Schema-v1 records written the way relaylog's local sink writes them, and the numbers a
correct `stats` must give for them (computed in Python, independently of DuckDB)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from relaylog.record import FIELDS

BASE = datetime(2026, 11, 25, 22, 10, tzinfo=UTC)


class NamedBodies:
    """build_record's body store, naming where a body would go without writing it."""

    def put(self, request_id: str, dt: str, kind: str, data: bytes) -> str:
        return f"bodies/dt={dt}/{request_id}.{kind}"


def make_record(created: datetime, **overrides: Any) -> dict[str, Any]:
    """A complete schema-v1 record for a successful OpenAI chat completion, with overrides."""
    request_id = str(uuid.uuid4())
    request_body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    response_body = '{"id":"chatcmpl-1","choices":[{"message":{"role":"assistant","content":"hello"}}]}'
    record: dict[str, Any] = {
        "schema_version": 1,
        "request_id": request_id,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "dt": created.strftime("%Y-%m-%d"),
        "hour": created.strftime("%H"),
        "provider": "openai",
        "endpoint": "/v1/chat/completions",
        "method": "POST",
        "model": "gpt-4o-mini",
        "response_model": "gpt-4o-mini-2024-07-18",
        "status": 200,
        "stream": False,
        "latency_ms": 812.5,
        "ttft_ms": 790.0,
        "upstream_ms": 805.0,
        "overhead_ms": 7.5,
        "input_tokens": 120,
        "output_tokens": 40,
        "cache_read_tokens": 0,
        "cache_write_tokens": None,
        "reasoning_tokens": 0,
        "audio_input_tokens": None,
        "audio_output_tokens": None,
        "usage_source": "provider",
        "cost_usd": 0.000042,
        "cost_source": "genai-prices@0.0.30",
        "user_id": "alice",
        "session_id": None,
        "session_path": None,
        "session_name": None,
        "prompt_id": None,
        "properties": {},
        "key_id": "key_ab12cd34",
        "cache_status": None,
        "attempt_count": 1,
        "attempts": None,
        "fallback_index": None,
        "error_type": None,
        "parse_error": None,
        "request_body": request_body,
        "response_body": response_body,
        "request_body_ref": None,
        "response_body_ref": None,
        "request_bytes": len(request_body),
        "response_bytes": len(response_body),
        "response_id": "chatcmpl-1",
        "finish_reasons": None,
        "traceparent": None,
        "tracestate": None,
    }
    record.update(overrides)
    assert list(record) == list(FIELDS), "helper out of date with record.FIELDS"
    return record


def write_records(data_dir: Path, records: Iterable[dict[str, Any]], writer: str = "w1") -> list[Path]:
    """Append records as JSON lines into their dt/hour partition files, as the writer does."""
    paths: list[Path] = []
    for record in records:
        path = data_dir / "raw" / f"dt={record['dt']}" / f"hour={record['hour']}" / f"{writer}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as f:
            f.write(orjson.dumps(record) + b"\n")
        if path not in paths:
            paths.append(path)
    return paths


def quantile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, the definition quantile_cont uses."""
    if not values:
        return None
    ordered = sorted(values)
    h = (len(ordered) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo])


def expected_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(records)
    errors = sum(1 for r in records if r["status"] >= 400 or r["status"] == 0 or r["error_type"] is not None)
    latency = [r["latency_ms"] for r in records if r["latency_ms"] is not None]
    ttft = [r["ttft_ms"] for r in records if r["ttft_ms"] is not None]
    return {
        "requests": n,
        "errors": errors,
        "error_rate": errors / n if n else None,
        "input_tokens": sum(r["input_tokens"] or 0 for r in records),
        "output_tokens": sum(r["output_tokens"] or 0 for r in records),
        "cache_read_tokens": sum(r["cache_read_tokens"] or 0 for r in records),
        "usage_unknown": sum(1 for r in records if r["input_tokens"] is None),
        "cost_usd": math.fsum(r["cost_usd"] for r in records if r["cost_usd"] is not None),
        "cost_unknown": sum(1 for r in records if r["cost_usd"] is None),
        **{f"latency_p{round(q * 100)}_ms": quantile(latency, q) for q in (0.5, 0.95, 0.99)},
        **{f"ttft_p{round(q * 100)}_ms": quantile(ttft, q) for q in (0.5, 0.95, 0.99)},
    }


def assert_metrics(actual: dict[str, Any], expected: dict[str, Any], cli_rounded: bool = False) -> None:
    """`cli_rounded`: the command's JSON, where times are rounded to 0.001 ms and costs to 1e-10."""
    assert set(actual) - {"key"} == set(expected)
    for name, value in expected.items():
        if isinstance(value, float):
            # half the last digit kept, and a little for the float the halfway case rounds from
            rounding = (0.0006 if name.endswith("_ms") else 0.6e-10 if "cost" in name else 0) if cli_rounded else 0
            assert actual[name] == pytest.approx(value, rel=1e-9, abs=max(1e-12, rounding)), name
        else:
            assert actual[name] == value, name


NO_USAGE: dict[str, Any] = {
    "input_tokens": None,
    "output_tokens": None,
    "cache_read_tokens": None,
    "usage_source": "absent",
    "cost_usd": None,
    "cost_source": "no_usage",
}


def sample_records() -> list[dict[str, Any]]:
    """Two days, four hours, several providers/models/users, errors, unknown usage and cost."""
    records = []
    models = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5")]
    for i in range(36):
        created = BASE + timedelta(minutes=17 * i, seconds=i, microseconds=1000 * i)
        provider, model = models[i % 3]
        overrides: dict[str, Any] = {
            "provider": provider,
            "model": model,
            "endpoint": "/v1/messages" if provider == "anthropic" else "/v1/chat/completions",
            "latency_ms": 200.0 + (i * 37) % 900 + i / 8,
            "ttft_ms": None if i % 5 == 0 else 50.0 + (i * 13) % 300,
            "input_tokens": 100 + 10 * i,
            "output_tokens": 20 + i,
            "cache_read_tokens": 64 if i % 4 == 0 else 0,
            "cost_usd": round(0.0001 * (i + 1), 7),
            "user_id": ["alice", "bob", None][i % 3 if i % 7 else 2],
            "session_id": "sess-1" if i < 10 else ("sess-2" if i < 20 else None),
            "properties": {"env": "prod" if i % 2 else "dev", **({"Team": "ml"} if i % 3 == 0 else {})},
            "stream": i % 2 == 0,
        }
        if i % 9 == 4:  # upstream error: no usage, no cost
            overrides.update(status=500, error_type="upstream_error", **NO_USAGE)
        if i == 7:  # rate limited by relaylog
            overrides.update(status=429, error_type="rate_limited", **NO_USAGE)
        if i == 11:  # client went away mid-stream: status 0
            overrides.update(status=0, error_type="client_disconnect")
        if i == 14:  # unknown model: usage known, cost not
            overrides.update(model="my-finetune", cost_usd=None, cost_source="unknown_model")
        if i == 20:  # stream ended without usage
            overrides.update(**NO_USAGE)
        records.append(make_record(created, **overrides))
    return records
