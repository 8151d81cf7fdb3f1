"""The invocation loop: next event, stream the response, then send the records, then ask again.

Records are flushed after the response POST has completed (the client is not kept waiting) and
before the next `GET /next` (Lambda may freeze the environment from then on, with records unsent).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable

from ..relay.app import RelayApp
from .events import EventError, to_asgi
from .invoke import invoke
from .runtime_api import Invocation, RuntimeAPI

log = logging.getLogger("relaylog.runtime")

# The relay is cancelled this long before the deadline, so the record is built and the stream ends
# with error trailers rather than Lambda killing the process mid-write.
DEADLINE_MARGIN_S = 1.0
# Records not sent by this much before the deadline wait for the next invocation's flush.
FLUSH_MARGIN_S = 0.3


async def serve(app: RelayApp, api: RuntimeAPI, stop: asyncio.Event) -> None:
    """Handle invocations until `stop` is set (SIGTERM), then send every record still queued."""
    await app.startup()
    try:
        while not stop.is_set():
            waiter = asyncio.ensure_future(api.next())
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({waiter, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if waiter not in done:
                waiter.cancel()
                break
            invocation = waiter.result()
            await handle(app, api, invocation)
            budget = invocation.remaining() - FLUSH_MARGIN_S
            await asyncio.to_thread(app.sink.flush, max(budget, 0.0))
    finally:
        await app.shutdown()
        await asyncio.to_thread(app.sink.close)


async def handle(app: RelayApp, api: RuntimeAPI, invocation: Invocation) -> None:
    # What X-Ray and Powertools read; one invocation's trace must not leak into the next.
    if invocation.trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = invocation.trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    try:
        if not isinstance(invocation.event, dict):
            raise EventError("the event is not a JSON object")
        scope, body = to_asgi(invocation.event)
    except EventError as exc:
        await api.invocation_error(invocation.request_id, "Runtime.InvalidEvent", str(exc))
        return
    stream = api.respond(invocation.request_id)
    try:
        # In this task rather than wait_for's own, so that even a deadline already past reaches the
        # app as a cancellation and the client gets a 504, not silence.
        async with asyncio.timeout(max(invocation.remaining() - DEADLINE_MARGIN_S, 0.0)):
            await invoke(app, scope, body, stream)
    except TimeoutError:
        log.warning(
            "request %s stopped %.1f s before the invocation deadline", invocation.request_id, DEADLINE_MARGIN_S
        )
    except OSError as exc:
        log.warning("invocation %s: the response stream broke: %s", invocation.request_id, type(exc).__name__)


async def run(factory: Callable[[], RelayApp], address: str) -> int:
    api = RuntimeAPI(address)
    try:
        app = factory()
    except Exception as exc:
        log.exception("relaylog could not start")
        await api.init_error("Runtime.InitError", f"relaylog could not start: {type(exc).__name__}: {exc}"[:1000])
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    await serve(app, api, stop)
    log.info("relaylog runtime stopped after %.0f s", time.monotonic() - started)
    return 0
