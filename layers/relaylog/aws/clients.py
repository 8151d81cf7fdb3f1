"""AWS clients for Lambda: created once per process and kept across invocations.

botocore directly, not boto3: boto3 pulls in s3transfer and multiprocessing, 90 ms of imports
on every cold start, for nothing the proxy uses.
"""

from __future__ import annotations

from typing import Any

import botocore.session
from botocore.config import Config

# Short timeouts and few retries: the sink retries on its own terms, within the invocation's time.
_CONFIG = Config(
    connect_timeout=2,
    read_timeout=10,
    retries={"mode": "standard", "max_attempts": 2},
    tcp_keepalive=True,
)


def make_client(service: str) -> Any:
    return botocore.session.get_session().create_client(service, config=_CONFIG)
