"""Span export on AWS: the aggregator sends the records each delivered object owns as spans, with
the OTLP headers read at cold start from a Secrets Manager secret or an SSM SecureString parameter
(never from the function's environment), within each invocation's time.

Which records, and how often. A request is exported by the one object that owns it
(aggregate/claims.py), so a record Firehose delivered in two objects, or spooled and delivered, is
one span. The same object delivered again (an SQS redelivery, a message holding another object that
failed) exports nothing if an earlier delivery's export was accepted whole: an item beside the
object's rollup markers (ExportMarks) says so. It is written after the collector accepted the
spans, so an export that failed, was skipped or was cut short by a crash is tried again by the next
delivery; that crash window (accepted, not yet marked) is the one way a span goes out twice, and then
with the same trace and span ids (spans.py derives them from the request id).

What a dead collector costs. A failed export makes the rest of the invocation skip export (counted,
never tried), and the shipper's pause after a failure (1 s doubling to 60 s) spaces out the tries
across invocations: at most one exporter timeout (OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default) per
invocation. No export starts unless it would end, timeout included, RESERVE_S before the
invocation's own deadline. The SQS message never fails for want of a span.

Importing this module costs nothing: the OpenTelemetry SDK is imported only when an endpoint is set.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from ..aws import layout
from ..config import otel_from_env
from ..record import Record
from . import shown

if TYPE_CHECKING:
    from .export import SpanShipper

log = logging.getLogger("relaylog.otel")

# Set by template.yaml (OtelHeadersSecretArn): the ARN of a secret or SecureString parameter
# holding the OTLP headers, the only way headers reach the aggregator.
ENV_HEADERS_ARN = "RELAYLOG_OTEL_HEADERS_ARN"
HEADERS_VARIABLE = "OTEL_EXPORTER_OTLP_HEADERS"
# Left to the invocation after an export could end: for the other messages of the SQS batch and
# the metrics flush.
RESERVE_S = 30.0
# The sort key of an object's export mark, under the object's own key (layout.object_pk), beside its
# rollup chunks' markers; kept as long as those (aggregate/dynamo.py).
MARK_SK = "spans"
MARK_TTL_S = 14 * 24 * 3600  # SQS keeps a message at most 14 days: no redelivery comes later


class LambdaContext(Protocol):
    @property
    def aws_request_id(self) -> str: ...

    def get_remaining_time_in_millis(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Exported:
    spans: int  # accepted by the collector
    failed: int  # tried and not delivered (refused, timed out), or not a span at all
    # Not tried: an export failed earlier in this invocation or the collector is in its pause, too
    # little time was left, or export is configured but unusable (its headers could not be read).
    skipped: int
    unsampled: int  # the caller's trace is not sampled
    repeated: int = 0  # exported by an earlier delivery of the same object: not sent again


class ExportMarks:
    """Which objects' spans the collector accepted, one DynamoDB item each: the same object
    delivered again does not send them again.

    Two UpdateItems per object (the aggregator's role has no GetItem): `exported` before the export
    asks on condition whether it was marked, touching only the item's expiry; `mark` after it.
    A DynamoDB error in either is logged and the export goes on: a span twice rather than none.
    """

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def exported(self, marker: str) -> bool:
        try:
            self._update(marker, "SET #x = :x", ConditionExpression="attribute_not_exists(#at)")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return True
            log.warning("OpenTelemetry: the export mark of %s could not be read: %s", marker, error)
        except BotoCoreError as error:
            log.warning("OpenTelemetry: the export mark of %s could not be read: %s", marker, error)
        return False

    def mark(self, marker: str) -> None:
        try:
            self._update(marker, "SET #x = :x, #at = :x")
        except (BotoCoreError, ClientError) as error:
            log.warning("OpenTelemetry: the export mark of %s was not written: %s", marker, error)

    def _update(self, marker: str, expression: str, **condition: str) -> None:
        # `exported_at` is the time of the mark, and its expiry too, seconds since the epoch.
        self._client.update_item(
            TableName=self._table,
            Key={"pk": {"S": marker}, "sk": {"S": MARK_SK}},
            UpdateExpression=expression,
            ExpressionAttributeNames={"#x": layout.TTL_ATTRIBUTE, "#at": "exported_at"},
            ExpressionAttributeValues={":x": {"N": str(int(time.time()) + MARK_TTL_S)}},
            **condition,
        )


class ObjectSpans:
    """The aggregator's span export, one per execution environment: `export` once per object."""

    def __init__(self, shipper: SpanShipper | None, marks: ExportMarks) -> None:
        # None: an endpoint is set but export cannot work here (logged once, at the cold start).
        self._shipper = shipper
        self._marks = marks
        # The invocation (its request id) in which an export failed: the rest of it skips export.
        self._failed_in: str | None = None

    def export(self, records: Sequence[Record], marker: str, context: LambdaContext) -> Exported:
        """Export the records the object whose marker key is `marker` (layout.object_pk) owns."""
        shipper = self._shipper
        if shipper is None:
            return Exported(0, 0, len(records), 0)
        if not records:
            return Exported(0, 0, 0, 0)
        if self._marks.exported(marker):
            return Exported(0, 0, 0, 0, repeated=len(records))
        invocation = context.aws_request_id
        now = time.monotonic()
        deadline = now + context.get_remaining_time_in_millis() / 1000 - RESERVE_S
        if invocation == self._failed_in or shipper.paused or now + shipper.settings.timeout_s > deadline:
            shipper.drop(len(records))
            return Exported(0, 0, len(records), 0)
        before = dataclasses.replace(shipper.stats)
        shipper.export(records, deadline)
        after = shipper.stats
        if shipper.paused:
            self._failed_in = invocation
        done = Exported(
            spans=after.exported - before.exported,
            failed=after.failed - before.failed,
            skipped=0,
            unsampled=after.unsampled - before.unsampled,
        )
        if not done.failed:
            self._marks.mark(marker)
        return done


def object_spans(env: Mapping[str, str], client: Callable[[str], Any], dynamodb: Any) -> ObjectSpans | None:
    """Span export as `env` sets it up, or None when no OTLP endpoint is set (then no secret is read
    and nothing imported). `client(service)` makes the AWS client that reads the headers; the export
    marks go to `dynamodb`, in the aggregator's table."""
    marks = ExportMarks(dynamodb, env.get(layout.ENV_TABLE, ""))
    arn = env.get(ENV_HEADERS_ARN, "").strip()
    try:
        settings = otel_from_env(env)
        if settings is None:
            return None
        if arn:
            # The standard variable's parser, fed the secret: the same format, percent-decoding included.
            settings = otel_from_env({**env, HEADERS_VARIABLE: read_headers(arn, client, env.get("AWS_REGION"))})
            assert settings is not None  # the same endpoint as above
        from .export import SpanShipper

        # The upstream overrides are the proxy's settings, not in this function's environment:
        # server.address is each provider's own host.
        shipper = SpanShipper(settings, {})
    except Exception as error:  # a bad setting, an unreadable secret, a missing exporter: no spans, still rollups
        # Never a header value in the message: the parsers name entries by number, AWS errors the ARN.
        where = f" (headers from {arn})" if arn else ""
        log.error("OpenTelemetry: spans are not exported%s: %s: %s", where, type(error).__name__, error)
        return ObjectSpans(None, marks)
    log.info("OpenTelemetry: spans to %s (%s)", shown(settings.endpoint), settings.protocol)
    return ObjectSpans(shipper, marks)


def read_headers(arn: str, client: Callable[[str], Any], region: str | None) -> str:
    """The headers kept at `arn` in OTEL_EXPORTER_OTLP_HEADERS form (`name=value,...`).

    A secret may hold that form or a JSON object of names and values (what the Secrets Manager
    console's key/value editor saves); a parameter must be a SecureString.
    """
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise ValueError(f"{ENV_HEADERS_ARN} is not an ARN")
    service, where = parts[2], parts[3]
    if region and where != region:
        raise ValueError(f"{arn} is in {where}: the function reads secrets of its own region, {region}")
    if service == "secretsmanager":
        text = client("secretsmanager").get_secret_value(SecretId=arn).get("SecretString")
        if text is None:
            raise ValueError(f"{arn} holds a binary secret: store the headers as text")
    elif service == "ssm":
        parameter = client("ssm").get_parameter(Name=arn, WithDecryption=True)["Parameter"]
        if parameter["Type"] != "SecureString":
            raise ValueError(f"{arn} is a {parameter['Type']} parameter: keep the headers in a SecureString")
        text = parameter["Value"]
    else:
        raise ValueError(f"{arn} is neither a Secrets Manager secret nor an SSM parameter")
    return _header_list(text)


def _header_list(text: str) -> str:
    try:
        loaded = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text  # already name=value pairs
    if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
        raise ValueError("the headers secret is JSON but not an object of names and text values")
    return ",".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in loaded.items())
