"""The proxy function's app: the relay with the Firehose sink, keys in DynamoDB, and the gateway's
response cache and rate-limit counters in the same table (large cache entries in the bucket).

Only what the first response needs is imported at start-up; prices (genai-prices) and metrics
(Powertools) load when the first record is built and sent, after that response. The cache and
counter stores import nothing beyond botocore, which the sink and keys load anyway, and share
their clients.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import Settings
from ..gateway.cache.dynamo import DynamoCacheStore
from ..gateway.counters.dynamo import DynamoCounters
from ..gateway.services import Services
from ..keys.dynamo import DynamoKeyStore
from ..relay.app import RelayApp
from ..sinks.firehose import FirehoseSink
from . import layout
from .clients import make_client


def create_app() -> RelayApp:
    settings = Settings.from_env()
    table, bucket = os.environ[layout.ENV_TABLE], os.environ[layout.ENV_BUCKET]
    # One client per service: botocore clients are thread-safe, and each costs start-up time.
    dynamodb, s3 = make_client("dynamodb"), make_client("s3")
    sink = FirehoseSink(
        settings,
        stream=os.environ[layout.ENV_FIREHOSE_STREAM],
        bucket=bucket,
        firehose=make_client("firehose"),
        s3=s3,
        metrics=_metrics,
    )
    keys = DynamoKeyStore(table, dynamodb)
    services = Services(
        cache=DynamoCacheStore(table, bucket, dynamodb=dynamodb, s3=s3), counters=DynamoCounters(table, dynamodb)
    )
    return RelayApp(settings, keys, sink, services=services)


def _metrics() -> Any:
    from aws_lambda_powertools import Metrics

    return Metrics(namespace="relaylog", service="proxy")
