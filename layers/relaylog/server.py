"""`relaylog serve`: the relay under uvicorn on the embedded default store."""

from __future__ import annotations

import asyncio
import copy
import errno
import functools
import gc
import importlib.util
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.supervisors import Multiprocess

from .asgi import Receive, Scope, Send
from .config import Settings
from .cost import load_prices
from .gateway.cache.files import FileCacheStore
from .gateway.counters.sqlite import SqliteCounters
from .gateway.services import Services
from .http_server import HttpProtocol
from .keys import KeysUnavailable
from .keys.file import KeyStore
from .otel import shown, span_shipper
from .query.api import QueryApp, is_query_path
from .query.backend import Backend
from .relay.app import RelayApp
from .sinks.deferred import Deferred
from .sinks.local import LocalSink

log = logging.getLogger("relaylog")

# Expired cache entries are looked for at start-up and then this often.
_SWEEP_INTERVAL_S = 3600.0
# Connections waiting to be accepted (uvicorn's default).
_BACKLOG = 2048


class LocalApp(RelayApp):
    """The proxy, with the query API and dashboard on their own paths of the same port."""

    def __init__(
        self, settings: Settings, keys: KeyStore, sink: LocalSink, query: QueryApp, cache: FileCacheStore
    ) -> None:
        counters = SqliteCounters(settings.data_dir / "ratelimits.sqlite3")
        self.records = Deferred(sink)  # what the relay submits to; the files are `local_sink`'s
        services = Services(cache=cache, counters=counters)
        super().__init__(settings, keys, self.records, services, idle=self.records.build_soon)
        self.local_sink = sink
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


class StartError(Exception):
    """`relaylog serve` cannot start: one sentence naming the port or directory at fault."""


def check_data_dir(data_dir: Path) -> None:
    """Create the data dir if it is missing, and prove it writable, before anything else uses it
    (a failure there would otherwise surface later as a traceback about keys.json.lock or a record file)."""
    if data_dir.exists() and not data_dir.is_dir():
        raise StartError(f"the data dir {data_dir} is not a directory")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartError(f"cannot create the data dir {data_dir}: {exc.strerror or exc}") from None
    try:
        tempfile.TemporaryFile(dir=data_dir).close()
    except OSError as exc:
        raise StartError(f"the data dir {data_dir} is not writable: {exc.strerror or exc}") from None


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the banner says where to connect (as uvicorn would bind it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(_BACKLOG)  # connections made between the banner and the first accept wait, not fail
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartError(
                f"port {port} on {host} is already in use; stop what holds it or pick another with --port"
            ) from None
        raise StartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)  # worker processes inherit it
    return sock


def banner(url: str, data_dir: Path, settings: Settings, keys: int | None) -> list[str]:
    """What `relaylog serve` prints once it is listening."""
    lines = [
        f"relaylog proxy on {url}  (OpenAI: {url}/v1, Anthropic: {url}/anthropic, ...)",
        f"dashboard: {url}/dashboard/   query API: {url}/api/v1/ (openapi.json)",
        f"records: {data_dir.resolve()}/raw  (relaylog requests --data-dir {data_dir})",
    ]
    for provider, origin in sorted(settings.upstream_overrides.items()):
        lines.append(f"upstream override: {provider} -> {shown(origin)}  (RELAYLOG_UPSTREAM_{provider.upper()})")
    if keys is None:
        lines.append(f"cannot read {data_dir / 'keys.json'}: every call is refused (503) until it can be read")
    elif keys:
        lines.append(f"{keys} relaylog key(s) active: calls need 'Helicone-Auth: Bearer <key>'")
    else:
        lines.append(
            "no relaylog keys: the proxy and the dashboard are OPEN to anyone who can reach them (relaylog keys create)"
        )
    if settings.otel is not None:
        otel = settings.otel
        content = ", with prompt content" if otel.capture_content else ""
        lines.append(f"OpenTelemetry: spans to {shown(otel.endpoint)} ({otel.protocol}{content})")
    return lines


def run(host: str = "127.0.0.1", port: int = 8787, data_dir: Path = Path("relaylog-data"), workers: int = 1) -> None:
    """Serve until interrupted; StartError (before anything is printed) if it cannot start."""
    os.environ["RELAYLOG_DATA_DIR"] = str(data_dir)
    check_data_dir(data_dir)
    try:
        keys: int | None = KeyStore.in_data_dir(data_dir).active_count()
    except KeysUnavailable:
        keys = None
    grace = float(os.environ.get("RELAYLOG_SHUTDOWN_GRACE", "30"))
    settings = Settings.from_env()
    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config["loggers"]["relaylog"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config = uvicorn.Config(
        "relaylog.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        # relaylog's own protocol on httptools (relaylog.http_server: leaner per call, with the
        # head limits uvicorn lacks); h11 has only its own bound on head size, set to the same number.
        http=HttpProtocol if importlib.util.find_spec("httptools") else "h11",
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
        backlog=_BACKLOG,
        # Calls still running this long after SIGTERM are cancelled, and recorded as such. uvicorn
        # annotates an int but hands it to asyncio.wait_for, which takes fractions too.
        timeout_graceful_shutdown=grace,  # type: ignore[arg-type]
    )
    sock = bind(host, port)
    actual_port = sock.getsockname()[1]  # --port 0: the one the system chose
    shown_host = f"[{host}]" if ":" in host else host
    lines = banner(f"http://{shown_host}:{actual_port}", data_dir, settings, keys)
    print("\n".join(lines), file=sys.stderr, flush=True)
    # What uvicorn.run does with a socket it bound itself, given ours instead.
    server = uvicorn.Server(config)
    try:
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    if workers == 1 and not server.started:
        raise StartError("relaylog did not start (its log above says why)")
