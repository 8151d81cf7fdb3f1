"""Finding the raw record files of a local data dir, and noticing half-written ones.

Layout: `<data-dir>/raw/dt=YYYY-MM-DD/hour=HH/<writer-id>.jsonl`.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

_DT = re.compile(r"dt=(\d{4}-\d{2}-\d{2})")
_HOUR = re.compile(r"hour=(\d{2})")
_TAIL_CHUNK = 64 * 1024


def _subdirs(parent: Path, pattern: re.Pattern[str]) -> list[tuple[str, Path]]:
    try:
        entries = list(os.scandir(parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = [(m[1], Path(e.path)) for e in entries if e.is_dir() and (m := pattern.fullmatch(e.name))]
    return sorted(found)


def raw_files(data_dir: Path, since: datetime | None = None) -> list[Path]:
    """Record files, oldest partition first, skipping partitions wholly before `since`.

    Partition (dt, hour) of a file is never earlier than the created_at of the records in it,
    so a partition before since's own hour cannot hold a record at or after since.
    """
    floor = None
    if since is not None:
        utc = since.astimezone(UTC)
        floor = (utc.strftime("%Y-%m-%d"), utc.strftime("%H"))
    files: list[Path] = []
    for day, day_dir in _subdirs(data_dir / "raw", _DT):
        if floor and day < floor[0]:
            continue
        for hour, hour_dir in _subdirs(day_dir, _HOUR):
            if floor and (day, hour) < floor:
                continue
            with os.scandir(hour_dir) as entries:
                names = sorted(e.name for e in entries if e.name.endswith(".jsonl") and e.is_file())
            files.extend(hour_dir / name for name in names)
    return files


def has_incomplete_tail(path: Path) -> bool:
    """True when the file's last line is not a whole JSON value (a write cut short).

    Only the end of the file is read, so checking every file before a query stays cheap.
    """
    with path.open("rb") as f:
        pos = f.seek(0, os.SEEK_END)
        chunks: list[bytes] = []
        while pos > 0:
            step = min(_TAIL_CHUNK, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step)
            if not chunks and chunk.endswith(b"\n"):
                return False
            cut = chunk.rfind(b"\n")
            chunks.append(chunk[cut + 1 :])
            if cut != -1:
                break
    tail = b"".join(reversed(chunks))
    if not tail.strip():
        return False
    try:
        orjson.loads(tail)
    except orjson.JSONDecodeError:
        return True
    return False


def warn_incomplete(files: list[Path]) -> int:
    """Warn on stderr (via logging) about files whose last line will be skipped; return how many."""
    broken = [p for p in files if has_incomplete_tail(p)]
    if broken:
        log.warning(
            "skipped an incomplete last line in %d file(s) (still being written, or cut short by a crash): %s",
            len(broken),
            ", ".join(str(p) for p in broken[:3]) + (", ..." if len(broken) > 3 else ""),
        )
    return len(broken)
