"""One invocation from the Runtime API to its response: the next event, then the relay for it
under its own deadline, its trace id and its response stream (used by `loop` and `pollers`)."""

from __future__ import annotations

import asyncio
import logging
import os

from ..relay.app import RelayApp
from . import context
from .events import EventError, to_asgi
from .invoke import invoke
from .runtime_api import Invocation, RuntimeAPI

log = logging.getLogger("relaylog.runtime")

# The relay is cancelled this long before the deadline, so the record is built and the stream ends
# with error trailers rather than Lambda killing the process mid-write.
DEADLINE_MARGIN_S = 1.0


class Stop:
    """SIGTERM, or the Runtime API gone: the runtime stops asking for invocations. `set` drops every
    `GET next` under way at once (Lambda gives their events to other environments) by cancelling
    the tasks waiting on them: asking costs no task nor `asyncio.wait` of its own per invocation."""

    __slots__ = ("_set", "_waiting", "_dropped")

    def __init__(self) -> None:
        self._set = False
        self._waiting: set[asyncio.Task[object]] = set()
        self._dropped: set[asyncio.Task[object]] = set()

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._dropped = set(self._waiting)
            for task in self._dropped:
                task.cancel()

    def is_set(self) -> bool:
        return self._set

    async def next(self, api: RuntimeAPI) -> Invocation | None:
        """The next invocation, or None once set first."""
        if self._set:
            return None
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        try:
            return await api.next()
        except asyncio.CancelledError:
            if task not in self._dropped:
                raise
            self._dropped.discard(task)
            task.uncancel()  # the cancellation was this one's, not the caller's
            return None
        finally:
            self._waiting.discard(task)


async def handle(app: RelayApp, api: RuntimeAPI, invocation: Invocation, process_wide_trace: bool) -> None:
    """Serve one invocation. `process_wide_trace`: also put its trace id in `_X_AMZN_TRACE_ID`,
    which only a process serving one invocation at a time may do (see `context`)."""
    context.enter(invocation)
    if process_wide_trace:
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
