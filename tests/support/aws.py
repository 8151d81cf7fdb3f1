"""The deployed AWS shape under moto: bucket, table, delivery stream, queue, as template.yaml makes them.

moto 5.2.5 writes one plain object per PutRecordBatch and keeps `!{...}` prefixes literally, so
tests of the aggregator write objects in the real layout themselves (`put_raw_object`).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import gzip
import http.server
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import duckdb
import orjson
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from relaylog.aws import layout

from tests.support.aggregator import LambdaContext, invoke

if TYPE_CHECKING:
    from moto.server import ThreadedMotoServer

REGION = "us-east-1"


def _one_write_at_a_time() -> None:
    """moto's DynamoDB is not thread-safe: its TransactWriteItems deep-copies every table for its
    rollback while another thread may be writing one ("dictionary changed size during iteration").
    DynamoDB itself takes concurrent writes (the aggregator writes its rollup chunks several at
    once), so the emulator's writes take turns; what each one does is moto's."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        method = getattr(DynamoDBBackend, name)

        def locked(*args: Any, __method: Any = method, **kwargs: Any) -> Any:
            with lock:
                return __method(*args, **kwargs)

        setattr(DynamoDBBackend, name, locked)


_one_write_at_a_time()


def fake_credentials() -> None:
    # boto3 must never find real credentials, nor reach AWS, from a test.
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SECURITY_TOKEN="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_REGION=REGION,
    )
    os.environ.pop("AWS_PROFILE", None)


def shards_key(dt: str) -> dict[str, Any]:
    """The key of a day's shard count item (aws/layout.py)."""
    return {"pk": {"S": layout.SHARDS_PK}, "sk": {"S": dt}}


def moto_endpoint(server: ThreadedMotoServer) -> str:
    """The URL of a started moto server bound to 127.0.0.1, port 0 (moto exposes no getter for the port)."""
    wsgi = server._server
    assert wsgi is not None, "start() the moto server first"
    return f"http://127.0.0.1:{wsgi.server_port}"


def proxy_resources(endpoint: str, names: dict[str, str]) -> dict[str, str]:
    """The proxy's table, bucket and delivery stream, as the template declares them, made on the
    moto server at `endpoint` under `names` (the proxy's environment variables naming them)."""

    def client(service: str) -> Any:
        return boto3.client(
            service, endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip

    client("dynamodb").create_table(
        TableName=names["RELAYLOG_TABLE"],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
        BillingMode="PAY_PER_REQUEST",
    )
    client("s3").create_bucket(Bucket=names["RELAYLOG_BUCKET"])
    client("firehose").create_delivery_stream(
        DeliveryStreamName=names["RELAYLOG_FIREHOSE_STREAM"],
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{names['RELAYLOG_BUCKET']}",
            "Prefix": layout.RAW_PREFIX,
        },
    )
    return names


@dataclass
class Stack:
    bucket: str
    table: str
    stream: str
    queue_url: str
    dead_letter_url: str

    def env(self) -> dict[str, str]:
        return {
            layout.ENV_BUCKET: self.bucket,
            layout.ENV_TABLE: self.table,
            layout.ENV_FIREHOSE_STREAM: self.stream,
        }

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)

    def put_raw_object(self, key: str, records: list[dict[str, Any]], compress: bool = True) -> None:
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        self.client("s3").put_object(Bucket=self.bucket, Key=key, Body=gzip.compress(data) if compress else data)

    def sqs_event(self, limit: int = 10) -> dict[str, Any]:
        """The SQS event Lambda would deliver: the queue's waiting messages, as the event source mapping
        shapes them (the messages stay in flight, as they do until Lambda deletes them)."""
        sqs = self.client("sqs")
        arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        messages = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=limit, AttributeNames=["All"])
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": REGION,
                }
                for m in messages.get("Messages", [])
            ]
        }

    def rollup(self, pk: str, sk: str) -> dict[str, Any] | None:
        """A rollup item with its numbers as Python values (None when absent)."""
        from boto3.dynamodb.types import TypeDeserializer

        item = (
            self.client("dynamodb").get_item(TableName=self.table, Key={"pk": {"S": pk}, "sk": {"S": sk}}).get("Item")
        )
        if item is None:
            return None
        deserialise = TypeDeserializer().deserialize
        return {name: deserialise(value) for name, value in item.items()}

    def index_key(self, record: dict[str, Any]) -> dict[str, Any]:
        """The key of a record's request index item, in its day's shard (one shard: the day has no count)."""
        found = self.client("dynamodb").get_item(TableName=self.table, Key=shards_key(record["dt"])).get("Item")
        shards = int(found["shards"]["N"]) if found else 1
        return {
            "pk": {"S": layout.request_partition(record["dt"], record["request_id"], shards)},
            "sk": {"S": layout.requests_sk(record["created_at"], record["request_id"])},
        }

    def objects(self, prefix: str) -> list[str]:
        pages = self.client("s3").get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def create_stack(name: str = "relaylog-test") -> Stack:
    """Create the resources; call inside an active moto mock."""
    bucket = f"{name}-data"
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=bucket)
    ddb = boto3.client("dynamodb", region_name=REGION)
    table = f"{name}-table"
    # The request index's GSIs as template.yaml declares them (tests/test_aggregate_index.py checks
    # that the template agrees with layout.INDEXES); ids and users are key lookups only.
    keys_only = {"by_id", "by_user"}
    indexes = [
        {
            "IndexName": index,
            "KeySchema": [{"AttributeName": partition, "KeyType": "HASH"}]
            + ([{"AttributeName": sort, "KeyType": "RANGE"}] if sort else []),
            "Projection": {"ProjectionType": "KEYS_ONLY" if index in keys_only else "ALL"},
        }
        for index, (partition, sort) in layout.INDEXES.items()
    ]
    attributes = ["pk", "sk", *(partition for partition, _ in layout.INDEXES.values())]
    ddb.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in dict.fromkeys(attributes)],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=indexes,
    )
    ddb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": layout.TTL_ATTRIBUTE}
    )
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName=f"{name}-firehose", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    stream = f"{name}-records"
    boto3.client("firehose", region_name=REGION).create_delivery_stream(
        DeliveryStreamName=stream,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": role,
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "Prefix": layout.RAW_PREFIX,
            "ErrorOutputPrefix": layout.ERRORS_PREFIX,
            "CompressionFormat": "GZIP",
            "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 60},
        },
    )
    sqs = boto3.client("sqs", region_name=REGION)
    dead = sqs.create_queue(QueueName=f"{name}-dead")["QueueUrl"]
    dead_arn = sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName=f"{name}-objects",
        Attributes={"RedrivePolicy": orjson.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": "5"}).decode()},
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
                for prefix in (layout.RAW_PREFIX, layout.SPOOL_PREFIX)
            ]
        },
    )
    return Stack(bucket=bucket, table=table, stream=stream, queue_url=queue, dead_letter_url=dead)


@pytest.fixture
def aws_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    fake_credentials()
    with mock_aws():
        stack = create_stack()
        for name, value in stack.env().items():
            monkeypatch.setenv(name, value)
        yield stack


# -- the rest of a deployed stack, for `relaylog verify --stack` -------------------------------------


class CloudFormation:
    """DescribeStacks and ListStackResources as CloudFormation answers them for one stack (moto's
    CloudFormation needs a dozen more packages, docker among them, for these two calls)."""

    def __init__(self, name: str, outputs: dict[str, str], resources: dict[str, str]) -> None:
        self.name, self.outputs, self.resources = name, outputs, resources

    def _check(self, name: str, operation: str) -> None:
        if name != self.name:
            message = f"Stack with id {name} does not exist"
            raise ClientError({"Error": {"Code": "ValidationError", "Message": message}}, operation)

    def describe_stacks(self, StackName: str) -> dict[str, Any]:  # noqa: N803 (boto3's argument name)
        self._check(StackName, "DescribeStacks")
        outputs = [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]
        return {"Stacks": [{"StackName": self.name, "StackStatus": "CREATE_COMPLETE", "Outputs": outputs}]}

    def list_stack_resources(self, StackName: str, NextToken: str = "") -> dict[str, Any]:  # noqa: N803
        """Two resources a page, so that callers must follow NextToken as they must on AWS."""
        self._check(StackName, "ListStackResources")
        start = int(NextToken or 0)
        names = sorted(self.resources)
        page = [
            {"LogicalResourceId": n, "PhysicalResourceId": self.resources[n], "ResourceStatus": "CREATE_COMPLETE"}
            for n in names[start : start + 2]
        ]
        more = {"NextToken": str(start + 2)} if start + 2 < len(names) else {}
        return {"StackResourceSummaries": page, **more}


class EventSourceMapping:
    """Lambda's SQS event source for the aggregator, on a thread: it polls the queue, hands each
    batch to the function, and deletes the messages the function did not report as failed (the
    failed ones, and all of a batch whose invocation raised, stay in flight until their visibility
    timeout ends, as on AWS)."""

    def __init__(self, stack: Stack, module: Any) -> None:
        self.stack, self.module = stack, module
        self.batches = self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqs-event-source", daemon=True)

    def _run(self) -> None:
        sqs = self.stack.client("sqs")
        while not self._stop.wait(0.05):
            event = self.stack.sqs_event()
            if not event["Records"]:
                continue
            try:
                failed = {f["itemIdentifier"] for f in invoke(self.module, event)["batchItemFailures"]}
            except Exception:  # noqa: BLE001 - the invocation failed: Lambda returns the whole batch to the queue
                failed = {r["messageId"] for r in event["Records"]}
            self.failures += len(failed)
            done = [
                {"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                for i, r in enumerate(event["Records"])
                if r["messageId"] not in failed
            ]
            if done:
                sqs.delete_message_batch(QueueUrl=self.stack.queue_url, Entries=done)
            self.batches += 1

    def __enter__(self) -> EventSourceMapping:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


class FunctionUrl:
    """A buffered (not streamed) Function URL in front of a managed-runtime handler, on a loopback
    socket: each HTTP request becomes a payload 2.0 event (the shape of events/function_url_query.json)
    and the handler's `statusCode`, `headers`, `body` and `isBase64Encoded` become the HTTP answer
    (https://docs.aws.amazon.com/lambda/latest/dg/urls-invocation.html)."""

    def __init__(self, handler: Any) -> None:
        url = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url._answer(self)

            do_POST = do_GET  # noqa: N815

        self.handler = handler
        # One request at a time, as one Lambda instance takes one invocation at a time.
        self._server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        # Mangum runs each request on the thread's event loop, which the managed runtime's main thread has.
        asyncio.set_event_loop(asyncio.new_event_loop())
        self._server.serve_forever()

    def _answer(self, request: Any) -> None:
        template = Path(__file__).resolve().parents[2] / "events" / "function_url_query.json"
        event = copy.deepcopy(orjson.loads(template.read_bytes()))
        target = urlsplit(request.path)
        length = int(request.headers.get("content-length") or 0)
        body = request.rfile.read(length) if length else b""
        event["rawPath"] = event["requestContext"]["http"]["path"] = target.path
        event["rawQueryString"] = target.query
        event.pop("queryStringParameters")
        event["requestContext"]["http"]["method"] = request.command
        event["requestContext"]["requestId"] = str(uuid.uuid4())
        event["requestContext"]["timeEpoch"] = int(time.time() * 1000)
        event["headers"] = {k.lower(): v for k, v in request.headers.items()}
        if body:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
        answer = self.handler(event, LambdaContext(function_name="relaylog-query"))
        data = answer.get("body") or ""
        payload = base64.b64decode(data) if answer.get("isBase64Encoded") else data.encode()
        request.send_response(answer["statusCode"])
        for name, value in (answer.get("headers") or {}).items():
            if name.lower() != "content-length":
                request.send_header(name, value)
        request.send_header("content-length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    def __enter__(self) -> FunctionUrl:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class DuckDBAthena:
    """Athena's query API over the stack's curated/ Parquet, with DuckDB running the SQL (the same
    SQL Athena would run: tests/test_queries.py checks the saved queries run on both). Only the
    `requests` table of the Glue database is known, as the aggregator's Parquet lays it out."""

    def __init__(self, stack: Stack, scratch: Any) -> None:
        self.stack, self.scratch = stack, scratch
        self.executions: dict[str, Any] = {}

    def start_query_execution(self, QueryString: str, QueryExecutionContext: Any, WorkGroup: str) -> dict[str, Any]:  # noqa: N803
        s3 = self.stack.client("s3")
        keys = self.stack.objects(layout.CURATED_PREFIX)
        for key in keys:
            target = self.scratch / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(Bucket=self.stack.bucket, Key=key)["Body"].read())
        db = duckdb.connect()
        if keys:
            db.execute(
                f"CREATE VIEW requests AS SELECT * FROM read_parquet('{self.scratch}/curated/*/*.parquet', "
                "hive_partitioning = true, hive_types = {'dt': VARCHAR})"
            )
        else:  # no Parquet yet: Athena answers with no rows
            db.execute("CREATE TABLE requests (request_id VARCHAR, provider VARCHAR, dt VARCHAR)")
        cursor = db.execute(QueryString)
        execution = str(uuid.uuid4())
        self.executions[execution] = ([d[0] for d in cursor.description], cursor.fetchall())
        return {"QueryExecutionId": execution}

    def get_query_execution(self, QueryExecutionId: str) -> dict[str, Any]:  # noqa: N803
        return {"QueryExecution": {"Status": {"State": "SUCCEEDED"}}}

    def get_paginator(self, name: str) -> Any:
        assert name == "get_query_results"
        return self

    def paginate(self, QueryExecutionId: str) -> list[dict[str, Any]]:  # noqa: N803
        """One page in Athena's shape: the header row first, every value as text, NULL left out."""
        columns, rows = self.executions[QueryExecutionId]
        info = [{"Name": c, "Type": "varchar"} for c in columns]
        header = {"Data": [{"VarCharValue": c} for c in columns]}
        data = [{"Data": [{} if v is None else {"VarCharValue": str(v)} for v in row]} for row in rows]
        return [{"ResultSet": {"ResultSetMetadata": {"ColumnInfo": info}, "Rows": [header, *data]}}]
