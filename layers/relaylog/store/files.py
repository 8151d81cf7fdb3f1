"""Finding the raw record files of a local data dir, and noticing half-written ones.

Layout: `<data-dir>/raw/dt=YYYY-MM-DD/hour=HH/<writer-id>.jsonl`.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson

log = logging.getLogger(__name__)

_DT = re.compile(r"dt=(\d{4}-\d{2}-\d{2})")
_HOUR = re.compile(r"hour=(\d{2})")
_TAIL_CHUNK = 64 * 1024
# Where the bytes of a record cut short by a crash are kept (see seal_tail).
DAMAGED_DIR = "damaged"
_MAX_WARNED = 10_000


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
        _, tail = _tail(f, f.seek(0, os.SEEK_END))
    if not tail.strip():
        return False
    try:
        orjson.loads(tail)
    except orjson.JSONDecodeError:
        return True
    return False


def _tail(f: BinaryIO, end: int) -> tuple[int, bytes]:
    """Offset where the file's last line starts, and that line (b"" when the file ends in a newline)."""
    pos = end
    chunks: list[bytes] = []
    while pos > 0:
        step = min(_TAIL_CHUNK, pos)
        pos -= step
        f.seek(pos)
        chunk = f.read(step)
        cut = chunk.rfind(b"\n")
        if cut != -1:
            chunks.append(chunk[cut + 1 :])
            pos += cut + 1
            break
        chunks.append(chunk)
    return pos, b"".join(reversed(chunks))


def seal_tail(path: Path, damaged_dir: Path) -> int:
    """Make a record file end on a whole line again, before anything is appended to it.

    A crash (SIGKILL, a full disk, power loss) during a write can leave the file ending in part of
    a line; appended as it is, the next record would be glued onto that part and both would be
    unreadable. A last line that is whole JSON lacking only its newline gets the newline; any other
    partial line is cut off and kept, byte for byte, under `damaged_dir` (it is part of someone's
    prompt, so it is not thrown away silently), with a warning. Returns how many bytes were cut.

    Only for a file nobody is writing: the caller's own file, or one whose writer is dead.
    """
    with path.open("r+b") as f:
        end = f.seek(0, os.SEEK_END)
        start, last = _tail(f, end)
        if not last:
            return 0
        try:
            orjson.loads(last)
        except orjson.JSONDecodeError:
            pass
        else:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
            return 0
        damaged_dir.mkdir(parents=True, exist_ok=True)
        kept = damaged_dir / f"{path.stem}.{start}.partial"
        fd = os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, last)
        finally:
            os.close(fd)
        f.truncate(start)
    log.warning(
        "%s ended in %d bytes of a record whose write was cut short (a crash or a full disk): cut off and"
        " kept in %s; every whole record is kept",
        path,
        len(last),
        kept,
    )
    return len(last)


def writer_is_dead(path: Path, hostname: str) -> bool:
    """True when the file was written by a process of this host that no longer runs.

    Writer files are named `<hostname>-<pid>-<start time>.jsonl` (sinks/local.py). A file from
    another host, or with a name of another shape, is never judged dead: it may still be written.
    """
    host, _, rest = path.stem.rpartition("-")
    host, _, pid_text = host.rpartition("-")
    if host != hostname or not pid_text.isdigit() or not rest.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by someone else
    return False


def seal_dead_writers(data_dir: Path, hostname: str) -> int:
    """Seal the torn last lines left by crashed writers of this host; returns how many files were cut.

    Run when a writer starts, so a crash's torn line is reported once and then never again, and the
    file can be compacted like any other.
    """
    sealed = 0
    for path in raw_files(data_dir):
        try:
            with path.open("rb") as f:
                end = f.seek(0, os.SEEK_END)
                if end == 0:
                    continue
                f.seek(end - 1)
                if f.read(1) == b"\n":
                    continue
            if writer_is_dead(path, hostname) and seal_tail(path, data_dir / DAMAGED_DIR):
                sealed += 1
        except OSError as error:
            log.warning("could not check %s for a torn last line: %s", path, error)
    return sealed


def warn_incomplete(files: list[Path], warned: set[tuple[Path, int]]) -> int:
    """Warn on stderr (via logging) about files whose last line will be skipped; return how many.

    Once per file and size: `warned` holds those warned about already (this adds to it), so one
    command's several queries warn once, and a server once per state of the file, not per query.
    """
    if len(warned) > _MAX_WARNED:  # a server's live files pass through many sizes
        warned.clear()
    broken = []
    for path in files:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        if (path, size) not in warned and has_incomplete_tail(path):
            warned.add((path, size))
            broken.append(path)
    if broken:
        log.warning(
            "skipped an incomplete last line in %d file(s) (still being written, or cut short by a crash): %s",
            len(broken),
            ", ".join(str(p) for p in broken[:3]) + (", ..." if len(broken) > 3 else ""),
        )
    return len(broken)
