"""The proxy function's app: the relay with the Firehose sink and keys in DynamoDB.

Only what the first response needs is imported at start-up; prices (genai-prices) and metrics
(Powertools) load when the first record is built and sent, after that response.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import Settings
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
        metrics=_metrics,
    )
    keys = DynamoKeyStore(os.environ[layout.ENV_TABLE], make_client("dynamodb"))
    return RelayApp(settings, keys, sink)


def _metrics() -> Any:
    from aws_lambda_powertools import Metrics

    return Metrics(namespace="relaylog", service="proxy")
