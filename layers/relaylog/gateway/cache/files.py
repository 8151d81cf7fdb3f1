"""The local response cache: one file per bucket slot under the data dir.

Layout: `root/<key[:2]>/<key>/<slot>`, the two-character fan-out keeping directories small. A
writer fills a temporary file in the slot's own directory and renames it over the slot with
os.replace, which is atomic on POSIX: every process sharing the data dir (`relaylog serve
--workers N`) sees either the old entry or the new one, never half of each. No locks are needed.

Entries are not fsynced: after a power loss a slot may hold a torn file, which `decode` rejects
and `get` treats as a miss. A cache is worth less than an fsync on every fill.

Each file's mtime is set to its expiry time, so `sweep` can drop expired entries from a stat
alone without reading them.

The methods are async to fit CacheStore but do plain blocking file I/O: for the small entries a
cache mostly holds, an open and a read take tens of microseconds, far less than handing the work
to a thread would cost.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path

from . import CachedResponse, decode, encode

log = logging.getLogger(__name__)

# Keys are hashes; anything else (a path separator, "..") is hashed again rather than trusted.
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{4,128}\Z")
_TMP_PREFIX = ".tmp-"
# A temporary file this old belongs to a writer that died before its rename.
_STALE_TMP_S = 3600.0


class FileCacheStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, key: str) -> Path:
        if not _SAFE_KEY.match(key):
            key = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        return self.root / key[:2] / key

    def path(self, key: str, slot: int) -> Path:
        if slot < 0:
            raise ValueError(f"cache slot must be 0 or more, not {slot}")
        return self._dir(key) / str(slot)

    async def get(self, key: str, slot: int) -> CachedResponse | None:
        path = self.path(key, slot)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cache entry unreadable, treated as a miss: %s: %s", path, exc.strerror)
            return None
        try:
            entry = decode(data)
        except (ValueError, KeyError, TypeError) as exc:
            # Torn by a crash, or not written by relaylog; the next fill of this slot replaces it.
            log.warning("cache entry unreadable, treated as a miss: %s: %s", path, exc)
            return None
        if entry.expires_at <= time.time():
            # A fresh entry renamed over this one in between would be lost too: only a later miss.
            _unlink(path)
            return None
        return entry

    async def put(self, key: str, slot: int, entry: CachedResponse) -> None:
        """Store `entry`; a failure (disk full, permissions) is logged, never raised: the caller's
        response must not fail because it could not be cached."""
        path = self.path(key, slot)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX)
        except OSError as exc:
            log.warning("cache entry not stored: %s: %s", path, exc.strerror)
            return
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(encode(entry))
            os.utime(tmp, (entry.expires_at, entry.expires_at))
            os.replace(tmp, path)
        except OSError as exc:
            _unlink(Path(tmp))
            log.warning("cache entry not stored: %s: %s", path, exc.strerror)

    def sweep(self, now: float | None = None) -> int:
        """Remove expired entries and abandoned temporary files; returns how many files went.

        Meant for an occasional background call: it stats every file under the root."""
        now = time.time() if now is None else now
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(dirpath, name)
                try:
                    mtime = path.stat().st_mtime
                except FileNotFoundError:
                    continue
                stale = mtime <= now - _STALE_TMP_S if name.startswith(_TMP_PREFIX) else mtime <= now
                if stale and _unlink(path):
                    removed += 1
        return removed


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cache file not removed: %s: %s", path, exc.strerror)
        return False
