"""Records built in the relay's idle moments: when a non-streamed call waits on its provider, or
5 ms later; never while a stream's client waits; never lost."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import MutableMapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from relaylog.config import Settings
from relaylog.gateway.ratelimit import Decision, RatePolicy
from relaylog.headers import HeliconeMeta
from relaylog.keys.file import KeyStore
from relaylog.observe import Exchange
from relaylog.providers.registry import PROVIDERS
from relaylog.record import Record
from relaylog.relay.app import RelayApp
from relaylog.sinks.deferred import Deferred
from relaylog.standin import StandIn


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


def test_a_record_waits_until_a_call_says_it_is_about_to_wait() -> None:
    async def scenario() -> list[list[str]]:
        toy = ToySink()
        sink = Deferred(toy)
        seen: list[list[str]] = []
        sink.submit(_exchange(1))
        seen.append(list(toy.built))  # not built with the response
        sink.build_soon()
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


# -- the moment the relay chooses ------------------------------------------------------------------

_PLAIN = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}]}'
# Helicone-Request-Id must be a UUID to be kept.
_IDS = {"first": "00000000-0000-4000-8000-000000000001", "second": "00000000-0000-4000-8000-000000000002"}
_NAMES = {value: name for name, value in _IDS.items()}
_STREAM = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"stream":true}'


def _relayed_in_order(standin: StandIn, tmp_path: Path, second: bytes) -> list[str]:
    """Two calls through the relay app, one after the other, on one loop: what the client of the
    second was sent, and when the first call's record was built, in the order they happened. The
    timer is out of the way (10 s): only the moments the relay chooses build a record."""
    settings = replace(Settings(), data_dir=tmp_path, upstream_overrides={name: standin.url for name in PROVIDERS})
    events: list[str] = []

    class Seen(ToySink):
        def submit(self, exchange: Exchange) -> Record | None:
            events.append(f"built {_NAMES[exchange.request_id]}")
            return None

    async def call(app: RelayApp, request_id: str, body: bytes) -> None:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/json"),
                (b"authorization", b"Bearer sk-test"),
                (b"helicone-request-id", _IDS[request_id].encode()),
                # Paced, so a build between two events would be seen between them.
                (b"x-standin-fault", b"chunk-delay-ms=20"),
            ],
        }
        left = asyncio.get_running_loop().create_future()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await left  # the client stays
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if request_id != "first":
                events.append("start" if message["type"] == "http.response.start" else "body")

        await app(scope, receive, send)

    async def scenario() -> None:
        deferred = Deferred(Seen(), latest_s=10.0)
        app = RelayApp(settings, KeyStore.in_data_dir(tmp_path, 0.0), deferred, idle=deferred.build_soon)
        await call(app, "first", _PLAIN)
        await call(app, "second", second)
        deferred.close()
        await app.shutdown()

    asyncio.run(scenario())
    return events


def test_a_stream_never_waits_for_an_earlier_calls_record(standin: StandIn, tmp_path: Path) -> None:
    # Its client reads each event as it comes: no moment of the stream is idle for it, so only the
    # timer (or a non-streamed call's wait) builds the record; here, closing the sink does.
    events = _relayed_in_order(standin, tmp_path, _STREAM)
    assert events.count("body") > 2 and events[-2:] == ["built first", "built second"], events
    assert set(events[:-2]) == {"start", "body"}, events


def test_a_non_streamed_call_builds_the_earlier_record_while_it_waits_on_its_provider(
    standin: StandIn, tmp_path: Path
) -> None:
    assert _relayed_in_order(standin, tmp_path, _PLAIN) == ["built first", "start", "body", "built second"]
