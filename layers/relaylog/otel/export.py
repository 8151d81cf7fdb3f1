"""Records out as OTLP spans: `SpanShipper`, run by the exporter process (`worker`) locally and,
on AWS, by the aggregator.

`offer` puts records on a bounded queue and returns at once (a full queue drops and counts them);
a thread sends batches with the official OTLP exporter (HTTP/protobuf or gRPC), which retries a
failing collector only within its timeout. A batch that still fails is counted as dropped, never
retried after that, and the records that come during a pause after it (1 s, doubling up to 60 s
while failures go on) are dropped without being turned into spans. Drops are reported in a
warning at most once a minute. `export` is the same step without the thread, for a caller that
has a batch of records in hand (the AWS aggregator: otel/aws.py), with a deadline it must not run past.

Imports the OpenTelemetry SDK: the relay's own process never imports this module.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from .. import __version__
from ..config import OtelSettings
from ..record import Record
from . import shown
from .spans import SCHEMA_URL, SpanData, span_data
from .stats import ExportStats

log = logging.getLogger("relaylog.otel")

# Failures are reported at most this often; what happened in between is summed into the next line.
_REPORT_EVERY_S = 60.0
# After a failed export nothing is sent (and no span is even built: the encoding is most of the
# cost) for a pause that doubles from the first to the last value while the collector keeps
# failing; then one batch tries again. A collector that is down costs the relay almost nothing.
_FIRST_PAUSE_S = 1.0
_LONGEST_PAUSE_S = 60.0
# A batch is split so one export request stays well under the 4 MiB a gRPC receiver accepts by
# default (prompt content makes spans large).
_MAX_BATCH_CHARS = 3_000_000
_STOP = object()


class SpanShipper:
    def __init__(self, settings: OtelSettings, overrides: dict[str, str], exporter: SpanExporter | None = None) -> None:
        self.settings = settings
        self.stats = ExportStats()
        self._overrides = overrides
        self._exporter = exporter if exporter is not None else _exporter(settings)
        self._resource = Resource(
            {
                "service.name": settings.service_name,
                "telemetry.sdk.language": "python",
                "telemetry.sdk.name": "opentelemetry",
                "telemetry.sdk.version": sdk_version,
                **dict(settings.resource),
            }
        )
        self._scope = InstrumentationScope("relaylog", __version__, SCHEMA_URL)
        self._queue: queue.Queue[Record | object] = queue.Queue(maxsize=settings.queue_size)
        self._lock = threading.Lock()
        self._reported_at = time.monotonic() - _REPORT_EVERY_S
        self._unreported = 0
        self._last_problem = _LastProblem()
        self._closed = False
        self._paused_until = 0.0
        self._pause_s = 0.0
        # The exporter logs every failed batch itself, from its modules' own loggers (all created by
        # now): those lines are kept out of the server's log and folded into our rate-limited one.
        self._library_logs = [
            logger
            for name, logger in logging.root.manager.loggerDict.items()
            if name.startswith("opentelemetry.exporter") and isinstance(logger, logging.Logger)
        ]
        for logger in self._library_logs:
            logger.addFilter(self._last_problem)
        self._thread = threading.Thread(target=self._run, name="relaylog-otel", daemon=True)
        self._thread.start()

    def offer(self, records: Iterable[Record]) -> None:
        """Queue records for export; never blocks (a full queue drops and counts them, and so does
        a pause after a failed export)."""
        if time.monotonic() < self._paused_until:
            self._failed(sum(1 for _ in records))
            return
        for record in records:
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                self._failed(1, queue_full=True)

    @property
    def paused(self) -> bool:
        """In the pause after a failed export: nothing is tried until it ends."""
        return time.monotonic() < self._paused_until

    def export(self, records: Sequence[Record], deadline: float | None = None) -> int:
        """Export now, on the caller's thread; returns how many spans the collector accepted.

        With a `deadline` (a time.monotonic() value), a batch whose export could still be running
        then (the exporter's timeout) is not sent but counted as failed: one past it is never tried.
        """
        if self.paused or not self._in_time(deadline):
            self.drop(len(records))
            return 0
        spans = []
        for record in records:
            try:
                data = span_data(record, self._overrides, self.settings.capture_content)
            except Exception:  # one odd record must not stop the others
                log.exception("could not turn record %s into a span", record.get("request_id"))
                self._failed(1)
                continue
            if self.settings.follow_parent_sampling and not data.sampled:
                with self._lock:
                    self.stats.unsampled += 1
                continue
            spans.append(self._readable(data))
        accepted = 0
        for batch in _batches(spans):
            if self.paused or not self._in_time(deadline):
                self._failed(len(batch))
                continue
            try:
                result = self._exporter.export(batch)
            except Exception as error:  # an exporter bug is one more failed batch
                self._last_problem.note(f"{type(error).__name__}: {error}")
                result = SpanExportResult.FAILURE
            if result is SpanExportResult.SUCCESS:
                accepted += len(batch)
                self._pause_s = 0.0
                with self._lock:
                    self.stats.exported += len(batch)
            else:
                self._pause_s = min(max(self._pause_s * 2, _FIRST_PAUSE_S), _LONGEST_PAUSE_S)
                self._paused_until = time.monotonic() + self._pause_s
                self._failed(len(batch))
        self._report()
        return accepted

    def drop(self, count: int) -> None:
        """Count `count` records as failed without trying them: the caller knows there is no time."""
        self._failed(count)
        self._report()

    def _in_time(self, deadline: float | None) -> bool:
        return deadline is None or time.monotonic() + self.settings.timeout_s <= deadline

    def close(self, timeout_s: float | None = None) -> None:
        """Export what is queued, waiting at most `timeout_s` (default: the exporter's timeout);
        what is still queued then is counted as failed. Later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        wait = self.settings.timeout_s if timeout_s is None else timeout_s
        try:
            self._queue.put(_STOP, timeout=wait)
        except queue.Full:
            pass
        self._thread.join(wait)
        left = self._queue.qsize()
        if left:
            self._failed(left)
        self._report(force=True)
        self._exporter.shutdown()
        for logger in self._library_logs:
            logger.removeFilter(self._last_problem)

    def _run(self) -> None:
        delay, size = self.settings.schedule_delay_s, self.settings.batch_size
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[Record] = [first]  # type: ignore[list-item]
            deadline = time.monotonic() + delay
            stop = False
            while len(batch) < size:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self.export(batch)
            if stop:
                return

    def _readable(self, data: SpanData) -> ReadableSpan:
        limit = self.settings.max_value_chars
        attributes = data.attributes
        if limit is not None:
            attributes = {k: v[:limit] if isinstance(v, str) else v for k, v in attributes.items()}
        flags = TraceFlags(TraceFlags.SAMPLED)
        parent = None
        if data.parent_span_id is not None:
            state = TraceState.from_header([data.tracestate]) if data.tracestate else TraceState()
            parent = SpanContext(
                data.trace_id, data.parent_span_id, is_remote=True, trace_flags=flags, trace_state=state
            )
        context = SpanContext(
            data.trace_id,
            data.span_id,
            is_remote=False,
            trace_flags=flags,
            trace_state=parent.trace_state if parent is not None else TraceState(),
        )
        return ReadableSpan(
            name=data.name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            events=[Event(name, attrs, timestamp=at) for name, at, attrs in data.events],
            kind=SpanKind.CLIENT,
            status=Status(StatusCode.ERROR, data.error) if data.error else Status(StatusCode.UNSET),
            start_time=data.start_ns,
            end_time=data.end_ns,
            instrumentation_scope=self._scope,
        )

    def _failed(self, count: int, queue_full: bool = False) -> None:
        with self._lock:
            if queue_full:
                self.stats.queue_full += count
            else:
                self.stats.failed += count
            self._unreported += count
        if queue_full:
            self._report()  # the worker may be stuck on a slow collector: report from here too

    def _report(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._unreported or (not force and now - self._reported_at < _REPORT_EVERY_S):
                return
            count, self._unreported, self._reported_at = self._unreported, 0, now
            stats = dataclasses.replace(self.stats)
        problem = self._last_problem.take()
        log.warning(
            "OpenTelemetry: %d span(s) not exported to %s since the last report%s; so far %d exported,"
            " %d dropped with the queue full, %d failed",
            count,
            shown(self.settings.endpoint),
            f" (last error: {problem})" if problem else "",
            stats.exported,
            stats.queue_full,
            stats.failed,
        )


class _LastProblem(logging.Filter):
    """Keeps the exporter library's last complaint for the next rate-limited warning, and drops it."""

    def __init__(self) -> None:
        super().__init__()
        self._text: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            self.note(record.getMessage())
        return False

    def note(self, text: str) -> None:
        self._text = text[:300]

    def take(self) -> str | None:
        text, self._text = self._text, None
        return text


def _batches(spans: list[ReadableSpan]) -> Iterable[list[ReadableSpan]]:
    batch: list[ReadableSpan] = []
    chars = 0
    for span in spans:
        size = sum(len(v) for v in (span.attributes or {}).values() if isinstance(v, str))
        if batch and chars + size > _MAX_BATCH_CHARS:
            yield batch
            batch, chars = [], 0
        batch.append(span)
        chars += size
    if batch:
        yield batch


def _exporter(settings: OtelSettings) -> SpanExporter:
    headers = dict(settings.headers)
    if settings.protocol == "grpc":
        from grpc import Compression as GrpcCompression  # what the exporter takes (it imports it from grpc)
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter(
            endpoint=settings.endpoint,
            insecure=settings.insecure,
            headers=headers,
            timeout=settings.timeout_s,
            compression=GrpcCompression.Gzip if settings.compression == "gzip" else GrpcCompression.NoCompression,
        )
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(
        endpoint=settings.endpoint,
        headers=headers,
        timeout=settings.timeout_s,
        compression=HttpCompression.Gzip if settings.compression == "gzip" else HttpCompression.NoCompression,
    )
