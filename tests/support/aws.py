"""The deployed AWS shape under moto: bucket, table, delivery stream, queue, as template.yaml makes them.

moto 5.2.5 writes one plain object per PutRecordBatch and keeps `!{...}` prefixes literally, so
tests of the aggregator write objects in the real layout themselves (`put_raw_object`).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import orjson
import pytest
from moto import mock_aws
from relaylog.aws import layout

REGION = "us-east-1"


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
