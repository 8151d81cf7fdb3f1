"""The invocation loop: next event, stream the response, then send the records, then ask again.

Records are flushed after the response POST has completed (the client is not kept waiting) and
before the next `GET /next` (Lambda may freeze the environment from then on, with records unsent).
With `AWS_LAMBDA_MAX_CONCURRENCY` above 1 (Lambda Managed Instances, which never freezes an
environment) `pollers` serves that many invocations at once instead.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

from ..relay.app import RelayApp
from .invocations import Stop, handle
from .pollers import serve_concurrently
from .runtime_api import RuntimeAPI

log = logging.getLogger("relaylog.runtime")

# Records not sent by this much before the deadline wait for the next invocation's flush.
FLUSH_MARGIN_S = 0.3


async def serve(app: RelayApp, api: RuntimeAPI, stop: Stop, concurrency: int = 1) -> None:
    """Handle invocations, `concurrency` at a time, until `stop` is set (SIGTERM); then let those
    under way finish and send every record still queued."""
    await app.startup()
    try:
        if concurrency > 1:
            await serve_concurrently(app, api, stop, concurrency)
        else:
            await _serve_one_at_a_time(app, api, stop)
    finally:
        await app.shutdown()
        await asyncio.to_thread(app.sink.close)
        api.connections.close()


async def _serve_one_at_a_time(app: RelayApp, api: RuntimeAPI, stop: Stop) -> None:
    while (invocation := await stop.next(api)) is not None:
        await handle(app, api, invocation, process_wide_trace=True)
        budget = invocation.remaining() - FLUSH_MARGIN_S
        await asyncio.to_thread(app.sink.flush, max(budget, 0.0))


async def run(factory: Callable[[], RelayApp], address: str, concurrency: int = 1) -> int:
    api = RuntimeAPI(address, keep_alive=concurrency > 1)
    try:
        app = factory()
    except Exception as exc:
        log.exception("relaylog could not start")
        await api.init_error("Runtime.InitError", f"relaylog could not start: {type(exc).__name__}: {exc}"[:1000])
        return 1
    stop = Stop()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    await serve(app, api, stop, concurrency)
    log.info("relaylog runtime stopped after %.0f s", time.monotonic() - started)
    return 0
