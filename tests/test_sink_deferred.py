"""Records built in the relay's idle moments: when the next call waits, or 5 ms later, never lost."""

from __future__ import annotations

import asyncio
import threading
import time

from relaylog.gateway.ratelimit import Decision, RatePolicy
from relaylog.headers import HeliconeMeta
from relaylog.observe import Exchange
from relaylog.record import Record
from relaylog.sinks.deferred import Deferred


class ToySink:
    def __init__(self) -> None:
        self.built: list[str] = []
        self.flushed = False
        self.closed = False

    def submit(self, exchange: Exchange) -> Record | None:
        self.built.append(exchange.request_id)
        return None

    def flush(self, timeout_s: float) -> None:
        self.flushed = True

    def close(self) -> None:
        self.closed = True


def _exchange(n: int) -> Exchange:
    return Exchange(f"id-{n}", time.time(), time.perf_counter(), "POST", "/v1/chat/completions", HeliconeMeta())


def test_a_record_waits_until_the_next_call_first_waits() -> None:
    async def scenario() -> list[list[str]]:
        toy = ToySink()
        sink = Deferred(toy)
        seen: list[list[str]] = []
        sink.submit(_exchange(1))
        seen.append(list(toy.built))  # not built with the response
        sink.call_started()
        seen.append(list(toy.built))  # nor while the new call runs on
        await asyncio.sleep(0)  # the new call waits (on its provider): now
        seen.append(list(toy.built))
        return seen

    assert asyncio.run(scenario()) == [[], [], ["id-1"]]


def test_without_another_call_a_record_is_built_within_a_few_milliseconds() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        toy = ToySink()
        sink = Deferred(toy)
        sink.submit(_exchange(1))
        sink.submit(_exchange(2))
        before = list(toy.built)
        await asyncio.sleep(0.05)
        return before, toy.built

    assert asyncio.run(scenario()) == ([], ["id-1", "id-2"])


def test_a_record_a_rate_limit_charges_from_is_built_at_once() -> None:
    async def scenario() -> list[str]:
        toy = ToySink()
        sink = Deferred(toy)
        exchange = _exchange(1)
        exchange.charge_later(Decision(allowed=True, policy=RatePolicy(100, 60, "cents"), remaining=99, reset_s=60))
        sink.submit(exchange)
        return list(toy.built)

    assert asyncio.run(scenario()) == ["id-1"]


def test_flush_and_close_build_everything_still_waiting_first() -> None:
    async def scenario() -> ToySink:
        toy = ToySink()
        sink = Deferred(toy)
        sink.submit(_exchange(1))
        sink.flush(1.0)
        sink.submit(_exchange(2))
        sink.close()
        return toy

    toy = asyncio.run(scenario())
    assert toy.built == ["id-1", "id-2"] and toy.flushed and toy.closed


def test_flush_from_another_thread_builds_on_the_loops_thread() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        toy = ToySink()
        sink = Deferred(toy)
        threads: list[str] = []
        real_submit = toy.submit

        def submit(exchange: Exchange) -> Record | None:
            threads.append(threading.current_thread().name)
            return real_submit(exchange)

        toy.submit = submit  # type: ignore[method-assign]
        sink.submit(_exchange(1))
        await asyncio.to_thread(sink.flush, 5.0)
        return toy.built, threads

    built, threads = asyncio.run(scenario())
    assert built == ["id-1"] and threads == [threading.main_thread().name]
