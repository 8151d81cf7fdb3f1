"""relaylog's relay under uvicorn in a background thread, on a real loopback socket."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Self

import orjson
import pytest
import uvicorn
from relaylog.config import Settings
from relaylog.http_server import HttpProtocol
from relaylog.keys.file import KeyStore
from relaylog.providers.registry import PROVIDERS
from relaylog.server import local_app
from relaylog.sinks.local import LocalSink


class ServedApp:
    """An ASGI app under uvicorn in a background thread, on a real loopback socket, with the HTTP
    protocol `relaylog serve` gives uvicorn."""

    def __init__(self, app: Any, lifespan: Literal["auto", "on", "off"] = "on") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            loop="uvloop",  # as `relaylog serve` runs: its transports are not asyncio's classes
            http=HttpProtocol,
            lifespan=lifespan,
            access_log=False,
            log_level="warning",
            server_header=False,
            date_header=False,
        )
        self._server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop  # the app's, once started
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()  # for a test to run something on the app's loop
        await self._server.serve(sockets=[self._sock])

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until every request the server has taken so far is finished."""
        deadline = time.monotonic() + timeout_s
        while self._server.server_state.tasks:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self._server.server_state.tasks)} requests still running")
            time.sleep(0.005)


class RunningProxy(ServedApp):
    """relaylog serve's app (proxy, query API, dashboard) on the local store."""

    def __init__(self, data_dir: Path, upstream: str, **settings: Any) -> None:
        overrides = {name: upstream for name in PROVIDERS}
        # Keys a test creates are seen by the next call, not up to a second later: how often a
        # running server looks at keys.json is KeyStore's own business, tested in test_keys.
        settings = {"key_reload_s": 0.0, **settings}
        self.settings = replace(Settings(), data_dir=data_dir, upstream_overrides=overrides, **settings)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.app = local_app(self.settings)
        self.keys: KeyStore = self.app.keys  # type: ignore[assignment]
        self.sink: LocalSink = self.app.local_sink  # the record files (the relay submits to app.records)
        super().__init__(self.app)

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.data_dir)

    def settle(self, timeout_s: float = 10.0) -> None:
        """Wait until every call answered so far is finished and its record, if any, on disk: what
        a check that something was NOT recorded waits on (a request finishes, and submits its
        record, after its client has the response)."""
        super().settle(timeout_s)
        self.app.records.flush(timeout_s)

    def record(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The record of one call, once the background writer has written it."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.records():
                if record["request_id"] == request_id:
                    return record
            if time.monotonic() > deadline:
                raise AssertionError(f"no record for {request_id}")
            time.sleep(0.02)

    def wait_records(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.records()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


def read_records(data_dir: Path) -> list[dict[str, Any]]:
    """Every whole record line the local sink has written under `data_dir` so far."""
    found = []
    for path in sorted((data_dir / "raw").glob("dt=*/hour=*/*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                found.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # the writer is part-way through this line
    return found


def module_proxy(name: str) -> Callable[..., Iterator[RunningProxy]]:
    """A `proxy` fixture shared by a whole test module: starting one per test costs ~150 ms.

    Use as `proxy = module_proxy("relaylog-sdk-openai")` at module level; records are told apart
    by request id.
    """

    @pytest.fixture(scope="module")
    def proxy(standin: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
        standin.fault = None
        with RunningProxy(tmp_path_factory.mktemp(name), standin.url) as running:
            yield running

    return proxy
