"""The stages read on AWS: Firehose's delivery to S3, the aggregator's index and rollups, Athena.

What to look at when a stage fails comes from the stack itself: its queue and dead-letter queue
depths, its functions' log groups, the delivery stream's status and buffering.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from relaylog.aggregate.objects import ObjectError, decode
from relaylog.aws import layout
from relaylog.aws.athena import run_query
from relaylog.aws.clients import make_client
from relaylog.aws.stack import StackError, output, outputs, resources
from relaylog.relay import echo

from .stages import DELIVERY_MARGIN_S, StageFailed, Trail, poll

# template.yaml's logical ids of what the checks name (tests/test_verify_stack.py holds them to it).
QUEUE, DEAD_LETTER_QUEUE = "ObjectsQueue", "ObjectsDeadLetterQueue"
PROXY_FUNCTION, AGGREGATOR_FUNCTION, QUERY_FUNCTION = "ProxyFunction", "AggregatorFunction", "QueryFunction"
_FUNCTIONS = (PROXY_FUNCTION, AGGREGATOR_FUNCTION, QUERY_FUNCTION)


def _log_group(function: str) -> str:
    return function.removesuffix("Function") + "LogGroup"


# Clocks differ and Firehose stamps its arrival time, not ours: hours this far around the call are read.
_CLOCK_SLACK = timedelta(minutes=5)
# A Firehose prefix without a timestamp expression gets this one appended (Firehose developer guide,
# "Custom prefixes for Amazon S3 objects": https://docs.aws.amazon.com/firehose/latest/dev/s3-prefixes.html).
_DEFAULT_TIMESTAMP = "!{timestamp:yyyy/MM/dd/HH/}"
_EXPRESSION = re.compile(r"!\{([a-zA-Z]+):([^}]*)\}")
# Java DateTimeFormatter letters in the prefixes relaylog's template and Firehose's default use.
_JAVA_FIELDS = {"yyyy": "%Y", "yy": "%y", "MM": "%m", "dd": "%d", "HH": "%H"}
_JAVA_TOKEN = re.compile(r"'([^']*)'|(([A-Za-z])\3*)|([^A-Za-z'])")
_DT = re.compile(r"\d{4}-\d{2}-\d{2}")

Client = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class StackView:
    """A deployed stack as verification needs it, read from CloudFormation and Firehose."""

    name: str
    proxy_url: str
    api_url: str
    dashboard_url: str
    bucket: str
    table: str
    database: str
    workgroup: str
    stream: str
    stream_status: str
    # The stream's S3 prefix as configured (with its !{...} expressions) and buffering interval.
    prefix: str
    interval_s: int
    queue_url: str | None
    dead_letter_url: str | None
    functions: dict[str, str]  # logical id -> function name
    # logical id of a function -> its own log group (the template's <Name>LogGroup, set through the
    # function's LoggingConfig); Lambda's default name when the stack has none.
    log_groups: dict[str, str]

    @classmethod
    def load(cls, stack: str, client: Client = make_client) -> StackView:
        cloudformation = client("cloudformation")
        found, physical = outputs(stack, cloudformation), resources(stack, cloudformation)
        stream = output(found, stack, "DeliveryStreamName")
        try:
            described = client("firehose").describe_delivery_stream(DeliveryStreamName=stream)[
                "DeliveryStreamDescription"
            ]
        except (ClientError, BotoCoreError) as exc:
            raise StackError(f"cannot describe the delivery stream {stream}: {exc}") from exc
        destination = described["Destinations"][0]
        s3 = destination.get("ExtendedS3DestinationDescription") or destination["S3DestinationDescription"]
        return cls(
            name=stack,
            proxy_url=output(found, stack, "ProxyUrl"),
            api_url=output(found, stack, "QueryApiUrl"),
            dashboard_url=output(found, stack, "DashboardUrl"),
            bucket=output(found, stack, "BucketName"),
            table=output(found, stack, "TableName"),
            database=output(found, stack, "DatabaseName"),
            workgroup=output(found, stack, "AthenaWorkGroup"),
            stream=stream,
            stream_status=described.get("DeliveryStreamStatus", "?"),
            prefix=s3.get("Prefix") or "",
            interval_s=int(s3.get("BufferingHints", {}).get("IntervalInSeconds", 300)),  # Firehose's default
            queue_url=physical.get(QUEUE),
            dead_letter_url=physical.get(DEAD_LETTER_QUEUE),
            functions={f: physical[f] for f in _FUNCTIONS if f in physical},
            log_groups={f: physical[_log_group(f)] for f in _FUNCTIONS if _log_group(f) in physical},
        )

    def delivery_timeout_s(self) -> float:
        return self.interval_s + DELIVERY_MARGIN_S

    def logs(self, function: str) -> str | None:
        """The function's log group: the stack's own, else Lambda's default name for it."""
        if function in self.log_groups:
            return self.log_groups[function]
        name = self.functions.get(function)
        return f"/aws/lambda/{name}" if name else None


def hour_prefix(template: str, hour: datetime) -> str:
    """The key prefix Firehose gives objects whose oldest record arrived in `hour`: the prefix with its
    timestamp expressions evaluated, up to the first expression that cannot be (a random string)."""
    if "!{timestamp:" not in template:
        template += _DEFAULT_TIMESTAMP
    out, position = [], 0
    for match in _EXPRESSION.finditer(template):
        out.append(template[position : match.start()])
        evaluated = _java_time(match[2], hour) if match[1] == "timestamp" else None
        if evaluated is None:
            return "".join(out)
        out.append(evaluated)
        position = match.end()
    return "".join(out) + template[position:]


def _java_time(pattern: str, moment: datetime) -> str | None:
    """A DateTimeFormatter pattern made of the letters in _JAVA_FIELDS, quoted text and punctuation;
    None for any other letter."""
    parts = []
    for match in _JAVA_TOKEN.finditer(pattern):
        quoted, letters, _, other = match.groups()
        if letters:
            if letters not in _JAVA_FIELDS:
                return None
            parts.append(moment.strftime(_JAVA_FIELDS[letters]))
        else:
            parts.append(quoted if quoted is not None else other)
    return "".join(parts)


def _hours(start: datetime, end: datetime) -> Iterator[datetime]:
    hour = (start - _CLOCK_SLACK).replace(minute=0, second=0, microsecond=0)
    while hour <= end + _CLOCK_SLACK:
        yield hour
        hour += timedelta(hours=1)


def _aws(what: str, exc: Exception) -> StageFailed:
    return StageFailed(f"AWS refused {what}: {exc}", ["the permissions of the credentials running relaylog verify"])


class Delivery:
    """Firehose → S3: the first object under the stream's prefix that holds the record."""

    def __init__(self, view: StackView, client: Client = make_client) -> None:
        self.view = view
        self.s3 = client("s3")
        self.seen: set[str] = set()

    def __call__(self, trail: Trail, deadline: float) -> str:
        began = time.monotonic()
        raw = functools.partial(hour_prefix, self.view.prefix)
        found = poll(deadline, lambda: self._find(trail, raw), max_wait_s=5.0)
        if found is None:
            raise self._missing(trail, time.monotonic() - began)
        trail.object_url = f"s3://{self.view.bucket}/{found}"
        return f"Firehose delivered it to {trail.object_url} (it buffers up to {self.view.interval_s} s)"

    def _find(self, trail: Trail, prefix: Callable[[datetime], str]) -> str | None:
        """The first object not read before, under `prefix(hour)` for the hours around the call, that
        holds the record."""
        assert trail.sent_at is not None
        # An object is named after its oldest record's arrival, up to a buffering interval before ours.
        oldest = trail.sent_at - timedelta(seconds=self.view.interval_s)
        for hour in _hours(oldest, datetime.now(UTC)):
            for key in self._new_objects(prefix(hour), trail.sent_at - _CLOCK_SLACK):
                if self._holds(key, trail.request_id):
                    return key
        return None

    def _new_objects(self, prefix: str, since: datetime) -> Iterator[str]:
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.view.bucket, Prefix=prefix)
            listed = [o for page in pages for o in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise _aws(f"listing s3://{self.view.bucket}/{prefix}", exc) from None
        for entry in listed:
            if entry["Key"] not in self.seen and entry["LastModified"] >= since:
                self.seen.add(entry["Key"])
                yield entry["Key"]

    def _holds(self, key: str, request_id: str) -> bool:
        try:
            data = self.s3.get_object(Bucket=self.view.bucket, Key=key)["Body"].read()
            records = decode(data, key, {"request_id"}).records
        except (ClientError, BotoCoreError) as exc:
            raise _aws(f"reading s3://{self.view.bucket}/{key}", exc) from None
        except ObjectError:
            return False
        return any(r["request_id"] == request_id for r in records)

    def _missing(self, trail: Trail, waited_s: float) -> StageFailed:
        """Not delivered: spooled by the proxy (Firehose refused it), or nowhere to be seen yet."""
        view = self.view
        assert trail.sent_at is not None
        spooled = self._find(
            trail, lambda hour: layout.partition_path(layout.SPOOL_PREFIX, f"{hour:%Y-%m-%d}", f"{hour:%H}")
        )
        logs = view.logs(PROXY_FUNCTION)
        proxy_logs = [f"the proxy's log group {logs} (FirehoseRetries, RecordsSpilled, RecordsLost)"] if logs else []
        if spooled is not None:
            return StageFailed(
                f"Firehose did not take the record: the proxy wrote it to s3://{view.bucket}/{spooled} instead",
                [
                    f"the proxy role's firehose:PutRecordBatch on {view.stream} (status {view.stream_status})",
                    *proxy_logs,
                ],
            )
        return StageFailed(
            f"the record is not under s3://{view.bucket}/{hour_prefix(view.prefix, trail.sent_at)} after "
            f"{waited_s:.0f} s (Firehose buffers up to {view.interval_s} s, then writes the object)",
            [
                f"the delivery stream {view.stream}: status {view.stream_status}, its CloudWatch error logs, and its "
                f"role's s3:PutObject on the bucket",
                *proxy_logs,
                "a slower delivery: try again with a longer --timeout delivery=SECONDS",
            ],
        )


class Aggregation:
    """The aggregator applied the object: the record's index item exists, and so does its hour's rollup
    for the echo's provider (the index item is the request's claim, written before the rollups)."""

    def __init__(self, view: StackView, client: Client = make_client) -> None:
        self.view = view
        self.dynamodb = client("dynamodb")
        self.sqs = client("sqs")

    def __call__(self, trail: Trail, deadline: float) -> str:
        item = poll(deadline, lambda: self._indexed(trail.request_id))
        if item is None:
            raise StageFailed(
                f"the aggregator has not indexed the record (the delivered object: {trail.object_url})", self._checks()
            )
        dt, hour = item["dt"]["S"], item["hour"]["S"]
        trail.record = {"created_at": item["created_at"]["S"], "dt": dt, "hour": hour}
        key = {
            "pk": {"S": layout.rollup_pk("h", f"{dt}T{hour}")},
            "sk": {"S": layout.rollup_sk("provider", echo.PROVIDER.name)},
        }
        # The index item is the request's claim, written before the rollups (aggregate/claims.py):
        # the rollup may still be on its way.
        rollup = poll(deadline, lambda: self._rolled_up(key))
        if rollup is None:
            raise StageFailed(
                f"the record is indexed but the rollup {key['pk']['S']} {key['sk']['S']} is missing", self._checks()
            )
        return (
            f"indexed ({item['pk']['S']}) and rolled up: {rollup['requests']['N']} {echo.PROVIDER.name} "
            f"request(s) in hour {dt}T{hour}"
        )

    def _rolled_up(self, key: dict[str, dict[str, str]]) -> dict[str, Any] | None:
        try:
            rollup: dict[str, Any] | None = self.dynamodb.get_item(
                TableName=self.view.table, Key=key, ConsistentRead=True
            ).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise _aws(f"reading the rollup {key['pk']['S']}", exc) from None
        return rollup if rollup is not None and int(rollup["requests"]["N"]) >= 1 else None

    def _indexed(self, request_id: str) -> dict[str, Any] | None:
        try:
            found = self.dynamodb.query(
                TableName=self.view.table,
                IndexName="by_id",
                KeyConditionExpression="request_id = :id",
                ExpressionAttributeValues={":id": {"S": request_id}},
            )["Items"]
            if not found:
                return None
            key = {"pk": found[0]["pk"], "sk": found[0]["sk"]}
            item: dict[str, Any] | None = self.dynamodb.get_item(TableName=self.view.table, Key=key).get("Item")
            return item
        except (ClientError, BotoCoreError) as exc:
            raise _aws("reading the request index (by_id)", exc) from None

    def _checks(self) -> list[str]:
        view = self.view
        checks = []
        queue = self._depth(view.queue_url)
        dead = self._depth(view.dead_letter_url)
        if queue is not None:
            waiting, in_flight = queue
            checks.append(
                f"the queue {view.queue_url}: {waiting} message(s) waiting, {in_flight} in flight{_reading(queue)}"
            )
        if dead is not None:
            checks.append(
                f"the dead-letter queue {view.dead_letter_url}: {dead[0]} message(s)"
                + (" (objects the aggregator failed on 5 times)" if dead[0] else "")
            )
        if queue == (0, 0) and dead == (0, 0):
            checks.append("no message is queued: the bucket's event notification to the queue, and the queue policy")
        logs = view.logs(AGGREGATOR_FUNCTION)
        if logs:
            checks.append(f"the aggregator's log group {logs}")
        checks.append("the aggregator role's s3:GetObject on raw/ and spool/, and its DynamoDB writes")
        return checks

    def _depth(self, url: str | None) -> tuple[int, int] | None:
        if url is None:
            return None
        try:
            found = self.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
        except (ClientError, BotoCoreError):
            return None  # the checks name the queue anyway
        return int(found["ApproximateNumberOfMessages"]), int(found["ApproximateNumberOfMessagesNotVisible"])


def _reading(depth: tuple[int, int]) -> str:
    """What a queue's depth says about the aggregator."""
    waiting, in_flight = depth
    if waiting and not in_flight:
        return " (waiting and none taken: is the aggregator's SQS event source enabled?)"
    if in_flight:
        return " (taken and not done: the aggregator fails on them or is still at work; its log group says which)"
    return ""


def athena(view: StackView, trail: Trail, deadline: float, client: Client = make_client) -> str:
    """The record through Athena, from the aggregator's Parquet (table `requests`)."""
    dt, request_id = trail.record.get("dt", ""), trail.request_id
    # Both go into the SQL text: the id is the UUID command.py made, the date is held to its shape.
    if not _DT.fullmatch(dt):
        raise StageFailed(f"the record's date {dt!r} from the index is not a date")
    sql = f"SELECT request_id, provider FROM requests WHERE dt = '{dt}' AND request_id = '{request_id}'"
    athena_client = client("athena")

    def attempt() -> list[list[Any]] | None:
        try:
            rows = run_query(
                sql,
                view.database,
                view.workgroup,
                client=athena_client,
                timeout_s=max(1.0, deadline - time.monotonic()),
            ).rows
        except StackError as exc:
            raise StageFailed(
                str(exc),
                [
                    f"the workgroup {view.workgroup} and the database {view.database}",
                    "the credentials' athena:*, glue:Get* and s3 rights on the bucket",
                ],
            ) from None
        return rows or None  # the Parquet is written just after the index: a moment later

    rows = poll(deadline, attempt, first_wait_s=2.0, max_wait_s=10.0)
    if rows is None:
        raise StageFailed(
            f"Athena does not find request {request_id} in requests (dt {dt})",
            [f"curated/dt={dt}/ in s3://{view.bucket} (the aggregator's Parquet)"],
        )
    return f"Athena's requests table has it ({view.workgroup}, {view.database})"
