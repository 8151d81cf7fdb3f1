"""`relaylog serve`: the relay under uvicorn on the embedded default store."""

from __future__ import annotations

import asyncio
import copy
import functools
import gc
import importlib.util
import logging
import os
import sys
from pathlib import Path

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from .asgi import Receive, Scope, Send
from .config import Settings
from .cost import load_prices
from .gateway.cache.files import FileCacheStore
from .gateway.counters.sqlite import SqliteCounters
from .gateway.services import Services
from .http_guard import GuardedHttpToolsProtocol
from .keys import KeysUnavailable
from .keys.file import KeyStore
from .otel import shown, span_shipper
from .query.api import QueryApp, is_query_path
from .query.backend import Backend
from .relay.app import RelayApp
from .sinks.local import LocalSink

log = logging.getLogger("relaylog")

# Expired cache entries are looked for at start-up and then this often.
_SWEEP_INTERVAL_S = 3600.0


class _CutResponseNotice(logging.Filter):
    """Drop uvicorn's error line for a response relaylog cut on purpose (the provider cut it
    first); the relay logs a warning naming the request instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


class LocalApp(RelayApp):
    """The proxy, with the query API and dashboard on their own paths of the same port."""

    def __init__(
        self, settings: Settings, keys: KeyStore, sink: LocalSink, query: QueryApp, cache: FileCacheStore
    ) -> None:
        counters = SqliteCounters(settings.data_dir / "ratelimits.sqlite3")
        super().__init__(settings, keys, sink, Services(cache=cache, counters=counters))
        self.query = query
        self.cache_files = cache
        self._sweeping: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        await super().startup()
        self._sweeping = asyncio.get_running_loop().create_task(self._sweep_cache())

    async def shutdown(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
        await super().shutdown()

    async def _sweep_cache(self) -> None:
        """Expired cache entries nobody asks for again would otherwise stay on disk."""
        while True:
            try:
                removed = await asyncio.to_thread(self.cache_files.sweep)
                if removed:
                    log.info("cache: removed %d expired entries", removed)
            except OSError as error:
                log.warning("cache sweep failed: %s", error)
            await asyncio.sleep(_SWEEP_INTERVAL_S)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if is_query_path(path):
                await self.query(scope, receive, send)
                return
            if path == "/" and scope["method"] in ("GET", "HEAD"):  # a browser opening the bare address
                await send({"type": "http.response.start", "status": 307, "headers": [(b"location", b"/dashboard/")]})
                await send({"type": "http.response.body", "body": b""})
                return
        await super().__call__(scope, receive, send)


def _local_backend(data_dir: Path) -> Backend:
    # Imported here: DuckDB costs `relaylog serve` about 40 MB, paid only once the dashboard is used.
    from .query.local import LocalBackend
    from .store.local import LocalStore

    return LocalBackend(LocalStore(data_dir))


def local_app(settings: Settings) -> LocalApp:
    keys = KeyStore.in_data_dir(settings.data_dir, settings.key_reload_s)
    query = QueryApp(functools.partial(_local_backend, settings.data_dir), keys)
    # Cache entries and rate-limit counters live in the data dir, shared by every worker process.
    sink = LocalSink(settings, span_shipper(settings))
    return LocalApp(settings, keys, sink, query, FileCacheStore(settings.data_dir / "cache"))


def create_app() -> LocalApp:
    """App factory for uvicorn: one per worker process, configured from the environment."""
    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("uvicorn.error").addFilter(_CutResponseNotice())
    app = local_app(settings)
    load_prices()
    # Everything loaded so far lives as long as the process: keeping it out of the collector's
    # generations cut full collections (25-48 ms pauses, the p99 spikes under load).
    gc.collect()
    gc.freeze()
    # A call allocates hundreds of short-lived objects that reference counting frees; collecting
    # the young generation every 700 allocations cost 10-15% of the CPU per call (measured at
    # c=16). Cycles are still collected, every 50,000 allocations.
    gc.set_threshold(50_000, 50, 100)
    return app


def run(host: str = "127.0.0.1", port: int = 8787, data_dir: Path = Path("relaylog-data"), workers: int = 1) -> None:
    os.environ["RELAYLOG_DATA_DIR"] = str(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        keys: int | None = KeyStore.in_data_dir(data_dir).active_count()
    except KeysUnavailable:
        keys = None
    url = f"http://{host}:{port}"
    print(f"relaylog proxy on {url}  (OpenAI: {url}/v1, Anthropic: {url}/anthropic, ...)", file=sys.stderr)
    print(f"dashboard: {url}/dashboard/   query API: {url}/api/v1/ (openapi.json)", file=sys.stderr)
    print(f"records: {data_dir.resolve()}/raw  (relaylog requests --data-dir {data_dir})", file=sys.stderr)
    if keys is None:
        print(
            f"cannot read {data_dir / 'keys.json'}: every call is refused (503) until it can be read",
            file=sys.stderr,
        )
    elif keys:
        print(f"{keys} relaylog key(s) active: calls need 'Helicone-Auth: Bearer <key>'", file=sys.stderr)
    else:
        print(
            "no relaylog keys: the proxy and the dashboard are OPEN to anyone who can reach them"
            " (relaylog keys create)",
            file=sys.stderr,
        )
    grace = float(os.environ.get("RELAYLOG_SHUTDOWN_GRACE", "30"))
    settings = Settings.from_env()
    if settings.otel is not None:
        otel = settings.otel
        content = ", with prompt content" if otel.capture_content else ""
        print(f"OpenTelemetry: spans to {shown(otel.endpoint)} ({otel.protocol}{content})", file=sys.stderr)
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["relaylog"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    uvicorn.run(
        "relaylog.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        # httptools with the head limits and timeout uvicorn lacks (relaylog.http_guard); h11 has
        # only its own bound on head size, set to the same number.
        http=GuardedHttpToolsProtocol if importlib.util.find_spec("httptools") else "h11",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        lifespan="on",
        access_log=False,
        # The provider's own Date and Server headers are relayed; uvicorn must not add a second pair.
        server_header=False,
        date_header=False,
        # Client addresses are not recorded, so X-Forwarded-* need not be parsed on every call.
        proxy_headers=False,
        log_level="info",
        log_config=log_config,
        # Calls still running this long after SIGTERM are cancelled, and recorded as such. uvicorn
        # annotates an int but hands it to asyncio.wait_for, which takes fractions too.
        timeout_graceful_shutdown=grace,  # type: ignore[arg-type]
    )
