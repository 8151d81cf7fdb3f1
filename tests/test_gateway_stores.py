"""The local gateway stores: response cache files and SQLite rate-limit counters, shared by
several processes on one data dir (`relaylog serve --workers N`)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from relaylog.gateway.cache import CachedResponse, encode
from relaylog.gateway.cache.files import FileCacheStore
from relaylog.gateway.counters import sqlite as counters_sqlite
from relaylog.gateway.counters.sqlite import SqliteCounters

KEY = "3f" + "a1" * 31  # a sha256 hex digest, as the relay makes cache keys


def entry(text: str = "hello", *, ttl: float = 3600.0, chunks: int = 1) -> CachedResponse:
    body = f'{{"choices":[{{"message":{{"content":"{text}"}}}}]}}'.encode()
    return CachedResponse(
        status=200,
        headers=[(b"content-type", b"application/json"), (b"x-request-id", b"req_1")],
        chunks=[body] * chunks,
        offsets_ms=[float(i) for i in range(chunks)],
        withheld=[b'data: {"usage":{}}\n\n'],
        usage_injected=True,
        content_type="application/json",
        content_encoding=None,
        expires_at=time.time() + ttl,
    )


# -- FileCacheStore ------------------------------------------------------------------------------


def test_cache_round_trip_per_slot(tmp_path: Path) -> None:
    store = FileCacheStore(tmp_path / "cache")
    first, second = entry("one"), entry("two", chunks=3)
    assert asyncio.run(store.get(KEY, 0)) is None  # nothing yet, not even the root
    asyncio.run(store.put(KEY, 0, first))
    asyncio.run(store.put(KEY, 1, second))
    assert asyncio.run(store.get(KEY, 0)) == first
    assert asyncio.run(store.get(KEY, 1)) == second
    assert asyncio.run(store.get(KEY, 2)) is None
    assert asyncio.run(store.get("0" * 64, 0)) is None
    assert store.path(KEY, 1) == tmp_path / "cache" / KEY[:2] / KEY / "1"
    # A later put replaces the slot whole, and leaves no temporary file behind.
    asyncio.run(store.put(KEY, 0, second))
    assert asyncio.run(store.get(KEY, 0)) == second
    assert sorted(p.name for p in (tmp_path / "cache" / KEY[:2] / KEY).iterdir()) == ["0", "1"]


def test_cache_keys_never_leave_the_root(tmp_path: Path) -> None:
    store = FileCacheStore(tmp_path / "cache")
    asyncio.run(store.put("../../escape", 0, entry()))
    assert asyncio.run(store.get("../../escape", 0)) == asyncio.run(store.get("../../escape", 0)) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
    assert store.path("../../escape", 0).resolve().is_relative_to((tmp_path / "cache").resolve())
    with pytest.raises(ValueError):
        store.path(KEY, -1)


def test_expired_entry_is_a_miss_and_removed(tmp_path: Path) -> None:
    store = FileCacheStore(tmp_path / "cache")
    asyncio.run(store.put(KEY, 0, entry(ttl=-1)))
    assert store.path(KEY, 0).exists()
    assert asyncio.run(store.get(KEY, 0)) is None
    assert not store.path(KEY, 0).exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_torn_entry_is_a_miss_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    store = FileCacheStore(tmp_path / "cache")
    asyncio.run(store.put(KEY, 0, entry()))
    path = store.path(KEY, 0)
    whole = path.read_bytes()
    path.write_bytes({"truncate": whole[:-7], "garbage": b"\x00\xff not an entry\n", "empty": b""}[damage])
    with caplog.at_level(logging.WARNING, logger="relaylog"):
        assert asyncio.run(store.get(KEY, 0)) is None
    assert "cache entry unreadable" in caplog.text
    fresh = entry("fresh")
    asyncio.run(store.put(KEY, 0, fresh))  # the next fill repairs the slot
    assert asyncio.run(store.get(KEY, 0)) == fresh


def test_put_that_cannot_write_logs_and_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "cache").write_text("a file where the cache directory should be")
    store = FileCacheStore(tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="relaylog"):
        asyncio.run(store.put(KEY, 0, entry()))
    assert "cache entry not stored" in caplog.text
    assert asyncio.run(store.get(KEY, 0)) is None


def test_sweep_removes_expired_entries_and_abandoned_temp_files(tmp_path: Path) -> None:
    store = FileCacheStore(tmp_path / "cache")
    asyncio.run(store.put(KEY, 0, entry(ttl=60)))
    asyncio.run(store.put(KEY, 1, entry(ttl=-5)))
    abandoned = store.path(KEY, 0).parent / ".tmp-dead"
    abandoned.write_bytes(b"half")
    os.utime(abandoned, (time.time() - 7200, time.time() - 7200))
    recent = store.path(KEY, 0).parent / ".tmp-busy"  # a writer still at work
    recent.write_bytes(b"half")
    assert store.sweep() == 2
    assert sorted(p.name for p in store.path(KEY, 0).parent.iterdir()) == [".tmp-busy", "0"]
    assert store.sweep(now=time.time() + 120) == 1  # the 60 s entry, once its time has come
    assert sorted(p.name for p in store.path(KEY, 0).parent.iterdir()) == [".tmp-busy"]


def _fill_slot(root: str, text: str, count: int, start: Any) -> None:
    store = FileCacheStore(Path(root))
    start.wait()
    for _ in range(count):
        asyncio.run(store.put(KEY, 0, entry(text * 50)))


@pytest.mark.slow
def test_two_processes_filling_one_slot_never_leave_a_torn_entry(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    root = str(tmp_path / "cache")
    writers = [ctx.Process(target=_fill_slot, args=(root, text, 300, start)) for text in ("a", "bb")]
    for writer in writers:
        writer.start()
    store = FileCacheStore(Path(root))
    seen: set[str] = set()
    start.set()
    while any(writer.is_alive() for writer in writers):
        got = asyncio.run(store.get(KEY, 0))
        if got is not None:
            seen.add(got.chunks[0].decode())
    for writer in writers:
        writer.join()
        assert writer.exitcode == 0
    final = asyncio.run(store.get(KEY, 0))
    assert final is not None
    seen.add(final.chunks[0].decode())
    wanted = {entry(text * 50).chunks[0].decode() for text in ("a", "bb")}
    assert seen <= wanted and seen  # only ever one whole entry or the other
    assert [p.name for p in store.path(KEY, 0).parent.iterdir()] == ["0"]


def test_entry_bytes_on_disk_are_the_encoded_entry(tmp_path: Path) -> None:
    # Other tools (and the AWS store) read the same encoding; the file adds nothing around it.
    store = FileCacheStore(tmp_path / "cache")
    e = entry()
    asyncio.run(store.put(KEY, 0, e))
    assert store.path(KEY, 0).read_bytes() == encode(e)


# -- SqliteCounters ------------------------------------------------------------------------------


def _take_many(path: str, threads: int, tries: int, limit: float, start: Any, results: Any) -> None:
    store = SqliteCounters(Path(path))
    expires_at = time.time() + 3600
    granted: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        mine = [
            value for added, value in (store.take_now("shared", 1, limit, expires_at) for _ in range(tries)) if added
        ]
        with lock:
            granted.extend(mine)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    start.wait()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(granted)


@pytest.mark.slow
def test_processes_and_threads_never_take_more_than_the_limit(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    path = str(tmp_path / "counters.sqlite")
    SqliteCounters(Path(path))  # the schema exists before the race starts
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_take_many, args=(path, 4, 40, 100, start, results)) for _ in range(4)]
    for proc in procs:
        proc.start()
    start.set()
    granted = [value for _ in procs for value in results.get(timeout=60)]
    for proc in procs:
        proc.join()
        assert proc.exitcode == 0
    # 640 tries, 100 granted; each grant saw its own count, so none was shared or lost.
    assert sorted(granted) == [float(n) for n in range(1, 101)]
    assert SqliteCounters(Path(path)).value("shared") == 100


def test_take_adds_only_within_the_limit(tmp_path: Path) -> None:
    store = SqliteCounters(tmp_path / "c.sqlite")
    later = time.time() + 60
    assert [store.take_now("r", 1, 3, later) for _ in range(5)] == [
        (True, 1),
        (True, 2),
        (True, 3),
        (False, 3),
        (False, 3),
    ]
    assert asyncio.run(store.take("r", 1, 3, later)) == (False, 3)
    assert store.take_now("big", 5, 3, later) == (False, 0)  # more than the whole limit: refused, nothing stored
    assert store.value("big") == 0
    assert store.take_now("step", 2, 3, later) == (True, 2)
    assert store.take_now("step", 2, 3, later) == (False, 2)  # 4 would pass the limit
    assert store.take_now("step", 1, 3, later) == (True, 3)


def test_cents_are_checked_before_and_deducted_after(tmp_path: Path) -> None:
    store = SqliteCounters(tmp_path / "c.sqlite")
    later = time.time() + 60
    assert store.take_now("cents", 0, 100, later) == (True, 0)  # a check: nothing spent yet
    store.add("cents", 60.25, later)  # the first call's real cost
    assert store.take_now("cents", 0, 100, later) == (True, 60.25)
    store.add("cents", 50.5, later)  # allowed while under the quota, so it may end past it
    assert store.take_now("cents", 0, 100, later) == (False, 110.75)
    store.add("fresh", 0.003, later)  # add needs no take first
    assert store.value("fresh") == pytest.approx(0.003)


def test_expired_counters_restart_and_are_swept_now_and_then(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])  # the clock the store reads (time.time)
    path = tmp_path / "c.sqlite"
    store = SqliteCounters(path)

    def rows() -> list[str]:
        with sqlite3.connect(path) as conn:
            return sorted(name for (name,) in conn.execute("SELECT name FROM counters"))

    assert store.take_now("old", 1, 1, clock[0] + 10) == (True, 1)  # the first take sweeps (nothing)
    assert store.take_now("old", 1, 1, clock[0] + 10) == (False, 1)
    clock[0] += 20  # "old" has expired but its row is still there
    assert store.value("old") == 0
    assert store.take_now("old", 1, 1, clock[0] + 10) == (True, 1)  # counted from 0 again
    store.add("gone", 1, clock[0] - 1)
    assert rows() == ["gone", "old"]
    clock[0] += 30
    store.take_now("other", 1, 5, clock[0] + 100)
    assert rows() == ["gone", "old", "other"]  # under a minute since the last sweep: kept
    clock[0] += counters_sqlite.SWEEP_INTERVAL_S
    store.take_now("other", 1, 5, clock[0] + 100)
    assert rows() == ["other"]


def test_settings_each_connection_gets(tmp_path: Path) -> None:
    store = SqliteCounters(tmp_path / "c.sqlite")
    conn = store._connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 0  # OFF: see the module docstring
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] > 0  # checkpoints keep the WAL small
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    other: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: other.append(store._connection()))
    thread.start()
    thread.join()
    assert other[0] is not conn  # one connection per thread


def test_a_damaged_file_is_moved_aside_and_counting_restarts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"SQLite format 3\x00" + b"\x13" * 4000)  # what a torn write could leave
    with caplog.at_level(logging.WARNING, logger="relaylog"):
        store = SqliteCounters(path)
    assert "counting from zero" in caplog.text
    assert store.take_now("r", 1, 2, time.time() + 60) == (True, 1)
    assert [p.name.split("-")[0] for p in tmp_path.iterdir() if ".damaged" in p.name] == ["c.sqlite.damaged"]


def test_a_sound_file_is_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "c.sqlite"
    SqliteCounters(path).take_now("r", 1, 5, time.time() + 60)
    with caplog.at_level(logging.WARNING, logger="relaylog"):
        again = SqliteCounters(path)  # as a restarted process opens it
    assert again.value("r") == 1 and caplog.text == ""
