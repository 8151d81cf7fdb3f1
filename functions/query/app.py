"""The query function: the dashboard and the query API (relaylog.query.api) behind a Function URL,
under Mangum, answering from DynamoDB and S3 (relaylog.query.dynamo).

Every API call needs a relaylog key from the table, as the proxy checks them: with no key created,
nobody gets in. The dashboard's static files hold no data and are served to anyone.
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from mangum import Mangum
from relaylog.aws import layout
from relaylog.aws.clients import make_client
from relaylog.config import Retention
from relaylog.keys.dynamo import DynamoKeyStore
from relaylog.query.api import QueryApp
from relaylog.query.dynamo.backend import DynamoBackend

logger = Logger(service="query")
# The API logs its failures on relaylog's loggers: as JSON lines, with the invocation's keys.
copy_config_to_registered_loggers(source_logger=logger, include={"relaylog"})
# Clients made once per process and kept across invocations.
table = os.environ[layout.ENV_TABLE]
dynamodb = make_client("dynamodb")
backend = DynamoBackend(table, os.environ[layout.ENV_BUCKET], dynamodb, make_client("s3"), Retention.from_env())
app = Mangum(QueryApp(lambda: backend, DynamoKeyStore(table, dynamodb), require_key=True), lifespan="off")


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    answer: dict[str, Any] = app(event, context)
    return answer
