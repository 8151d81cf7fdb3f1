"""Records built in the relay's idle moments, not between a response and the client's next request.

`relaylog serve` builds each record on the event loop (on a thread of its own it cost twice the
CPU, see sinks/local.py). Built the moment the response is complete, that work sits between the
response and whatever the loop does next: a client that sends its next request straight away
waits for it (0.27 ms for a 16-event stream's record, timed inside relaylog on bench/relay.py's
stream probe). Here a finished exchange waits for the relay to say a call is about to wait
(`build_soon`), and is built then; if no call says so, after `latest_s`. The relay says so as a
non-streamed call waits on its provider's answer. A stream has no such moment: its client waits
for the first event, then reads each as it arrives. Built once the first event was written, the
record made a client on the same core wait that long to read it (bench/relay.py's probe shares
the cores: 0.15 ms of its added time to first byte); built before it, the record delayed the
event itself. Under load the work per record is the same, only its moment moves.

Exchanges whose record is needed at once (a rate limit charges its cost) are built at once.
`flush` and `close` build everything still waiting first, so nothing submitted is lost at
shutdown.
"""

from __future__ import annotations

import asyncio
import threading

from ..observe import Exchange
from ..record import Record
from . import Sink

# An exchange waits at most this long for a quiet moment (the writer adds its own ~10 ms batch).
_LATEST_S = 0.005


class Deferred:
    """A Sink that hands exchanges to `sink` a moment later (see the module docstring)."""

    __slots__ = ("_latest_s", "_loop", "_scheduled", "_sink", "_timer", "_waiting")

    def __init__(self, sink: Sink, latest_s: float = _LATEST_S) -> None:
        self._sink = sink
        self._latest_s = latest_s
        self._waiting: list[Exchange] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._scheduled = False

    def submit(self, exchange: Exchange) -> Record | None:
        if exchange.rate_decisions:  # the limiter charges from this record now
            return self._sink.submit(exchange)
        self._waiting.append(exchange)
        if self._timer is None:
            self._loop = loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._latest_s, self._build)
        return None

    def build_soon(self) -> None:
        """A call is about to wait: build what is waiting then. Its task runs on until it waits,
        so the callback queued now runs after that."""
        if self._waiting and not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._build)

    def _build(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, []
        for exchange in waiting:
            self._sink.submit(exchange)

    def flush(self, timeout_s: float) -> None:
        """Build what waits (on the loop's own thread, where the exchanges are), then flush."""
        loop = self._loop
        if loop is not None and loop.is_running() and not _running_here(loop):
            built = threading.Event()

            def build() -> None:
                self._build()
                built.set()

            loop.call_soon_threadsafe(build)
            built.wait(timeout_s)
        else:
            self._build()
        self._sink.flush(timeout_s)

    def close(self) -> None:
        self._build()
        self._sink.close()


def _running_here(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
