"""The client's side of a relayed call: whether the response has ended for it, and hearing it leave.

A response has ended for the client once the provider's terminal event has been sent to it (what
that event is comes from the wire format, `providers.parsing.stream_ended`), or its whole body.
From then on the call is complete, whatever becomes of either connection: the OpenAI SDK, for one,
hangs up at `[DONE]` without reading the end of the HTTP body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..asgi import Receive, Scope
from ..observe import Exchange
from ..providers.parsing import stream_ended
from ..recording import decode


def ended(exchange: Exchange) -> bool:
    """Whether the provider's terminal event has been sent to the client. Asked only when a
    connection ends early, never per chunk. A stream sent past the capture limit is not all kept,
    and counts as not ended."""
    provider = exchange.provider
    if not exchange.stream or provider is None or exchange.response_bytes > sum(map(len, exchange.response_chunks)):
        return False
    body, _ = decode(b"".join(exchange.response_chunks), exchange.response_content_encoding)
    return body is not None and stream_ended(provider.family, exchange.endpoint or exchange.path, body)


# A server's word that the client left, without a task waiting on `receive()` for it:
# `scope["extensions"]["relaylog.disconnect"]["listen"]` (`relaylog serve`: http_server/request.py).
# `listen(callback)` has `callback` called once `receive()` would return `http.disconnect` (soon,
# if it already would); `listen(None)` stops.
Listen = Callable[[Callable[[], None] | None], None]


def disconnect_listener(scope: Scope) -> Listen | None:
    extension = scope.get("extensions", {}).get("relaylog.disconnect")
    return extension.get("listen") if extension is not None else None


class DisconnectWatcher:
    """Hears the client go away while the relay waits on the provider. Before the response has
    ended for the client, that cancels the relaying task (the provider stops being read) and the
    call is `client_disconnect`. After, the call is complete (`exchange.client_done`): the relay reads
    on for at most `read_on_s`, sending nothing, then is cancelled the same way. The relay takes
    either cancellation back with `uncancel()`. It hears the client through the server's `listen`
    when there is one, else through a task awaiting `receive()`."""

    __slots__ = (
        "_exchange",
        "_listen",
        "_listening",
        "_read_on_s",
        "_task",
        "_timer",
        "_watch",
        "gone",
        "read_on_over",
    )

    def __init__(self, receive: Receive, exchange: Exchange, read_on_s: float, listen: Listen | None = None) -> None:
        self.gone = False  # the client left before the end
        self.read_on_over = False
        self._exchange = exchange
        self._read_on_s = read_on_s
        self._task = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None
        self._listening = True
        self._listen = listen
        self._watch: asyncio.Task[None] | None = None
        if listen is not None:
            listen(self._disconnected)
        else:
            self._watch = asyncio.get_running_loop().create_task(self._wait(receive))

    async def _wait(self, receive: Receive) -> None:
        message = await receive()
        if message["type"] == "http.disconnect":
            self._disconnected()

    def _disconnected(self) -> None:
        if not self._listening or self._task is None:
            return
        self._listening = False
        exchange = self._exchange
        if not ended(exchange):
            self.gone = True
            exchange.failed("client_disconnect")
            self._task.cancel()
            return
        exchange.client_left_after_end()
        self._timer = asyncio.get_running_loop().call_later(self._read_on_s, self._read_on_ends)

    def _read_on_ends(self) -> None:
        if self._task is not None:
            self.read_on_over = True
            self._task.cancel()

    def uncancel(self) -> bool:
        """Take back a cancellation of the relaying task that was this watcher's doing; False when
        it was not (the server stopping the call), for the caller to let it propagate."""
        if not (self.gone or self.read_on_over):
            return False
        if self._task is not None:
            self._task.uncancel()
        return True

    def stop(self) -> None:
        self._listening = False
        if self._listen is not None:
            listen, self._listen = self._listen, None
            listen(None)
        if self._watch is not None:
            watch, self._watch = self._watch, None
            if not watch.done():
                watch.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
