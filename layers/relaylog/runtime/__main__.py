"""`python -m relaylog.runtime`: what the proxy function's exec wrapper starts instead of the
managed Python bootstrap."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from .factory import create_app
from .loop import run


def main() -> int:
    logging.basicConfig(level=os.environ.get("RELAYLOG_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s %(message)s")
    return asyncio.run(run(create_app, os.environ["AWS_LAMBDA_RUNTIME_API"]))


if __name__ == "__main__":
    sys.exit(main())
