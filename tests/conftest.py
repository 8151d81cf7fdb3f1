"""Shared fixtures: the provider stand-in and relaylog, each on a real loopback socket."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relaylog.standin import StandIn  # noqa: E402

from tests.support.aws import aws_stack  # noqa: E402, F401  (the moto-backed deployment, for any test)
from tests.support.proxy import RunningProxy  # noqa: E402

# SDKs and libraries under test must never find real credentials or reach a real provider.
for _name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def standin() -> Iterator[StandIn]:
    with StandIn() as server:
        yield server


@pytest.fixture
def make_proxy(tmp_path: Path, standin: StandIn) -> Iterator[Callable[..., RunningProxy]]:
    started: list[RunningProxy] = []

    def start(upstream: str | None = None, **settings: Any) -> RunningProxy:
        proxy = RunningProxy(tmp_path / f"data{len(started)}", upstream or standin.url, **settings)
        started.append(proxy.__enter__())
        return proxy

    yield start
    for proxy in started:
        proxy.__exit__(None, None, None)


@pytest.fixture
def proxy(make_proxy: Callable[..., RunningProxy], standin: StandIn) -> RunningProxy:
    standin.clear()
    standin.fault = None
    return make_proxy()
