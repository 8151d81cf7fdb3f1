"""The local key store: `keys.json` in the data dir, shared by every relaylog process on it.

The file holds hashes only (see the package's docstring). It is re-read only when it changed on
disk, checked at most once a second, which lets `relaylog keys create` in another process take
effect on a running server. Writers take a lock file and replace the file whole (fsynced), so a
reader never sees half a write.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TypeVar

import orjson

from . import CachedKeys, KeyInfo, describe, hash_key, new_secret, normalise_limit, now

log = logging.getLogger(__name__)

T = TypeVar("T")

RELOAD_INTERVAL_S = 1.0
FILE_VERSION = 1


class KeyFileError(Exception):
    """The keys file exists but cannot be read as a relaylog keys file."""


@dataclass(frozen=True, slots=True)
class _Entry:
    info: KeyInfo
    sha256: str


# An alias, because inside KeyStore the name `list` is the method.
_Entries = list[_Entry]


def _parse(raw: bytes) -> _Entries:
    try:
        doc = orjson.loads(raw)
        return [
            _Entry(
                info=KeyInfo(
                    key_id=item["key_id"],
                    name=item.get("name"),
                    prefix=item.get("prefix", ""),
                    created_at=item["created_at"],
                    revoked_at=item.get("revoked_at"),
                    limit=item.get("limit"),  # absent in files written before limits existed
                ),
                sha256=item["sha256"],
            )
            for item in doc["keys"]
        ]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise KeyFileError(f"unreadable keys file: {exc}") from exc


def _serialise(entries: _Entries) -> bytes:
    keys = [{**asdict(e.info), "sha256": e.sha256} for e in entries]
    return orjson.dumps({"version": FILE_VERSION, "keys": keys}, option=orjson.OPT_INDENT_2) + b"\n"


class KeyStore(CachedKeys):
    def __init__(self, path: Path, reload_interval_s: float = RELOAD_INTERVAL_S) -> None:
        super().__init__(reload_interval_s)
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        # (inode, mtime_ns, size) of the file last loaded; None when it did not exist. Writers
        # always os.replace, so the inode alone changes on every write, whatever the clock does.
        self._signature: tuple[int, int, int] | None = None

    @classmethod
    def in_data_dir(cls, data_dir: Path, reload_interval_s: float = RELOAD_INTERVAL_S) -> KeyStore:
        """The key store every relaylog process on this data dir shares."""
        return cls(data_dir / "keys.json", reload_interval_s)

    def _load_active(self) -> list[tuple[str, KeyInfo]] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._signature = None
            return []
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if signature == self._signature:
            return None
        try:
            entries = _parse(self.path.read_bytes())
        except (OSError, KeyFileError) as exc:
            # Keep serving with the keys we had rather than locking every client out.
            log.warning("keeping previously loaded keys: %s: %s", self.path, exc)
            return None
        self._signature = signature
        return [(e.sha256, e.info) for e in entries if e.info.active]

    # -- management (CLI) ----------------------------------------------------------------------

    def list(self) -> list[KeyInfo]:
        return [e.info for e in self._read()]

    def create(self, name: str | None = None, limit: str | None = None) -> tuple[str, KeyInfo]:
        """A new key: the secret (returned only here) and its stored description.

        ValueError when `limit` is not a valid rate-limit policy; nothing is written then."""
        secret = new_secret()
        normalise_limit(limit)  # fail before taking the lock

        def add(entries: _Entries) -> tuple[_Entries, KeyInfo]:
            info = describe(secret, name, {e.info.key_id for e in entries}, limit)
            return [*entries, _Entry(info, hash_key(secret))], info

        return secret, self._update(add)

    def revoke(self, key_id: str) -> bool:
        """True if an active key with this id was revoked now; False if there was none."""

        def mark(entries: _Entries) -> tuple[_Entries, bool]:
            hit = False
            updated = []
            for e in entries:
                if e.info.key_id == key_id and e.info.active:
                    e = replace(e, info=replace(e.info, revoked_at=now()))
                    hit = True
                updated.append(e)
            return updated, hit

        return self._update(mark)

    def _read(self) -> _Entries:
        try:
            return _parse(self.path.read_bytes())
        except FileNotFoundError:
            return []

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # A separate lock file, because the keys file itself is replaced (new inode) on each write.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _update(self, change: Callable[[_Entries], tuple[_Entries, T]]) -> T:
        with self._locked():
            entries, result = change(self._read())
            self._write(_serialise(entries))
        self._checked_at = float("-inf")  # this process sees its own change immediately
        return result

    def _write(self, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
