"""relaylog API keys: the secrets clients present to the proxy, and what every key store shares.

A key is shown once, when it is created, and never stored: a store holds only its SHA-256 hash,
a short non-secret id and a prefix hint. `verify` runs for every proxied request, so it is a dict
lookup over keys a store re-reads at most once per interval (`CachedKeys`). One implementation per
place the keys live, each beside this interface: `file.py` (`keys.json` in the data dir, local)
and `dynamo.py` (the deployment's DynamoDB table, AWS).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic
from typing import Protocol

from ..gateway.ratelimit import parse_policy

log = logging.getLogger(__name__)

KEY_PREFIX = "rl-"
PREFIX_HINT_CHARS = 6


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


class KeysUnavailable(Exception):
    """The key store has never been read successfully: nobody can say whether keys exist, so no
    call may pass (relaylog answers 503 until a read succeeds)."""


# Said when the last active key goes: by the server (its log) and by `relaylog keys revoke`.
OPEN_AGAIN = (
    "no active relaylog key is left: the proxy and the dashboard are OPEN again to anyone who can reach them"
    " (relaylog keys create)"
)

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
            if self._active and not active:
                log.warning(OPEN_AGAIN)
            self._active, self._limits = active, limits

    def _load_active(self) -> list[tuple[str, KeyInfo]] | None:
        """(sha256, info) of every active key, or None to keep the keys already held (none, and
        refusing every call, before a first successful read)."""
        raise NotImplementedError
