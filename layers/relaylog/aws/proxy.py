"""The proxy function's app: the relay with the Firehose sink and keys in DynamoDB."""

from __future__ import annotations

import os

from aws_lambda_powertools import Metrics

from ..config import Settings
from ..cost import load_prices
from ..relay.app import RelayApp
from ..sinks.firehose import FirehoseSink
from . import layout
from .clients import make_client
from .keys import DynamoKeyStore


def create_app() -> RelayApp:
    settings = Settings.from_env()
    sink = FirehoseSink(
        settings,
        stream=os.environ[layout.ENV_FIREHOSE_STREAM],
        bucket=os.environ[layout.ENV_BUCKET],
        firehose=make_client("firehose"),
        s3=make_client("s3"),
        metrics=Metrics(namespace="relaylog", service="proxy"),
    )
    keys = DynamoKeyStore(os.environ[layout.ENV_TABLE], make_client("dynamodb"))
    load_prices()
    return RelayApp(settings, keys, sink)
