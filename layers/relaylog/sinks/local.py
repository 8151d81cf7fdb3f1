"""The embedded default sink: JSON lines under <data-dir>/raw/dt=YYYY-MM-DD/hour=HH/.

The record is built on the caller's thread once the response is complete (the client is not
waiting any more) and only the file I/O is left to a background thread. Measured, building records
on a thread of their own cost twice the CPU: every hand-over of Python's lock between the event
loop and that thread is paid per record. Each process writes its own file, so several workers
never interleave lines.

Durability: a record is handed to the writer once its response is complete; the writer appends
it within about 10 ms (one write() per batch), after which it survives the process being killed
(it is in the kernel's page cache). Every second at most (RELAYLOG_FSYNC_S, `off` to disable) the
writer also fdatasyncs what it wrote, so a power loss or kernel crash loses at most about the last
second of records. A write cut short by a crash is repaired before anything is appended after it
(store.files.seal_tail), so a new record is never glued onto a torn one.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from ..config import Settings
from ..observe import Exchange
from ..record import Record
from ..recording import build_record
from ..store.files import DAMAGED_DIR, seal_dead_writers, seal_tail

if TYPE_CHECKING:
    from ..otel.pipe import SpanPipe

log = logging.getLogger("relaylog.sink")

# The writer sleeps this long after each batch, so a busy server wakes it ~100 times a second
# rather than once per record; SIGTERM waits at most this much longer.
_BATCH_WINDOW_S = 0.01
# Written records are fdatasynced at most this often (seconds), on the writer thread, never the
# event loop. Measured on ext4 (virtio disk): one fdatasync after a batch takes ~0.2 ms (p50, 12 ms
# max) and ~90 us of CPU, so once a second costs well under 0.1 us per call; bench/relay.py at
# c=16 could not tell off, 1 s and every batch apart (noise +-60 us/req). RELAYLOG_FSYNC_S
# overrides it: 0 syncs every batch (a power loss then costs ~10 ms of records), `off` never.
_DEFAULT_FSYNC_S = 1.0


def _fsync_interval() -> float | None:
    text = os.environ.get("RELAYLOG_FSYNC_S", "").strip().lower()
    if not text:
        return _DEFAULT_FSYNC_S
    if text in ("off", "none", "never"):
        return None
    try:
        value = float(text)
    except ValueError:
        log.warning("RELAYLOG_FSYNC_S=%r is not a number of seconds or 'off'; using %s", text, _DEFAULT_FSYNC_S)
        return _DEFAULT_FSYNC_S
    return max(0.0, value)


class _Line:
    __slots__ = ("partition", "data")

    def __init__(self, partition: str, data: bytes) -> None:
        self.partition = partition
        self.data = data


class _Body:
    __slots__ = ("path", "data")

    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self.data = data


_STOP = object()
_Item = _Line | _Body | threading.Event | object


class _QueuedBodyStore:
    """Body files named now, written by the writer thread before the record that names them."""

    def __init__(self, data_dir: Path, queue_: queue.SimpleQueue[_Item]) -> None:
        self._data_dir = data_dir
        self._queue = queue_

    def put(self, request_id: str, dt: str, kind: str, data: bytes) -> str:
        relative = f"bodies/dt={dt}/{request_id}.{kind}"
        self._queue.put(_Body(self._data_dir / relative, data))
        return relative


class LocalSink:
    def __init__(self, settings: Settings, spans: SpanPipe | None = None) -> None:
        self.settings = settings
        # Written lines go on to the OpenTelemetry exporter process (None: not configured).
        self.spans = spans
        self.data_dir = settings.data_dir
        self._hostname = socket.gethostname()
        self.writer_id = f"{self._hostname}-{os.getpid()}-{int(time.time())}"
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._bodies = _QueuedBodyStore(self.data_dir, self._queue)
        self._fd: int | None = None
        self._partition: str | None = None
        self._fsync_s = _fsync_interval()
        # What was written since the last fdatasync: the record file, body files, new directories.
        self._unsynced = False
        self._unsynced_paths: set[Path] = set()
        self._synced_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="relaylog-writer", daemon=True)
        self._thread.start()

    def submit(self, exchange: Exchange) -> Record | None:
        try:
            record = build_record(exchange, self.settings, self._bodies)
            line = orjson.dumps(record) + b"\n"
        except Exception:
            # One bad exchange must not break the relay; the id says which call to look at.
            log.exception("could not build the record for request %s", exchange.request_id)
            return None
        self._queue.put(_Line(f"dt={record['dt']}/hour={record['hour']}", line))
        return record

    def flush(self, timeout_s: float) -> None:
        # The writer sets the event once everything queued before it is on disk.
        written = threading.Event()
        self._queue.put(written)
        written.wait(timeout_s)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if self.spans is not None:
            self.spans.close()

    def _run(self) -> None:
        try:
            # A crashed writer's torn last line is repaired (and reported) once, now.
            seal_dead_writers(self.data_dir, self._hostname)
        except Exception:
            log.exception("could not check the record files of earlier writers for torn lines")
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            running = self._write(batch)
            if not running:
                self._sync()
                self._close_file()
                return
            if self._fsync_s is not None and time.monotonic() - self._synced_at >= self._fsync_s:
                self._sync()
            time.sleep(_BATCH_WINDOW_S)

    def _write(self, batch: list[_Item]) -> bool:
        """Write a batch; False once the stop marker has been reached."""
        running = True
        lines: dict[str, list[bytes]] = {}
        written: list[bytes] = []
        flushed: list[threading.Event] = []
        for item in batch:
            if isinstance(item, _Line):
                lines.setdefault(item.partition, []).append(item.data)
                written.append(item.data)
            elif isinstance(item, _Body):
                self._write_body(item)
            elif isinstance(item, threading.Event):
                flushed.append(item)
            else:
                running = False
        for partition, chunk in lines.items():
            try:
                self._append(partition, b"".join(chunk))
            except OSError:
                # A full disk or a vanished directory must not stop the writer: later batches
                # may succeed. The descriptor is dropped so the next open repairs a partial write.
                log.exception("could not write %d record(s) to %s", len(chunk), partition)
                self._close_file()
        if self.spans is not None and written:
            # A span describes the call, whether or not its line reached the disk.
            self.spans.offer(b"".join(written), len(written))
        for event in flushed:
            event.set()
        return running

    def _write_body(self, body: _Body) -> None:
        try:
            body.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(body.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, body.data)
            finally:
                os.close(fd)
            if self._fsync_s is not None:
                # The body and its entry in its directory: the record naming it must not outlive it.
                self._unsynced_paths.update((body.path, body.path.parent))
        except OSError:
            log.exception("could not write body file %s", body.path.name)

    def _append(self, partition: str, data: bytes) -> None:
        """One write() per batch on an O_APPEND descriptor: readers see whole lines, not buffer halves."""
        if partition != self._partition or self._fd is None:
            self._close_file()
            directory = self.data_dir / "raw" / partition
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{self.writer_id}.jsonl"
            # Read-write: the last byte is checked before appending (see below).
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size == 0:
                    if self._fsync_s is not None:
                        # The new file's entry in its directory, and the new directories' own.
                        self._unsynced_paths.update((directory, directory.parent, directory.parent.parent))
                elif os.pread(fd, 1, size - 1) != b"\n":
                    # Our own earlier write was cut short (a full disk): never glue onto it.
                    seal_tail(path, self.data_dir / DAMAGED_DIR)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            self._partition = partition
        _write_all(self._fd, data)
        self._unsynced = True

    def _sync(self) -> None:
        """fdatasync what was written since the last call: power loss then costs at most that."""
        self._synced_at = time.monotonic()
        try:
            # Bodies first: a record that survives must find the body it names.
            for path in self._unsynced_paths:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            if self._unsynced and self._fd is not None:
                os.fdatasync(self._fd)
            self._unsynced = False
        except OSError:
            log.exception("could not sync the record files to disk")
        self._unsynced_paths.clear()

    def _close_file(self) -> None:
        if self._fd is not None:
            if self._unsynced and self._fsync_s is not None:
                self._sync()  # records of an hour just ended are not left unsynced
            self._unsynced = False
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
