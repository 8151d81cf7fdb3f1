"""AWS clients for Lambda, created once per process and kept across invocations, and what may be
logged of their errors.

botocore directly, not boto3: boto3 pulls in s3transfer and multiprocessing, 90 ms of imports
on every cold start, for nothing the proxy uses. One botocore session for every client: each
session parses the endpoint and retry data again, 80 ms more for the proxy's three clients.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError

# Short timeouts and few retries: the sink retries on its own terms, within the invocation's time.
_CONFIG = Config(
    connect_timeout=2,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 2},
    tcp_keepalive=True,
)


# At DEBUG, botocore logs every request's headers (the role's session token) and its canonical
# requests and signatures: those two loggers stay at INFO, so no log level ever writes a credential.
for _name in ("botocore.endpoint", "botocore.auth"):
    logging.getLogger(_name).setLevel(logging.INFO)


@cache
def _session() -> botocore.session.Session:
    return botocore.session.get_session()


# For requests the code builds itself, thousands a second (the aggregator's DynamoDB writes): the
# service checks each request anyway, and botocore's check of it was a fifth of the aggregator's
# CPU per claim (bench/writes.py).
_UNCHECKED = _CONFIG.merge(Config(parameter_validation=False))


def make_client(service: str, *, checked: bool = True) -> Any:
    """`checked` False: botocore does not check the parameters before sending them."""
    # Lambda sets AWS_REGION; botocore itself reads only AWS_DEFAULT_REGION (and config files).
    config = _CONFIG if checked else _UNCHECKED
    return _session().create_client(service, region_name=os.environ.get("AWS_REGION"), config=config)


def error_code(exc: BaseException) -> str:
    """What to log about an AWS error: its code, never its message (which may quote a request)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__
