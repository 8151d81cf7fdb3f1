"""Deadlines for many short waits, checked by one sweeper task instead of one timer per wait.

Reading a request body is almost always instant, yet needs a deadline for the client that trickles
it (slowloris). `asyncio.timeout` costs 4-11 us per call and leaves each cancelled timer in the
loop's heap until it would have fired (a million of them at 9,000 calls/s with a 120 s timeout); a
dict entry per wait and one sweeper waking a few times a second cost well under 1 us. The price is
precision: a wait is cancelled up to one tick after its deadline.
"""

from __future__ import annotations

import asyncio
import time


class Deadlines:
    """Usage, around one await that should not outlast `deadline` (time.perf_counter time):

    task = deadlines.enter(deadline)
    try:
        return await something()
    except asyncio.CancelledError:
        if deadlines.expired(task):
            raise TimeoutError from None
        raise
    finally:
        deadlines.leave(task)
    """

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self._waiting: dict[asyncio.Task[object], float] = {}
        self._cancelled: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def enter(self, deadline: float) -> asyncio.Task[object]:
        task = asyncio.current_task()
        assert task is not None
        self._waiting[task] = deadline
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return task

    def expired(self, task: asyncio.Task[object]) -> bool:
        """Whether the CancelledError `task` is handling came from its deadline; if so the
        cancellation is taken back, and the caller raises TimeoutError instead."""
        if task not in self._cancelled:
            return False
        self._cancelled.discard(task)
        # Cancelled for another reason as well (the server stopping): that one still stands.
        return task.uncancel() == 0

    def leave(self, task: asyncio.Task[object]) -> None:
        self._waiting.pop(task, None)
        self._cancelled.discard(task)

    def close(self) -> None:
        """Stop the sweeper, so a loop that is closing has no task of ours left pending."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _sweep(self) -> None:
        try:
            # Stops when nothing waits, so an idle process (or a frozen Lambda) has no timer; under
            # load it is restarted at most once a tick.
            while True:
                await asyncio.sleep(self.tick_s)
                if not self._waiting:
                    return
                now = time.perf_counter()
                for task, deadline in list(self._waiting.items()):
                    if deadline <= now and task not in self._cancelled:
                        self._cancelled.add(task)
                        task.cancel()
        finally:
            if self._sweeper is asyncio.current_task():
                self._sweeper = None
