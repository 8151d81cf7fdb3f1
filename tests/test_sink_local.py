"""The local sink's flush: what was submitted is on disk when flush returns."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from relaylog.config import Settings
from relaylog.headers import HeliconeMeta
from relaylog.observe import Exchange
from relaylog.providers.registry import PROVIDERS
from relaylog.sinks.local import LocalSink


def _exchange(n: int) -> Exchange:
    started = time.perf_counter()
    exchange = Exchange(
        f"0b8d0c1e-2f4a-4d5b-9c6e-{n:012d}", 1_795_000_000.0, started, "GET", "/v1/models", HeliconeMeta()
    )
    exchange.provider = PROVIDERS["openai"]
    exchange.endpoint = "/v1/models"
    exchange.finished = started + 0.001
    return exchange


def _lines(data_dir: Path) -> list[dict[str, object]]:
    return [
        orjson.loads(line) for f in sorted(data_dir.glob("raw/*/*/*.jsonl")) for line in f.read_bytes().splitlines()
    ]


def test_flush_returns_once_every_submitted_record_is_written(tmp_path: Path) -> None:
    sink = LocalSink(Settings(data_dir=tmp_path))
    try:
        for round_ in range(3):
            for n in range(50):
                sink.submit(_exchange(round_ * 50 + n))
            sink.flush(5.0)
            # No sleep, no polling: flush alone guarantees the lines are there.
            assert len(_lines(tmp_path)) == (round_ + 1) * 50
    finally:
        sink.close()
    assert len({r["request_id"] for r in _lines(tmp_path)}) == 150


def test_flush_gives_up_after_its_timeout_when_the_writer_is_gone(tmp_path: Path) -> None:
    sink = LocalSink(Settings(data_dir=tmp_path))
    sink.close()  # the writer thread has stopped: nothing will ever answer the flush
    started = time.monotonic()
    sink.flush(0.2)
    assert 0.2 <= time.monotonic() - started < 2
