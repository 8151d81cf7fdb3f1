"""The aggregator function loaded as Lambda loads it, inside the active moto mock."""

from __future__ import annotations

import gc
import importlib.util
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APP = Path(__file__).resolve().parents[2] / "functions" / "aggregator" / "app.py"


@dataclass
class LambdaContext:
    function_name: str = "relaylog-aggregator"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:relaylog-aggregator"
    aws_request_id: str = ""

    def __post_init__(self) -> None:
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def load_aggregator() -> Any:  # a module whose globals the tests replace (its clients)
    """A fresh module each time: its clients are created at import, and must be created under moto."""
    spec = importlib.util.spec_from_file_location(f"aggregator_app_{uuid.uuid4().hex}", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    threshold = gc.get_threshold()
    spec.loader.exec_module(module)
    gc.set_threshold(*threshold)  # the function tunes the collector for its process, not for pytest's
    return module


def invoke(module: Any, event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = module.handler(event, LambdaContext())
    return result
