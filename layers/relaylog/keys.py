"""relaylog API keys: the secrets clients present to the proxy.

A key is shown once, when it is created, and never stored: `keys.json` holds only its SHA-256
hash, a short non-secret id and a prefix hint. `verify` runs for every proxied request, so it is
a dict lookup; the file is re-read only when it changed on disk, checked at most once a second,
which lets `relaylog keys create` in another process take effect on a running server.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic
from typing import Protocol, TypeVar

import orjson

from .gateway.ratelimit import parse_policy

log = logging.getLogger(__name__)

T = TypeVar("T")

KEY_PREFIX = "rl-"
PREFIX_HINT_CHARS = 6
RELOAD_INTERVAL_S = 1.0
FILE_VERSION = 1


class KeyFileError(Exception):
    """The keys file exists but cannot be read as a relaylog keys file."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    name: str | None
    prefix: str  # first characters of the secret, enough to tell keys apart, not to guess one
    created_at: str  # RFC 3339 UTC
    revoked_at: str | None = None
    # A Helicone-RateLimit-Policy string the relay applies to every call made with this key.
    limit: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class _Entry:
    info: KeyInfo
    sha256: str


def hash_key(presented: str) -> str:
    return hashlib.sha256(presented.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def normalise_limit(limit: str | None) -> str | None:
    """The policy in its canonical form; ValueError (the parser's message) when it is not one.

    Checked when the key is created, so a typo fails at the command line and not on every call."""
    return None if limit is None else parse_policy(limit).text


def describe(secret: str, name: str | None, taken: set[str], limit: str | None = None) -> KeyInfo:
    """The stored, non-secret description of a new key, with an id not in `taken`."""
    key_id = f"key_{secrets.token_hex(4)}"
    while key_id in taken:
        key_id = f"key_{secrets.token_hex(4)}"
    return KeyInfo(key_id, name, secret[:PREFIX_HINT_CHARS], now(), limit=normalise_limit(limit))


class KeyVerifier(Protocol):
    """What the relay needs of a key store, local file or DynamoDB."""

    def verify(self, presented: str) -> str | None: ...

    def active_count(self) -> int: ...

    def limit(self, key_id: str) -> str | None:
        """The key's own rate-limit policy (`relaylog keys create --limit`), if it has one."""
        ...


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


class KeysUnavailable(Exception):
    """The key store has never been read successfully: nobody can say whether keys exist, so no
    call may pass (relaylog answers 503 until a read succeeds)."""


# A store that could not be read at start is tried again this soon, not a whole interval later.
_FIRST_LOAD_RETRY_S = 1.0


class CachedKeys:
    """The hot path every key store shares: active keys by hash, so `verify` is a dict lookup,
    and their limits by key id, so `limit` is one too; both re-read by `_load_active` at most
    once per interval (None from it keeps the keys held).

    Until the first read succeeds every check raises KeysUnavailable: a store that cannot be read
    at start (DynamoDB throttled, a permission mistake, a damaged file) must not look like a store
    with no keys, which would open the proxy to everyone. Later failures keep the keys last read."""

    def __init__(self, reload_interval_s: float) -> None:
        self._reload_interval_s = reload_interval_s
        self._active: dict[str, str] = {}
        self._limits: dict[str, str] = {}
        self._checked_at = float("-inf")
        self._loaded = False

    def verify(self, presented: str) -> str | None:
        """The key_id of an active key matching `presented`, else None.

        Looking up a hash of the presented value leaks nothing useful through timing: an attacker
        cannot steer which hash bucket a guess lands in.
        """
        self._refresh()
        return self._active.get(hash_key(presented))

    def active_count(self) -> int:
        self._refresh()
        return len(self._active)

    def limit(self, key_id: str) -> str | None:
        """The rate-limit policy of the active key `key_id`, if it was created with one."""
        self._refresh()
        return self._limits.get(key_id)

    def _refresh(self) -> None:
        now_ = monotonic()
        interval = self._reload_interval_s if self._loaded else min(self._reload_interval_s, _FIRST_LOAD_RETRY_S)
        if now_ - self._checked_at >= interval:
            self._checked_at = now_
            self._reload()
        if not self._loaded:
            raise KeysUnavailable("relaylog has not been able to read its keys yet")

    def _reload(self) -> None:
        loaded = self._load_active()
        if loaded is not None:
            self._loaded = True
            # Both maps are built first and swapped in together, so a reader never pairs a new
            # key with an old limit.
            active = {sha256: info.key_id for sha256, info in loaded}
            limits = {info.key_id: info.limit for _, info in loaded if info.limit is not None}
            self._active, self._limits = active, limits

    def _load_active(self) -> list[tuple[str, KeyInfo]] | None:
        """(sha256, info) of every active key, or None to keep the keys already held (none, and
        refusing every call, before a first successful read)."""
        raise NotImplementedError


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
