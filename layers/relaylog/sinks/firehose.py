"""The AWS sink: records to Kinesis Data Firehose, large bodies to S3, S3 spool when Firehose fails.

On Lambda one invocation runs at a time and the runtime calls `flush` once the response is
complete, so `submit` only builds and queues (no I/O, no thread) and `flush` does the sending.
On Lambda Managed Instances many run at once and a background flusher calls `flush` on a thread
while the event loop goes on submitting: the queue is taken whole under a lock and what was not
sent is put back in front, so a record submitted during a flush is neither sent twice nor lost.
Nothing is dropped silently: what cannot be sent stays queued for the next flush, and only what
`close` still cannot send at shutdown is counted lost (by request id; never the content).
"""

from __future__ import annotations

import binascii
import gzip
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from ..aws import layout
from ..config import Settings
from ..observe import Exchange
from ..record import Record
from ..recording import build_record

log = logging.getLogger("relaylog.sink")

MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_RECORD_BYTES = 1000 * 1024
MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 0.05
BACKOFF_CAP_S = 2.0
# Time kept back from the flush budget for the S3 spool, should Firehose not take the records.
SPOOL_RESERVE_S = 1.0
# close() runs after SIGTERM, and Lambda sends SIGKILL 300 ms later (500 ms with an internal
# extension): one try each at Firehose and the spool, and the loss count out, before that.
CLOSE_TIMEOUT_S = 0.25
_THROTTLED = frozenset({"ServiceUnavailableException", "ThrottlingException", "InternalFailure"})


@dataclass(slots=True)
class _Pending:
    request_id: str
    line: bytes
    partition: str  # dt=YYYY-MM-DD/hour=HH
    bodies: list[tuple[str, bytes]] = field(default_factory=list)  # S3 key, data; uploaded first


class _DeferredBodies:
    """A BodyStore that names S3 keys now and leaves the uploads to `flush`."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []

    def put(self, request_id: str, dt: str, kind: str, data: bytes) -> str:
        key = f"{layout.partition_path(layout.BODIES_PREFIX, dt)}{request_id}.{kind}"
        self.items.append((key, data))
        return key


class FirehoseSink:
    def __init__(
        self,
        settings: Settings,
        stream: str,
        bucket: str,
        firehose: Any,
        s3: Any,
        metrics: Callable[[], Any],
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.bucket = bucket
        self._firehose = firehose
        _build_batch_bodies(firehose)
        self._s3 = s3
        # Created at the first flush: Powertools' import stays off the cold start's path.
        self._make_metrics = metrics
        self._metrics_: Any = None
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()  # submit (event loop) against flush (a thread)
        self._flushing = threading.Lock()  # one flush at a time
        self._metrics_lock = threading.Lock()  # Powertools' metric set is a plain dict
        self._writer = f"{uuid.uuid4().hex[:12]}"
        self._spools = 0

    def submit(self, exchange: Exchange) -> Record | None:
        try:
            bodies = _DeferredBodies()
            record = build_record(exchange, self.settings, bodies)
            line = orjson.dumps(record) + b"\n"
            if len(line) > MAX_RECORD_BYTES:
                # Firehose takes at most 1,000 KiB per record: every body goes to S3 instead.
                bodies = _DeferredBodies()
                record = build_record(exchange, replace(self.settings, body_inline_max=0), bodies)
                line = orjson.dumps(record) + b"\n"
        except Exception:
            log.exception("could not build the record for request %s", exchange.request_id)
            self._count("RecordsLost")
            return None
        pending = _Pending(record["request_id"], line, f"dt={record['dt']}/hour={record['hour']}", bodies.items)
        with self._queue_lock:
            self._queue.append(pending)
        return record

    @property
    def queued(self) -> int:
        return len(self._queue)

    def flush(self, timeout_s: float) -> None:
        """Bodies, then records, each step started only while the budget lasts; a record Firehose
        would not take is spooled to S3 (in the time kept back for that); the rest stays queued."""
        with self._flushing:
            with self._queue_lock:
                taken, self._queue = self._queue, []
            if taken:
                deadline = self._clock() + timeout_s
                ready = self._upload_bodies(taken, deadline)
                tried, refused = self._put_batches(ready, deadline)
                if refused:
                    refused = self._spool(refused)
                done = {id(p) for p in tried} - {id(p) for p in refused}
                left = [p for p in taken if id(p) not in done]
                with self._queue_lock:
                    self._queue[:0] = left  # before what was submitted meanwhile, in order
            self._flush_metrics()

    def close(self) -> None:
        self.flush(CLOSE_TIMEOUT_S)
        with self._queue_lock:
            lost, self._queue = self._queue, []
        if lost:
            self._count("RecordsLost", len(lost))
            for pending in lost:
                log.error("record for request %s could not be sent to Firehose nor S3: lost", pending.request_id)
            self._flush_metrics()

    def _flush_metrics(self) -> None:
        with self._metrics_lock:
            metrics = self._metrics_
            if metrics is not None and metrics.metric_set:  # Powertools warns when asked to publish nothing
                metrics.flush_metrics()

    # -- bodies --------------------------------------------------------------------------------

    def _upload_bodies(self, queue: list[_Pending], deadline: float) -> list[_Pending]:
        """Records whose bodies are all in S3 now (a record is never sent before its bodies)."""
        ready = []
        for pending in queue:
            if pending.bodies and self._clock() >= deadline:
                continue  # out of time: this record waits for the next flush
            try:
                while pending.bodies:
                    key, data = pending.bodies[0]
                    self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)
                    pending.bodies.pop(0)
                    self._count("BodiesOffloaded")
            except (BotoCoreError, ClientError) as exc:
                log.warning(
                    "body upload for request %s failed (%s); kept for the next flush",
                    pending.request_id,
                    type(exc).__name__,
                )
                continue
            ready.append(pending)
        return ready

    # -- Firehose ------------------------------------------------------------------------------

    def _put_batches(self, ready: list[_Pending], deadline: float) -> tuple[list[_Pending], list[_Pending]]:
        """(tried, refused): the records offered to Firehose, and those it did not take. Batches
        left when the budget runs out are in neither and stay queued."""
        tried: list[_Pending] = []
        refused: list[_Pending] = []
        for batch in _batches(ready):
            if self._clock() >= deadline:
                break
            tried += batch
            refused += self._put_with_retries(batch, deadline)
        return tried, refused

    def _put_with_retries(self, batch: list[_Pending], deadline: float) -> list[_Pending]:
        todo = batch
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt) * self._jitter()  # full jitter
                if self._clock() + delay > deadline - SPOOL_RESERVE_S:
                    break
                self._count("FirehoseRetries", len(todo))
                self._sleep(delay)
            try:
                answer = self._firehose.put_record_batch(
                    DeliveryStreamName=self.stream, Records=[{"Data": p.line} for p in todo]
                )
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                log.warning("Firehose PutRecordBatch failed: %s", code)
                if code not in _THROTTLED:
                    return todo  # not worth retrying (stream missing, access denied): spool now
                continue
            except BotoCoreError as exc:
                log.warning("Firehose PutRecordBatch failed: %s", type(exc).__name__)
                continue
            failed = [p for p, r in zip(todo, answer["RequestResponses"], strict=True) if r.get("ErrorCode")]
            self._count("RecordsSent", len(todo) - len(failed))
            if not failed:
                return []
            todo = failed
        return todo

    # -- S3 spool ------------------------------------------------------------------------------

    def _spool(self, unsent: list[_Pending]) -> list[_Pending]:
        by_partition: dict[str, list[_Pending]] = {}
        for pending in unsent:
            by_partition.setdefault(pending.partition, []).append(pending)
        left: list[_Pending] = []
        for partition, group in by_partition.items():
            self._spools += 1
            key = f"{layout.SPOOL_PREFIX}{partition}/{self._writer}-{int(time.time())}-{self._spools:06d}.jsonl.gz"
            try:
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=gzip.compress(b"".join(p.line for p in group)))
            except (BotoCoreError, ClientError) as exc:
                log.warning("S3 spool failed (%s); %d records kept for the next flush", type(exc).__name__, len(group))
                left += group
                continue
            self._count("RecordsSpilled", len(group))
        return left

    def _count(self, name: str, value: int = 1) -> None:
        with self._metrics_lock:
            if self._metrics_ is None:
                self._metrics_ = self._make_metrics()
            self._metrics_.add_metric(name=name, unit="Count", value=value)


_BATCH_PARAMETERS = {"DeliveryStreamName", "Records"}  # the sink's; any other call is botocore's own


class _BatchBodySerializer:
    """botocore's serializer for a Firehose client, except the records of PutRecordBatch: botocore
    walks the model for each record (base64, then `json.dumps` of the whole batch, escaping every
    character of 4 MiB of base64 text), about 50 µs of CPU a 6.7 KB record, most of the sink's
    cost. Base64 text needs no JSON escaping, so the records are joined into the body here instead.
    botocore still serializes (and checks) the request with its first record, and so writes every
    header and the address; the body is then the same JSON with all of them. Signing, retries and
    the response stay botocore's."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def serialize_to_request(self, parameters: dict[str, Any], operation_model: Any) -> dict[str, Any]:
        records = parameters.get("Records")
        if operation_model.name != "PutRecordBatch" or not records or parameters.keys() != _BATCH_PARAMETERS:
            return self._inner.serialize_to_request(parameters, operation_model)  # type: ignore[no-any-return]
        first_only = {**parameters, "Records": records[:1]}
        request: dict[str, Any] = self._inner.serialize_to_request(first_only, operation_model)
        request["body"] = b"".join(
            (
                b'{"DeliveryStreamName":',
                orjson.dumps(parameters["DeliveryStreamName"]),
                b',"Records":[',
                b",".join(b'{"Data":"%b"}' % binascii.b2a_base64(r["Data"], newline=False) for r in records),
                b"]}",
            )
        )
        return request


def _build_batch_bodies(client: Any) -> None:
    """Put `_BatchBodySerializer` in a botocore client (its serializer is private: a client
    without one, or a test's stand-in for a client, is left as it is)."""
    serializer = getattr(client, "_serializer", None)
    if hasattr(serializer, "serialize_to_request") and not isinstance(serializer, _BatchBodySerializer):
        client._serializer = _BatchBodySerializer(serializer)


def _batches(records: list[_Pending]) -> list[list[_Pending]]:
    batches: list[list[_Pending]] = []
    current: list[_Pending] = []
    size = 0
    for pending in records:
        if current and (len(current) == MAX_BATCH_RECORDS or size + len(pending.line) > MAX_BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(pending)
        size += len(pending.line)
    if current:
        batches.append(current)
    return batches
