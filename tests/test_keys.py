"""relaylog API keys: hashed at rest, cheap to verify, safe to change from several processes."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
from relaylog import keys as keys_module
from relaylog.keys import KeysUnavailable
from relaylog.keys.file import KeyFileError, KeyStore


class Clock:
    """Stands in for time.monotonic so reload throttling is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(keys_module, "monotonic", fake)
    return fake


def test_create_returns_secret_once_and_stores_only_its_hash(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    secret, info = store.create("ci")
    assert secret.startswith("rl-") and len(secret) >= 40
    assert info.key_id.startswith("key_") and len(info.key_id) == 12
    assert info.name == "ci" and info.active and info.prefix == secret[:6]
    assert info.created_at.endswith("Z")

    raw = (tmp_path / "keys.json").read_bytes()
    assert secret.encode() not in raw and secret[6:].encode() not in raw
    doc = orjson.loads(raw)
    assert doc["keys"][0]["sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    assert stat.S_IMODE(os.stat(tmp_path / "keys.json").st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_verify_and_revoke(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    first, a = store.create()
    second, b = store.create("other")
    assert a.key_id != b.key_id and first != second
    assert store.verify(first) == a.key_id
    assert store.verify(second) == b.key_id
    assert store.verify(first + "x") is None
    assert store.verify("") is None
    assert store.active_count() == 2

    assert store.revoke(a.key_id) is True
    assert store.verify(first) is None  # this process sees its own change at once
    assert store.verify(second) == b.key_id
    assert store.revoke(a.key_id) is False  # already revoked
    assert store.revoke("key_nothere") is False
    assert store.active_count() == 1

    listed = {k.key_id: k for k in store.list()}
    assert listed[a.key_id].revoked_at is not None and not listed[a.key_id].active
    assert listed[b.key_id].active and listed[b.key_id].name == "other"


def test_missing_file_means_no_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "nowhere" / "keys.json")
    assert store.list() == []
    assert store.verify("rl-anything") is None
    assert store.active_count() == 0
    assert store.revoke("key_12345678") is False


def test_running_server_sees_other_process_changes_within_a_second(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "keys.json"
    server = KeyStore(path)
    assert server.active_count() == 0

    cli = KeyStore(path)  # another process: its own instance, sharing only the file
    secret, info = cli.create("late")
    assert server.verify(secret) is None  # checked less than a second ago: not re-read yet
    clock.now += 1.01
    assert server.verify(secret) == info.key_id

    cli.revoke(info.key_id)
    clock.now += 0.5
    assert server.verify(secret) == info.key_id
    clock.now += 0.6
    assert server.verify(secret) is None


def test_verify_does_not_read_the_file_per_call(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    store = KeyStore(tmp_path / "keys.json")
    secret, info = store.create()
    assert store.verify(secret) == info.key_id

    stats: list[str] = []
    reads: list[Path] = []
    real_stat, real_read = os.stat, Path.read_bytes

    def counted_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        stats.append(str(path))
        return real_stat(path, *args, **kwargs)

    def counted_read(self: Path) -> bytes:
        reads.append(self)
        return real_read(self)

    monkeypatch.setattr(os, "stat", counted_stat)
    monkeypatch.setattr(Path, "read_bytes", counted_read)
    for _ in range(1000):
        assert store.verify(secret) == info.key_id
    assert stats == [] and reads == []

    clock.now += 2  # a second later: one stat, and no read because nothing changed
    for _ in range(1000):
        store.verify(secret)
    assert len(stats) == 1 and reads == []


def test_unreadable_file_keeps_previous_keys_on_hot_path(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    secret, info = store.create()
    assert store.verify(secret) == info.key_id
    path.write_text("{ not json")
    clock.now += 2
    with caplog.at_level(logging.WARNING, logger="relaylog"):
        assert store.verify(secret) == info.key_id
    assert "keeping previously loaded keys" in caplog.text
    with pytest.raises(KeyFileError):
        store.list()
    with pytest.raises(KeyFileError):
        store.create()


def test_a_file_unreadable_from_the_start_refuses_every_check_until_it_can_be_read(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail closed: a store that has never been read must not look like a store without keys."""
    path = tmp_path / "keys.json"
    secret, info = KeyStore(path).create()
    good = path.read_bytes()
    path.write_text("{ not json")
    store = KeyStore(path)
    with caplog.at_level(logging.WARNING, logger="relaylog"):
        with pytest.raises(KeysUnavailable):
            store.active_count()
        with pytest.raises(KeysUnavailable):
            store.verify(secret)
    path.write_bytes(good)
    with pytest.raises(KeysUnavailable):  # not read again before the retry interval
        store.active_count()
    clock.now += 1.0
    assert store.active_count() == 1 and store.verify(secret) == info.key_id


def _create_many(path: str, count: int) -> list[str]:
    store = KeyStore(Path(path))
    return [store.create(f"worker-{os.getpid()}")[0] for _ in range(count)]


def test_concurrent_writers_lose_no_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        batches = pool.starmap(_create_many, [(str(path), 15)] * 4)
    secrets_made = [s for batch in batches for s in batch]
    store = KeyStore(path)
    assert len(store.list()) == 60 == len({k.key_id for k in store.list()})
    assert all(store.verify(s) is not None for s in secrets_made)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json", "keys.json.lock"]


# -- limits ----------------------------------------------------------------------------------------


def test_limit_is_stored_canonical_and_looked_up_by_key_id(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    limited_secret, limited = store.create("batch", limit="1000; w=3600 ;u=CENTS")
    _, plain = store.create("plain")
    assert limited.limit == "1000;w=3600;u=cents" and plain.limit is None
    assert store.verify(limited_secret) == limited.key_id
    assert store.limit(limited.key_id) == "1000;w=3600;u=cents"
    assert store.limit(plain.key_id) is None and store.limit("key_nothere") is None
    assert {k.key_id: k.limit for k in KeyStore(path).list()} == {limited.key_id: limited.limit, plain.key_id: None}

    store.revoke(limited.key_id)
    assert store.limit(limited.key_id) is None  # a revoked key's limit is never applied


def test_bad_limit_raises_the_parser_message_and_writes_nothing(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    with pytest.raises(ValueError, match="needs a window"):
        store.create("x", limit="100")
    with pytest.raises(ValueError, match="unit"):
        store.create("x", limit="100;w=60;u=tokens")
    assert not (tmp_path / "keys.json").exists()


def test_limit_is_reread_with_the_keys(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "keys.json"
    server = KeyStore(path)
    assert server.active_count() == 0
    secret, info = KeyStore(path).create("late", limit="5;w=60")
    assert server.limit(info.key_id) is None  # not re-read yet
    clock.now += 1.01
    assert server.verify(secret) == info.key_id and server.limit(info.key_id) == "5;w=60;u=request"


def test_limit_lookup_does_not_touch_the_file(tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    store = KeyStore(tmp_path / "keys.json")
    _, info = store.create(limit="10;w=1")
    assert store.limit(info.key_id) == "10;w=1;u=request"
    monkeypatch.setattr(os, "stat", lambda *a, **k: pytest.fail("stat on the hot path"))
    for _ in range(1000):
        assert store.limit(info.key_id) == "10;w=1;u=request"


def test_files_written_before_limits_existed_still_load(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    secret = "rl-old-key-from-an-earlier-version-of-relaylog"
    old = {
        "version": 1,
        "keys": [
            {
                "key_id": "key_0ld0ld00",
                "name": "old",
                "prefix": secret[:6],
                "created_at": "2024-01-01T00:00:00Z",
                "revoked_at": None,
                "sha256": hashlib.sha256(secret.encode()).hexdigest(),
            }
        ],
    }
    path.write_bytes(orjson.dumps(old))
    store = KeyStore(path)
    assert store.verify(secret) == "key_0ld0ld00" and store.limit("key_0ld0ld00") is None
    assert store.list()[0].limit is None
    _, new = store.create("new", limit="3;w=10")  # rewriting the file keeps the old key as it was
    assert {k.key_id: k.limit for k in store.list()} == {"key_0ld0ld00": None, new.key_id: "3;w=10;u=request"}
    assert store.verify(secret) == "key_0ld0ld00"
