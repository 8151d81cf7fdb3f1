"""Rate-limit counters for every relaylog process on one data dir, in one SQLite file.

`take` is a single UPSERT statement whose WHERE clause holds the limit check, run in autocommit
mode: SQLite executes each write statement under the database's one write lock, so the check and
the add are atomic across threads and processes without an explicit transaction. A counter past
its `expires_at` counts as missing (0) even before the sweep deletes its row.

Durability: WAL with synchronous=NORMAL, so a commit is not fsynced; a power loss can forget the
last counts. Counters live for one rate-limit window and an fsync per call would cost more than
the rest of the check together, so they are not worth one.

The calls are blocking but short (tens of microseconds); the write lock is held only for one
statement, so waiting for another process is rare and brief (busy_timeout bounds it).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

BUSY_TIMEOUT_S = 5.0
# Expired rows are deleted at most this often per process: cheap, and the table stays small.
SWEEP_INTERVAL_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID
"""

# :amount <= :limit guards the insert of a missing counter, which no WHERE clause can stop; an
# expired row is restarted from 0 as if it were missing.
_TAKE = """
INSERT INTO counters (name, value, expires_at)
SELECT :name, :amount, :expires_at WHERE :amount <= :limit AND 0 < :limit
ON CONFLICT (name) DO UPDATE SET
    value = CASE WHEN expires_at <= :now THEN :amount ELSE value + :amount END,
    expires_at = CASE WHEN expires_at <= :now THEN :expires_at ELSE max(expires_at, :expires_at) END
WHERE (expires_at <= :now AND :amount <= :limit AND 0 < :limit)
   OR (expires_at > :now AND value < :limit AND value + :amount <= :limit)
RETURNING value
"""

_ADD = """
INSERT INTO counters (name, value, expires_at) VALUES (:name, :amount, :expires_at)
ON CONFLICT (name) DO UPDATE SET
    value = CASE WHEN expires_at <= :now THEN :amount ELSE value + :amount END,
    expires_at = CASE WHEN expires_at <= :now THEN :expires_at ELSE max(expires_at, :expires_at) END
"""

_VALUE = "SELECT value FROM counters WHERE name = ? AND expires_at > ?"


class SqliteCounters:
    """CounterStore on SQLite: safe to share between threads (a connection each) and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._swept_at = float("-inf")
        self._sweep_lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection()  # create the file and table now, so a bad path fails at startup

    def _connection(self) -> sqlite3.Connection:
        held: tuple[int, sqlite3.Connection] | None = getattr(self._local, "held", None)
        # A connection must not cross a fork: a child process opens its own.
        if held is not None and held[0] == os.getpid():
            return held[1]
        # isolation_level=None: autocommit, each statement its own transaction (see module doc).
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")  # persistent: the first process sets it
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(_SCHEMA)
        self._local.held = (os.getpid(), conn)
        return conn

    async def take(self, counter: str, amount: float, limit: float, expires_at: float) -> tuple[bool, float]:
        return self.take_now(counter, amount, limit, expires_at)

    def take_now(self, counter: str, amount: float, limit: float, expires_at: float) -> tuple[bool, float]:
        """`take`, callable without an event loop (tests, benchmarks)."""
        now = time.time()
        self._maybe_sweep(now)
        conn = self._connection()
        params = {"name": counter, "amount": amount, "limit": limit, "expires_at": expires_at, "now": now}
        row = conn.execute(_TAKE, params).fetchone()
        if row is not None:
            return True, float(row[0])
        # Not added: report the value as it is now (read after the refusal, not atomically with it;
        # it only feeds the Remaining header).
        found = conn.execute(_VALUE, (counter, now)).fetchone()
        return False, float(found[0]) if found is not None else 0.0

    def add(self, counter: str, amount: float, expires_at: float) -> None:
        now = time.time()
        params = {"name": counter, "amount": amount, "expires_at": expires_at, "now": now}
        self._connection().execute(_ADD, params)

    def value(self, counter: str) -> float:
        """The counter's current value (0 when missing or expired)."""
        found = self._connection().execute(_VALUE, (counter, time.time())).fetchone()
        return float(found[0]) if found is not None else 0.0

    def sweep(self, now: float | None = None) -> int:
        """Delete expired rows; returns how many."""
        now = time.time() if now is None else now
        return self._connection().execute("DELETE FROM counters WHERE expires_at <= ?", (now,)).rowcount

    def _maybe_sweep(self, now: float) -> None:
        if now - self._swept_at < SWEEP_INTERVAL_S:
            return
        # One thread sweeps; the others go on rather than queue behind it.
        if not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._swept_at = now
            self.sweep(now)
        finally:
            self._sweep_lock.release()
