"""The embedded default sink: JSON lines under <data-dir>/raw/dt=YYYY-MM-DD/hour=HH/.

The record is built on the caller's thread once the response is complete (the client is not
waiting any more) and only the file I/O is left to a background thread. Measured, building records
on a thread of their own cost twice the CPU: every hand-over of Python's lock between the event
loop and that thread is paid per record. Each process writes its own file, so several workers
never interleave lines.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from pathlib import Path

import orjson

from ..config import Settings
from ..exchange import Exchange
from ..record import Record
from ..recording import build_record

log = logging.getLogger("relaylog.sink")

# The writer sleeps this long after each batch, so a busy server wakes it ~100 times a second
# rather than once per record; SIGTERM waits at most this much longer.
_BATCH_WINDOW_S = 0.01


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
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.writer_id = f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._bodies = _QueuedBodyStore(self.data_dir, self._queue)
        self._fd: int | None = None
        self._partition: str | None = None
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

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not self._write(batch):
                self._close_file()
                return
            time.sleep(_BATCH_WINDOW_S)

    def _write(self, batch: list[_Item]) -> bool:
        """Write a batch; False once the stop marker has been reached."""
        running = True
        lines: dict[str, list[bytes]] = {}
        flushed: list[threading.Event] = []
        for item in batch:
            if isinstance(item, _Line):
                lines.setdefault(item.partition, []).append(item.data)
            elif isinstance(item, _Body):
                self._write_body(item)
            elif isinstance(item, threading.Event):
                flushed.append(item)
            else:
                running = False
        for partition, chunk in lines.items():
            self._append(partition, b"".join(chunk))
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
        except OSError:
            log.exception("could not write body file %s", body.path.name)

    def _append(self, partition: str, data: bytes) -> None:
        """One write() per batch on an O_APPEND descriptor: readers see whole lines, not buffer halves."""
        if partition != self._partition or self._fd is None:
            self._close_file()
            directory = self.data_dir / "raw" / partition
            directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(directory / f"{self.writer_id}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._partition = partition
        _write_all(self._fd, data)

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
