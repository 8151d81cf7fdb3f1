"""Retrying the aggregator's DynamoDB writes: which refusals a later try can fix, and how long to wait first."""

from __future__ import annotations

import random

from botocore.exceptions import ClientError

MAX_ATTEMPTS = 8
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 2.0

# Whole-call errors worth another try. TransactionConflictException also refuses a plain PutItem
# on an item a transaction is writing at that moment.
RETRY_ERRORS = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TransactionConflictException",
        "TransactionInProgressException",
        "InternalServerError",
    }
)


def error_code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): full jitter, capped."""
    return random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt))
