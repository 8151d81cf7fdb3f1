"""Many invocations at once in one runtime process, as Lambda Managed Instances runs it
(`AWS_LAMBDA_MAX_CONCURRENCY` above 1), with small ASGI apps whose every move is known: how many
run at once, whose trace id each sees, failures kept to their own invocation, records flushed in
the background without holding a response, SIGTERM draining what is under way."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from relaylog.runtime import context
from relaylog.runtime.pollers import EXTENSION_NAME, max_concurrency

from tests.support.lambda_emulator import LambdaEmulator, Outcome
from tests.support.lambda_runtime import InProcessRuntime

CONCURRENCY = 8


class GatedSink:
    """Records what was submitted; a flush sends only while the gate is open (a Firehose that
    hangs, on the flusher's thread), so a test can hold every flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.queued: list[str] = []
        self.sent: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.flushing = threading.Event()  # a flush is waiting at the closed gate
        self.closed = False

    def submit(self, name: str) -> None:
        with self._lock:
            self.queued.append(name)

    def flush(self, timeout_s: float) -> None:
        if not self.gate.is_set():
            self.flushing.set()
            self.gate.wait()
        with self._lock:
            self.sent, self.queued = self.sent + self.queued, []

    def close(self) -> None:
        self.flush(0)
        self.closed = True


class ConcurrentApp:
    """`/hold` answers after the event's `ms`, in two chunks; `/fail-before` and `/fail-after`
    raise before and after the first byte; every call counts how many ran at once."""

    def __init__(self) -> None:
        self.sink = GatedSink()
        self.running = 0
        self.most_running = 0
        self.release = asyncio.Event()  # `/wait` answers when set (on the runtime's loop)
        self.started = False

    async def startup(self) -> None:
        self.started = True

    async def shutdown(self) -> None:
        self.started = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = await receive()
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await getattr(self, scope["path"].strip("/").replace("-", "_"))(json.loads(request["body"] or b"{}"), send)
        finally:
            self.running -= 1
            self.sink.submit(scope["path"] + ":" + str(context.trace_id()))

    async def hold(self, spec: dict[str, Any], send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await asyncio.sleep(spec.get("ms", 0) / 1000)
        # Whose invocation this code serves, after others have started meanwhile.
        seen = {"trace": context.trace_id(), "env": os.environ.get("_X_AMZN_TRACE_ID")}
        await send({"type": "http.response.body", "body": b"held ", "more_body": True})
        await send({"type": "http.response.body", "body": json.dumps(seen).encode(), "more_body": False})

    async def fail_before(self, spec: dict[str, Any], send: Any) -> None:
        await asyncio.sleep(spec.get("ms", 0) / 1000)
        raise RuntimeError("the app broke before answering")

    async def fail_after(self, spec: dict[str, Any], send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first ", "more_body": True})
        await asyncio.sleep(spec.get("ms", 0) / 1000)
        raise RuntimeError("the app broke mid-answer")


def _event(path: str, **spec: Any) -> dict[str, Any]:
    return {
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": path, "sourceIp": "127.0.0.1"}},
        "body": json.dumps(spec),
        "isBase64Encoded": False,
    }


def _held(outcome: Outcome) -> dict[str, Any]:
    assert outcome.body.startswith(b"held "), outcome.body
    seen: dict[str, Any] = json.loads(outcome.body.removeprefix(b"held "))
    return seen


@pytest.fixture
def concurrent() -> Iterator[tuple[LambdaEmulator, ConcurrentApp]]:
    os.environ.pop("_X_AMZN_TRACE_ID", None)  # what an earlier one-at-a-time runtime here left
    app = ConcurrentApp()
    with LambdaEmulator(max_concurrency=CONCURRENCY) as emulator, InProcessRuntime(emulator, app):
        emulator.wait_polled(CONCURRENCY)
        try:
            yield emulator, app
        finally:
            app.sink.gate.set()  # a test that failed with flushes held must not hold the stop too


def _wait(outcomes: list[Outcome], timeout_s: float = 30) -> None:
    for outcome in outcomes:
        assert outcome.done.wait(timeout_s), "an invocation was not answered"


def _eventually(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.01)


def test_the_concurrency_lambda_gives_is_read_as_a_whole_number_else_one() -> None:
    assert [max_concurrency(v) for v in (None, "1", "64", "0", "-3", "x", "2.5")] == [1, 1, 64, 1, 1, 1, 1]


def test_as_many_invocations_run_at_once_as_lambda_allows_and_no_more(
    concurrent: tuple[LambdaEmulator, ConcurrentApp],
) -> None:
    emulator, app = concurrent
    outcomes = [emulator.invoke(_event("/hold", ms=300), wait=False) for _ in range(3 * CONCURRENCY)]
    _wait(outcomes)
    assert all(o.prelude is not None and o.prelude["statusCode"] == 200 and o.trailers == {} for o in outcomes)
    # The app itself ran that many at once: one process, one event loop, CONCURRENCY pollers.
    assert app.most_running == CONCURRENCY and emulator.peak_in_flight == CONCURRENCY


def test_each_invocation_sees_its_own_trace_id_and_the_process_wide_one_is_left_alone(
    concurrent: tuple[LambdaEmulator, ConcurrentApp],
) -> None:
    emulator, _ = concurrent
    # Staggered, so every invocation reads its trace id after others have started since.
    outcomes = [emulator.invoke(_event("/hold", ms=200 - 20 * n), wait=False) for n in range(CONCURRENCY)]
    _wait(outcomes)
    for outcome in outcomes:
        assert _held(outcome) == {"trace": outcome.trace_id, "env": None}
    assert len({o.trace_id for o in outcomes}) == CONCURRENCY


def test_failures_stay_with_their_own_invocation(concurrent: tuple[LambdaEmulator, ConcurrentApp]) -> None:
    emulator, app = concurrent
    kinds = ["/hold", "/fail-before", "/fail-after", "/broken", "not-an-event"] * 4
    outcomes = []
    for kind in kinds:
        if kind == "not-an-event":
            outcomes.append(emulator.invoke(b"\x00not json", wait=False))
        else:
            outcomes.append(emulator.invoke(_event("/hold" if kind == "/broken" else kind, ms=400), wait=False))
    broken = [o for k, o in zip(kinds, outcomes, strict=True) if k == "/broken"]
    for outcome in broken:  # the Runtime API drops these responses mid-stream
        deadline = time.monotonic() + 10
        while outcome.prelude is None and time.monotonic() < deadline:
            time.sleep(0.005)
        emulator.break_runtime(outcome)
    _wait(outcomes)
    by_kind: dict[str, list[Outcome]] = {}
    for kind, outcome in zip(kinds, outcomes, strict=True):
        by_kind.setdefault(kind, []).append(outcome)
    for outcome in by_kind["/hold"]:
        assert outcome.trailers == {} and _held(outcome)["trace"] == outcome.trace_id
    for outcome in by_kind["/fail-before"]:
        assert outcome.prelude is not None and outcome.prelude["statusCode"] == 500
        assert json.loads(outcome.body)["error"]["type"] == "internal_error"
    for outcome in by_kind["/fail-after"]:
        assert outcome.chunks == [b"first "]
        assert outcome.trailers["lambda-runtime-function-error-type"] == "Relay.internal_error"
    for outcome in by_kind["not-an-event"]:
        assert outcome.error_type == "Runtime.InvalidEvent" and outcome.prelude is None
    assert all(o.trailers == {} for o in by_kind["/broken"])
    # And the runtime goes on serving, CONCURRENCY at a time.
    again = [emulator.invoke(_event("/hold", ms=100), wait=False) for _ in range(CONCURRENCY)]
    _wait(again)
    assert all(_held(o)["trace"] == o.trace_id for o in again)
    # Every invocation made its record (the app's own, after its response ended).
    _eventually(lambda: len(app.sink.sent + app.sink.queued) == len(kinds) - 4 + CONCURRENCY)
    recorded = [n.split(":")[0] for n in app.sink.sent + app.sink.queued]
    assert recorded.count("/hold") == 8 + CONCURRENCY and recorded.count("/fail-after") == 4


def test_connections_to_the_runtime_api_are_kept_and_reused(
    concurrent: tuple[LambdaEmulator, ConcurrentApp],
) -> None:
    emulator, _ = concurrent
    opened = emulator.runtime_connections
    outcomes = [emulator.invoke(_event("/hold", ms=20), wait=False) for _ in range(10 * CONCURRENCY)]
    _wait(outcomes)
    # Two requests per invocation (its event, its response) on at most one new connection per
    # poller and per response under way, instead of two new ones per invocation.
    assert emulator.runtime_connections - opened <= 2 * CONCURRENCY < 2 * len(outcomes)


def test_a_kept_connection_closed_under_a_request_costs_no_invocation(
    concurrent: tuple[LambdaEmulator, ConcurrentApp],
) -> None:
    emulator, app = concurrent
    _wait([emulator.invoke(_event("/hold", ms=20), wait=False) for _ in range(CONCURRENCY)])  # connections kept
    emulator.close_kept_at_next = CONCURRENCY
    outcomes = [emulator.invoke(_event("/hold", ms=20), wait=False) for _ in range(4 * CONCURRENCY)]
    _wait(outcomes)
    # Each poller asked again on a new connection; none stopped, and every invocation was served.
    assert emulator.close_kept_at_next == 0
    assert all(_held(o)["trace"] == o.trace_id for o in outcomes) and app.started


def test_responses_never_wait_for_records_to_be_sent(concurrent: tuple[LambdaEmulator, ConcurrentApp]) -> None:
    emulator, app = concurrent
    app.sink.gate.clear()  # every flush now hangs, as a Firehose that does not answer would
    first = emulator.invoke(_event("/hold", ms=0))
    assert app.sink.flushing.wait(10), "the flusher never tried to send the first record"
    later = [emulator.invoke(_event("/hold", ms=50), wait=False) for _ in range(3 * CONCURRENCY)]
    _wait(later)
    assert all(o.trailers == {} for o in [first, *later])
    _eventually(lambda: len(app.sink.queued) == 1 + 3 * CONCURRENCY)  # each app's record, after its response
    assert app.sink.sent == []
    app.sink.gate.set()
    _eventually(lambda: len(app.sink.sent) == 1 + 3 * CONCURRENCY)  # sent by the flusher, unasked


def test_stopping_lets_every_invocation_under_way_finish_then_sends_their_records() -> None:
    app = ConcurrentApp()
    with LambdaEmulator(max_concurrency=CONCURRENCY) as emulator:
        runtime = InProcessRuntime(emulator, app).__enter__()
        try:
            outcomes = [emulator.invoke(_event("/hold", ms=600), wait=False) for _ in range(CONCURRENCY)]
            _eventually(lambda: app.running == CONCURRENCY)
            queued = emulator.invoke(_event("/hold", ms=0), wait=False)
        finally:
            runtime.stop()  # what SIGTERM does
        assert all(o.done.is_set() and o.trailers == {} and _held(o)["trace"] == o.trace_id for o in outcomes)
        assert not queued.done.is_set()  # never asked for: another environment's to serve
    assert app.sink.closed and len(app.sink.sent) == CONCURRENCY and app.sink.queued == []
    assert not app.started


def test_the_runtime_asks_for_sigterm_before_its_first_invocation(
    concurrent: tuple[LambdaEmulator, ConcurrentApp],
) -> None:
    emulator, _ = concurrent
    # Lambda sends SIGTERM at shutdown only to a function with an extension registered, and takes
    # registrations only during Init, before the runtime's first `GET next`.
    assert emulator.extensions == [(EXTENSION_NAME, [])]
    kinds = [kind for kind, _, _ in emulator.timeline]
    assert kinds[0] == "register" and kinds[1:] == ["next"] * (len(kinds) - 1)


def test_one_at_a_time_without_the_variable_as_before() -> None:
    app = ConcurrentApp()
    try:
        with LambdaEmulator() as emulator, InProcessRuntime(emulator, app):
            outcomes = [emulator.invoke(_event("/hold", ms=50), wait=False) for _ in range(4)]
            _wait(outcomes)
            emulator.settle()
    finally:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    assert app.most_running == 1 and emulator.peak_in_flight == 1 and emulator.extensions == []
    assert emulator.runtime_connections == emulator.next_calls + len(outcomes)  # a new one for each request
    # One invocation at a time may, and does, put its trace id where X-Ray reads it.
    assert [_held(o) for o in outcomes] == [{"trace": o.trace_id, "env": o.trace_id} for o in outcomes]
