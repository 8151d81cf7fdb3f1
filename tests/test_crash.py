"""Crash safety of the local writer: `relaylog serve` killed with SIGKILL under load, then restarted.

What a crash may cost and what it may not (README "Guarantees"):
- a record the writer has written is never lost to a process crash (it is in the page cache);
- only records of calls completed in the last moments before the kill (still queued for the
  writer's next batch) may be missing, and never half of one;
- a line cut short by a crash is skipped by every query with a warning until a writer starts,
  which cuts it off once (keeping its bytes under <data-dir>/damaged/), so new records are never
  glued onto it;
- the CLI and the query API work on the data dir before and after the restart.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from relaylog.config import Settings
from relaylog.sinks import local as local_sink
from relaylog.sinks.local import LocalSink
from relaylog.standin import StandIn
from relaylog.store.files import has_incomplete_tail, seal_dead_writers, seal_tail, writer_is_dead

from tests.test_serve import REPO, Served
from tests.test_sink_local import _exchange

pytestmark = pytest.mark.crash

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "crash test"}]}
# What a crash in the middle of write() leaves: the first part of a record line, no newline.
TORN = b'{"schema_version":1,"request_id":"77777777-0000-4000-8000-000000000000","created_at":"20'


def _lines(data_dir: Path) -> list[bytes]:
    return [line for path in sorted(data_dir.glob("raw/*/*/*.jsonl")) for line in path.read_bytes().splitlines()]


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaylog", *args, "--json", "--data-dir", str(data_dir)],
        env={**os.environ, "PYTHONPATH": str(REPO / "layers")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


async def _load_until_killed(server: Served, kill_after_s: float) -> tuple[dict[str, float], float]:
    """Calls at concurrency 8 until SIGKILL; returns {request id: when its response was complete}
    for every call the client saw answered in full, and when the kill was sent."""
    acknowledged: dict[str, float] = {}
    killed_at: list[float] = []

    async def client(http: httpx.AsyncClient) -> None:
        while not killed_at:
            request_id = str(uuid.uuid4())
            try:
                response = await http.post(
                    "/v1/chat/completions", json=CHAT, headers={"Helicone-Request-Id": request_id}
                )
            except httpx.HTTPError:
                continue  # cut by the kill: never acknowledged, so it may or may not be recorded
            if response.status_code == 200:
                acknowledged[request_id] = time.monotonic()

    async def killer() -> None:
        await asyncio.sleep(kill_after_s)
        killed_at.append(time.monotonic())
        server.process.send_signal(signal.SIGKILL)

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await asyncio.gather(killer(), *(client(http) for _ in range(8)))
    return acknowledged, killed_at[0]


def test_sigkill_under_load_loses_only_the_last_moments_and_a_restart_carries_on(
    tmp_path: Path, standin: StandIn
) -> None:
    data_dir = tmp_path / "data"
    server = Served(data_dir, standin.url)
    acknowledged, killed_at = asyncio.run(_load_until_killed(server, 1.5))
    server.process.communicate(timeout=10)
    assert server.process.returncode == -signal.SIGKILL
    assert len(acknowledged) > 50, "too little load to say anything"

    records = [orjson.loads(line) for line in _lines(data_dir)]
    ids = [r["request_id"] for r in records]
    assert len(ids) == len(set(ids))  # at most one record per call
    missing = set(acknowledged) - set(ids)
    # What SIGKILL costs: only calls answered in the writer's last batch window (10 ms) plus
    # scheduling slack. 0.5 s is generous for a loaded 2-core runner; typically 0-10 calls.
    late = {i: round(killed_at - acknowledged[i], 3) for i in missing if killed_at - acknowledged[i] > 0.5}
    assert not late, f"records of calls answered well before the kill are missing: {late}"
    print(f"\nSIGKILL under load: {len(acknowledged)} calls answered, {len(records)} records, {len(missing)} lost")

    # A crash in the middle of a write leaves part of a line: queries skip it, with a warning.
    (killed_file,) = data_dir.glob("raw/*/*/*.jsonl")
    with killed_file.open("ab") as f:
        f.write(TORN)
    listed = _cli(data_dir, "requests", "--limit", "100000")
    assert len(orjson.loads(listed.stdout)) == len(records)
    assert "incomplete last line" in listed.stderr and killed_file.name in listed.stderr
    assert orjson.loads(_cli(data_dir, "stats").stdout)["total"]["requests"] == len(records)

    # The restart repairs the torn tail once; new records go into the new writer's own file.
    again = Served(data_dir, standin.url)
    try:
        new_ids = []
        for _ in range(10):
            response = httpx.post(again.url + "/v1/chat/completions", json=CHAT)
            assert response.status_code == 200
            new_ids.append(response.headers["helicone-id"])
        deadline = time.monotonic() + 10
        while True:  # the query API of the restarted server sees old and new records
            page = httpx.get(again.url + "/api/v1/requests", params={"limit": 500}).json()
            seen = {row["request_id"] for row in page["data"]}
            if seen >= set(new_ids) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert seen >= set(new_ids) and len(seen) == min(500, len(records) + len(new_ids))
        stats = httpx.get(again.url + "/api/v1/stats").json()["data"]
        assert stats["total"]["requests"] == len(records) + len(new_ids)
    finally:
        stderr = again.stop(signal.SIGTERM)
    assert "was cut short" in stderr and killed_file.name in stderr
    assert not has_incomplete_tail(killed_file)
    (kept,) = (data_dir / "damaged").iterdir()
    assert kept.read_bytes() == TORN
    # Every line of every file is one whole record: nothing glued, nothing lost, nothing twice.
    final = [orjson.loads(line)["request_id"] for line in _lines(data_dir)]
    assert sorted(final) == sorted(ids + new_ids)
    after = _cli(data_dir, "stats")
    assert orjson.loads(after.stdout)["total"]["requests"] == len(final) and "incomplete" not in after.stderr


def test_a_write_cut_short_in_the_writer_is_never_glued_onto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk in the middle of a batch: the writer lives on, and the next batch starts on a
    line of its own (the torn part is cut off and kept), so every later record is readable."""
    real = local_sink._write_all
    failures = [1]

    def half_then_enospc(fd: int, data: bytes) -> None:
        if failures and len(data) > 4000:  # the batch of ten, not the single record before it
            failures.pop()
            os.write(fd, data[: len(data) // 2 + 7])  # not on a line boundary
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(local_sink, "_write_all", half_then_enospc)
    sink = LocalSink(Settings(data_dir=tmp_path))
    try:
        sink.submit(_exchange(0))
        sink.flush(5.0)
        for n in range(1, 11):  # one batch of ten: half of it reaches the disk
            sink.submit(_exchange(n))
        sink.flush(5.0)
        for n in range(11, 21):
            sink.submit(_exchange(n))
        sink.flush(5.0)
    finally:
        sink.close()
    lines = _lines(tmp_path)
    records = [orjson.loads(line) for line in lines]  # every line whole
    numbers = [int(r["request_id"][-12:]) for r in records]
    assert numbers[0] == 0 and numbers[-10:] == list(range(11, 21))
    assert set(numbers[1:-10]) < set(range(1, 11))  # the whole lines before the cut are kept
    (kept,) = (tmp_path / "damaged").iterdir()
    assert kept.read_bytes().startswith(b'{"') and b"\n" not in kept.read_bytes()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_torn_files_of_dead_writers_of_this_host_are_sealed(tmp_path: Path) -> None:
    hour = tmp_path / "raw" / "dt=2026-01-02" / "hour=03"
    hour.mkdir(parents=True)
    whole = b'{"request_id":"a"}\n'
    dead, alive, other_host, unfinished, clean = (
        hour / f"box-1-{_dead_pid()}-1700000000.jsonl",
        hour / f"box-1-{os.getppid()}-1700000000.jsonl",
        hour / f"elsewhere-{_dead_pid()}-1700000000.jsonl",
        hour / f"box-1-{_dead_pid()}-1700000001.jsonl",
        hour / f"box-1-{_dead_pid()}-1700000002.jsonl",
    )
    for path in (dead, alive, other_host):
        path.write_bytes(whole + TORN)
    unfinished.write_bytes(whole + b'{"request_id":"b"}')  # whole, only its newline missing
    clean.write_bytes(whole)
    assert writer_is_dead(dead, "box-1") and not writer_is_dead(alive, "box-1")
    assert not writer_is_dead(other_host, "box-1") and not writer_is_dead(hour / "w.jsonl", "box-1")

    assert seal_dead_writers(tmp_path, "box-1") == 1
    assert dead.read_bytes() == whole
    assert alive.read_bytes() == other_host.read_bytes() == whole + TORN  # maybe still being written
    assert unfinished.read_bytes() == whole + b'{"request_id":"b"}\n'
    assert clean.read_bytes() == whole
    assert seal_dead_writers(tmp_path, "box-1") == 0  # once only
    assert [p.read_bytes() for p in (tmp_path / "damaged").iterdir()] == [TORN]


def test_seal_tail_finds_a_partial_line_longer_than_one_read(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    torn = b'{"request_id":"b","request_body":"' + b"x" * 200_000
    path.write_bytes(b'{"request_id":"a"}\n' + torn)
    assert seal_tail(path, tmp_path / "damaged") == len(torn)
    assert path.read_bytes() == b'{"request_id":"a"}\n'
    only_torn = tmp_path / "x.jsonl"
    only_torn.write_bytes(torn)
    assert seal_tail(only_torn, tmp_path / "damaged") == len(torn) and only_torn.read_bytes() == b""
