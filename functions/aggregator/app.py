"""The aggregator function: SQS messages carrying S3 ObjectCreated notifications for raw/ and spool/
objects; each request is rolled up into DynamoDB exactly once, whichever objects hold it and however
often they are delivered, indexed in DynamoDB, and written once as Parquet under curated/. When an
OTLP endpoint is set, the requests each object owns are exported as spans (relaylog.otel.aws).

A message that fails is reported alone in batchItemFailures and comes back later (after the queue's
maxReceiveCount it goes to the dead-letter queue); the other messages of its batch are done.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from relaylog.aggregate.process import handles, process_object, tune_gc
from relaylog.aws import layout
from relaylog.aws.clients import make_client
from relaylog.otel.aws import object_spans

logger = Logger(service="aggregator")
metrics = Metrics(namespace="relaylog", service="aggregator")
processor = BatchProcessor(event_type=EventType.SQS)
s3 = make_client("s3")
dynamodb = make_client("dynamodb", checked=False)  # thousands of claims and updates an object
# None unless an OTLP endpoint is set; built at the cold start (its headers read from their secret).
spans = object_spans(os.environ, make_client, dynamodb)
tune_gc()


def objects_in(body: str) -> list[tuple[str, str]]:
    """(bucket, key) of each created object an S3 notification names; none for s3:TestEvent."""
    notification = json.loads(body)
    found = []
    for entry in notification.get("Records", []):  # a TestEvent, sent when notifications are set up, has none
        if not entry.get("eventName", "").startswith("ObjectCreated:"):
            continue
        # Keys arrive URL-encoded, with '+' for a space.
        found.append((entry["s3"]["bucket"]["name"], unquote_plus(entry["s3"]["object"]["key"])))
    return found


def record_handler(record: SQSRecord, lambda_context: LambdaContext) -> None:
    for bucket, key in objects_in(record.body):
        if not handles(key):
            logger.warning("object outside raw/ and spool/ ignored", extra={"key": key})
            continue
        done = process_object(s3, dynamodb, os.environ[layout.ENV_TABLE], bucket, key)
        # After the object is done: export never fails the message, and a failure before this
        # point brings the object back to be exported then.
        exported = spans.export(done.owned, done.marker, lambda_context) if spans is not None else None
        fields: dict[str, Any] = {
            "key": key,
            "records": done.records,
            "counted": done.counted,
            "duplicates": done.duplicates,
            "bad_lines": done.bad_lines,
            "chunks_applied": done.chunks_applied,
            "chunks_skipped": done.chunks_skipped,
            "indexed": done.indexed,
            "parquet": done.parquet_keys,
        }
        if exported is not None:
            fields.update(spans_exported=exported.spans, spans_failed=exported.failed,
                          spans_skipped=exported.skipped, spans_unsampled=exported.unsampled,
                          spans_repeated=exported.repeated)  # fmt: skip
        logger.info("object processed", extra=fields)
        metrics.add_metric(name="ObjectsProcessed", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="RequestsIndexed", unit=MetricUnit.Count, value=done.indexed)
        if done.duplicate:
            metrics.add_metric(name="ObjectsSkippedDuplicate", unit=MetricUnit.Count, value=1)
        else:
            metrics.add_metric(name="RecordsAggregated", unit=MetricUnit.Count, value=done.counted)
        if done.duplicates:
            # Copies of requests counted from another object (or an earlier line of this one).
            metrics.add_metric(name="RecordsSkippedDuplicate", unit=MetricUnit.Count, value=done.duplicates)
        if done.bad_lines:
            metrics.add_metric(name="BadLines", unit=MetricUnit.Count, value=done.bad_lines)
        if exported is not None:
            metrics.add_metric(name="SpansExported", unit=MetricUnit.Count, value=exported.spans)
            # Not delivered: tried and failed, or not tried (the collector failing or paused, no time).
            metrics.add_metric(name="SpansNotExported", unit=MetricUnit.Count, value=exported.failed + exported.skipped)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
