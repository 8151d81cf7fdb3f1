"""The relay's end of span export: record lines down a pipe to an exporter process of its own.

Building and encoding a span costs about as much CPU as relaying a short call (the SDK's OTLP
encoder most of it; see bench/otel.py), so it is done in `python -m relaylog.otel.worker`, outside
the relay's interpreter: the relay process neither imports OpenTelemetry nor shares its GIL with
the encoder. The local writer hands over the JSON lines it has just written, with one
non-blocking write per batch. When the pipe is full (the exporter is behind or stuck) the lines
are dropped and counted; the relay never waits for the exporter, and the exporter never waits for
the relay.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import threading
import time

import orjson

from ..config import OtelSettings
from .stats import ExportStats

log = logging.getLogger("relaylog.otel")

# A bigger pipe than Linux's 64 KiB default absorbs a burst while the exporter sends a batch.
_PIPE_BYTES = 1 << 20
_REPORT_EVERY_S = 60.0


class SpanPipe:
    def __init__(self, settings: OtelSettings, overrides: dict[str, str]) -> None:
        self.settings = settings
        self.stats = ExportStats()
        self._lock = threading.Lock()
        self._reported_at = time.monotonic() - _REPORT_EVERY_S
        self._unreported = 0
        self._gone = False
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "relaylog.otel.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            # Not in the relay's process group: a Ctrl-C meant for the server must not kill the
            # exporter before the server closes the pipe (it exits at the end of its input).
            start_new_session=True,
        )
        assert self._proc.stdin is not None
        self._fd = self._proc.stdin.fileno()
        # The settings (exporter headers are secrets) travel down the pipe, not in argv or the env.
        config = {"settings": dataclasses.asdict(settings), "overrides": overrides}
        os.write(self._fd, orjson.dumps(config) + b"\n")
        _enlarge(self._fd)
        os.set_blocking(self._fd, False)
        # Part of a line the pipe could not take; written first next time, so no line is torn.
        self._rest = b""

    @property
    def pid(self) -> int:
        return self._proc.pid

    def offer(self, lines: bytes, count: int) -> None:
        """Hand over `count` complete JSON lines; never blocks. Called by the local writer's thread."""
        if self._gone:
            self._dropped(count)
            return
        try:
            if self._rest:
                self._rest = self._rest[os.write(self._fd, self._rest) :]
                if self._rest:
                    self._dropped(count)
                    return
            written = os.write(self._fd, lines)
        except BlockingIOError:
            self._dropped(count)
            return
        except BrokenPipeError:
            self._gone = True
            log.error(
                "the OpenTelemetry exporter process exited (code %s); spans are no longer exported", self._proc.poll()
            )
            self._dropped(count)
            return
        if written < len(lines):
            end = written
            if written and lines[written - 1] != 0x0A:
                # Stopped inside a line: its rest goes first next time, so no line is ever torn.
                end = lines.index(b"\n", written) + 1
                self._rest = lines[written:end]
            self._dropped(lines.count(b"\n", end))

    def close(self, timeout_s: float | None = None) -> None:
        """Close the pipe, let the exporter send what it holds (at most `timeout_s`, default twice
        the exporter's timeout and 5 s), then read its final counts into `stats`. Later calls do
        nothing."""
        if self._proc.returncode is not None:
            return
        wait = self.settings.timeout_s * 2 + 5 if timeout_s is None else timeout_s
        # A line cut short in the pipe (its rest in self._rest) reaches the exporter torn: it
        # counts it as failed, so every record is still accounted for once.
        try:
            out, _ = self._proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, _ = self._proc.communicate()
        try:
            counts = orjson.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        except orjson.JSONDecodeError:
            counts = {}
        with self._lock:
            for name, value in counts.items():
                if name in ExportStats.__slots__ and name != "pipe_full":
                    setattr(self.stats, name, value)
        self._report(force=True)

    def _dropped(self, count: int) -> None:
        if count <= 0:
            return
        with self._lock:
            self.stats.pipe_full += count
            self._unreported += count
        self._report()

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._unreported or (not force and now - self._reported_at < _REPORT_EVERY_S):
                return
            count, self._unreported, self._reported_at = self._unreported, 0, now
        log.warning("OpenTelemetry: %d record(s) dropped before export: the exporter process is behind", count)


def _enlarge(fd: int) -> None:
    """Ask for a 1 MiB pipe (Linux only; elsewhere, or above the system's limit, the default stays)."""
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass
