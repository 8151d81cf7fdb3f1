"""What a rollup item's keys and lifetime mean, agreed by the aggregator that writes the items
(relaylog.aggregate) and the query back end that reads them (relaylog.query.dynamo).

Their latency and ttft counts are relaylog.histogram's buckets; their DynamoDB keys are in
aws/layout.py.
"""

from __future__ import annotations

import hashlib

# Hourly rollup items expire this many days after their hour (RELAYLOG_HOURLY_ROLLUP_DAYS); daily
# items are kept.
DEFAULT_HOURLY_TTL_DAYS = 35

# Dimension values longer than this are cut and suffixed with a hash (DynamoDB's sort key is at
# most 1,024 bytes); distinct long values stay distinct.
MAX_VALUE_CHARS = 200


def short_value(value: str) -> str:
    """A dimension value as rollup items key it: long ones cut, with a hash keeping them distinct."""
    if len(value) <= MAX_VALUE_CHARS:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{value[: MAX_VALUE_CHARS - 20]}~{digest}"
