"""Which app the runtime serves: `RELAYLOG_APP_FACTORY` (`module:function`), by default the proxy
function's relay with its Firehose sink."""

from __future__ import annotations

import importlib
import os
from typing import Any

DEFAULT_FACTORY = "relaylog.aws.proxy:create_app"


def create_app() -> Any:
    module_name, _, attribute = os.environ.get("RELAYLOG_APP_FACTORY", DEFAULT_FACTORY).partition(":")
    return getattr(importlib.import_module(module_name), attribute)()
