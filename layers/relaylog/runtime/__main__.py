"""`python -m relaylog.runtime`: what the proxy function's exec wrapper starts instead of the
managed Python bootstrap."""

from __future__ import annotations

import logging
import os
import sys

import uvloop

from .context import RequestIdFilter
from .factory import create_app
from .loop import run
from .pollers import max_concurrency


def main() -> int:
    # Lambda Managed Instances sets it (https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html).
    concurrency = max_concurrency(os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY"))
    level = os.environ.get("RELAYLOG_LOG_LEVEL", "INFO")
    if concurrency > 1:
        # Concurrent invocations' lines interleave: each says which invocation it is about.
        handler = logging.StreamHandler()
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(logging.Formatter("%(levelname)s %(aws_request_id)s %(name)s %(message)s"))
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s %(message)s")
    # uvloop, as under `relaylog serve`: its loop, sockets and timers in C cost a call 13-20% less CPU
    # than asyncio's own at 256 concurrent streams (bench/runtime_concurrency.py on python3.13).
    return uvloop.run(run(create_app, os.environ["AWS_LAMBDA_RUNTIME_API"], concurrency))


if __name__ == "__main__":
    sys.exit(main())
