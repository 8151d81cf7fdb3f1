"""`python -m relaylog.runtime`: what the proxy function's exec wrapper starts instead of the
managed Python bootstrap. The app factory is `RELAYLOG_APP_FACTORY` (module:function)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys

from .loop import run

DEFAULT_FACTORY = "relaylog.aws.proxy:create_app"


def main() -> int:
    logging.basicConfig(level=os.environ.get("RELAYLOG_LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s %(message)s")
    module_name, _, attribute = os.environ.get("RELAYLOG_APP_FACTORY", DEFAULT_FACTORY).partition(":")
    address = os.environ["AWS_LAMBDA_RUNTIME_API"]

    def factory() -> object:
        return getattr(importlib.import_module(module_name), attribute)()

    return asyncio.run(run(factory, address))


if __name__ == "__main__":
    sys.exit(main())
