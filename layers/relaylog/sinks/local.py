"""The embedded default sink: JSON lines under <data-dir>/raw/dt=YYYY-MM-DD/hour=HH/.

A background thread turns exchanges into records and appends them, so the response path only
enqueues. Each process writes its own file, so several workers never interleave lines.
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
from ..recording import build_record

log = logging.getLogger("relaylog.sink")

_STOP = object()


class LocalBodyStore:
    """Bodies too large (or too binary) for a record, as files referenced relative to the data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def put(self, request_id: str, dt: str, kind: str, data: bytes) -> str:
        relative = Path("bodies") / f"dt={dt}" / f"{request_id}.{kind}"
        target = self.data_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return relative.as_posix()


class LocalSink:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.bodies = LocalBodyStore(self.data_dir)
        self.writer_id = f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"
        self._queue: queue.SimpleQueue[Exchange | object] = queue.SimpleQueue()
        self._fd: int | None = None
        self._partition: str | None = None
        self._thread = threading.Thread(target=self._run, name="relaylog-writer", daemon=True)
        self._thread.start()

    def submit(self, exchange: Exchange) -> None:
        self._queue.put(exchange)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            # Drain what is waiting so one flush covers many records under load.
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = self._write(batch)
            if stop:
                self._close_file()
                return

    def _write(self, batch: list[Exchange | object]) -> bool:
        stop = False
        lines: dict[str, list[bytes]] = {}
        for item in batch:
            if item is _STOP:
                stop = True
                continue
            assert isinstance(item, Exchange)
            try:
                record = build_record(item, self.settings, self.bodies)
                lines.setdefault(f"dt={record['dt']}/hour={record['hour']}", []).append(orjson.dumps(record) + b"\n")
            except Exception:
                # One bad exchange must not stop the writer; the id says which call to look at.
                log.exception("could not write the record for request %s", item.request_id)
        for partition, chunk in lines.items():
            self._append(partition, b"".join(chunk))
        return stop

    def _append(self, partition: str, data: bytes) -> None:
        """One write() per batch on an O_APPEND descriptor: readers see whole lines, not buffer halves."""
        if partition != self._partition or self._fd is None:
            self._close_file()
            directory = self.data_dir / "raw" / partition
            directory.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(directory / f"{self.writer_id}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._partition = partition
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
