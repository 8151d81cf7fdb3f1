"""The aggregator function: SQS messages carrying S3 ObjectCreated notifications for raw/ and
spool/ objects; each object is rolled up into DynamoDB exactly once and written as Parquet.

A message that fails is reported alone in batchItemFailures and comes back later (then, after
maxReceiveCount, goes to the dead-letter queue); the others in its batch are done.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from relaylog.aggregate.process import handles, process_object
from relaylog.aws import layout
from relaylog.aws.clients import make_client

logger = Logger(service="aggregator")
metrics = Metrics(namespace="relaylog", service="aggregator")
processor = BatchProcessor(event_type=EventType.SQS)
s3 = make_client("s3")
dynamodb = make_client("dynamodb")


def record_handler(record: SQSRecord) -> None:
    notification = json.loads(record.body)
    if notification.get("Event") == "s3:TestEvent":
        return  # sent once when the bucket's notifications are configured
    for entry in notification.get("Records", []):
        bucket = entry["s3"]["bucket"]["name"]
        key = unquote_plus(entry["s3"]["object"]["key"])  # S3 events carry keys URL-encoded
        if not handles(key):
            continue
        done = process_object(s3, dynamodb, os.environ[layout.ENV_TABLE], bucket, key)
        logger.info("object processed", extra={"key": key, "records": done.records, "skipped": done.chunks_skipped})
        metrics.add_metric(name="ObjectsProcessed", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="RecordsAggregated", unit=MetricUnit.Count, value=done.records)
        if done.bad_lines:
            metrics.add_metric(name="BadLines", unit=MetricUnit.Count, value=done.bad_lines)
        if done.chunks_skipped and not done.chunks_applied:
            metrics.add_metric(name="ObjectsSkippedDuplicate", unit=MetricUnit.Count, value=1)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
