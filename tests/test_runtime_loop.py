"""The runtime loop and its Runtime API transport, with small ASGI apps whose every move is known:
errors before and after the first byte, the wire framing of each body message, events larger than
the Runtime API sends in one piece, trace ids, the flush budget and what is left for shutdown."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.support.lambda_emulator import LambdaEmulator, Outcome
from tests.support.lambda_runtime import InProcessRuntime

pytestmark = pytest.mark.aws

MIB = 1024 * 1024


class ToySink:
    """Sends what was submitted only when given time to, like a sink whose transport is slow."""

    def __init__(self) -> None:
        self.queued: list[str] = []
        self.sent: list[str] = []
        self.flushes: list[float] = []
        self.closed = False

    def submit(self, path: str) -> None:
        self.queued.append(path)

    def flush(self, timeout_s: float) -> None:
        self.flushes.append(timeout_s)
        if timeout_s > 0:
            self.sent, self.queued = self.sent + self.queued, []

    def close(self) -> None:
        self.sent, self.queued, self.closed = self.sent + self.queued, [], True


class ToyApp:
    """Each path is one behaviour; `seen` keeps what the app observed, by path."""

    def __init__(self) -> None:
        self.sink = ToySink()
        self.seen: dict[str, Any] = {}
        self.running = False

    async def startup(self) -> None:
        self.running = True

    async def shutdown(self) -> None:
        self.running = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        try:
            await getattr(self, path.strip("/").replace("-", "_"))(scope, receive, send)
        finally:
            self.sink.submit(path)

    async def raise_before(self, scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("the app broke before answering")

    async def raise_after(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first ", "more_body": True})
        raise RuntimeError("the app broke mid-answer")

    async def chunks(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", b"text/event-stream"),
            (b"content-length", b"14"),
            (b"x-multi", b"a"),
            (b"x-multi", b"b"),
            (b"set-cookie", b"a=1; Path=/"),
            (b"set-cookie", b"b=2"),
        ]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        for part in (b"one ", b"", b"two ", b"three "):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"four", "more_body": False})

    async def echo(self, scope: Any, receive: Any, send: Any) -> None:
        request = await receive()
        answer = orjson.dumps(
            {
                "size": len(request["body"]),
                "sha256": hashlib.sha256(request["body"]).hexdigest(),
                "trace": os.environ.get("_X_AMZN_TRACE_ID"),
            }
        )
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    async def wait_disconnect(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"tick", "more_body": True})
        self.seen[scope["path"]] = (await receive())["type"]

    async def ticks(self, scope: Any, receive: Any, send: Any) -> None:
        """Ten paced ticks, listening all along for the client leaving."""
        await receive()
        listener = asyncio.ensure_future(receive())
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for n in range(10):
            await send({"type": "http.response.body", "body": b"tick %d;" % n, "more_body": True})
            await asyncio.sleep(0.02)
        await send({"type": "http.response.body", "body": b"end", "more_body": False})
        self.seen[scope["path"]] = listener.result()["type"] if listener.done() else "nothing"
        listener.cancel()

    async def late_start(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        listener = asyncio.ensure_future(receive())
        await asyncio.sleep(0.3)  # the client leaves meanwhile
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"late", "more_body": False})
        self.seen[scope["path"]] = listener.result()["type"] if listener.done() else "nothing"
        listener.cancel()

    async def seven_mb(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for n in range(7):
            await send({"type": "http.response.body", "body": bytes([65 + n]) * MIB, "more_body": n < 6})

    async def unacknowledged(self, scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"all of it", "more_body": True})
        try:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception as exc:
            self.seen[scope["path"]] = type(exc).__name__
        else:
            self.seen[scope["path"]] = "accepted"


def _event(path: str, body: bytes = b"", **changes: Any) -> dict[str, Any]:
    return {
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/octet-stream"},
        "requestContext": {"http": {"method": "POST", "path": path, "sourceIp": "127.0.0.1"}},
        "body": body.decode(),
        "isBase64Encoded": False,
        **changes,
    }


@pytest.fixture
def toy() -> Iterator[tuple[LambdaEmulator, ToyApp]]:
    app = ToyApp()
    with LambdaEmulator() as emulator, InProcessRuntime(emulator, app):
        yield emulator, app


def _json(outcome: Outcome) -> Any:
    return json.loads(outcome.body)


def test_an_app_error_before_the_first_byte_is_a_500_in_relaylogs_error_shape(
    toy: tuple[LambdaEmulator, ToyApp],
) -> None:
    emulator, app = toy
    outcome = emulator.invoke(_event("/raise-before"))
    assert outcome.prelude == {"statusCode": 500, "headers": {"content-type": "application/json"}, "cookies": []}
    assert _json(outcome) == {
        "error": {"type": "internal_error", "message": "relaylog failed while handling the request"}
    }
    assert outcome.trailers == {}
    emulator.settle()
    assert app.sink.sent == ["/raise-before"]


def test_an_app_error_after_the_first_byte_ends_the_stream_with_error_trailers(
    toy: tuple[LambdaEmulator, ToyApp],
) -> None:
    emulator, _ = toy
    outcome = emulator.invoke(_event("/raise-after"))
    assert outcome.prelude is not None and outcome.prelude["statusCode"] == 200
    assert outcome.chunks == [b"first "]
    assert outcome.trailers["lambda-runtime-function-error-type"] == "Relay.internal_error"
    assert outcome.error_trailer() == {
        "errorMessage": "relaylog failed while handling the request",
        "errorType": "Relay.internal_error",
        "stackTrace": [],
    }
    # Through the Function URL the client gets the status and a body cut short.
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", emulator.url + "/raise-after") as response:
            assert response.status_code == 200
            for _ in response.iter_raw():
                pass


def test_the_prelude_then_eight_nuls_then_one_chunk_per_body_message(toy: tuple[LambdaEmulator, ToyApp]) -> None:
    emulator, _ = toy
    outcome = emulator.invoke(_event("/chunks"))
    assert outcome.headers["lambda-runtime-function-response-mode"] == "streaming"
    assert outcome.headers["transfer-encoding"] == "chunked"
    assert outcome.headers["content-type"] == "application/vnd.awslambda.http-integration-response"
    assert outcome.headers["trailer"] == "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body"
    assert outcome.prelude == {
        "statusCode": 201,
        "headers": {"content-type": "text/event-stream", "x-multi": "a, b"},  # framing is AWS's own
        "cookies": ["a=1; Path=/", "b=2"],
    }
    assert outcome.chunks == [b"one ", b"two ", b"three ", b"four"]  # an empty message sends nothing
    assert outcome.trailers == {}
    with httpx.Client() as client:
        response = client.post(emulator.url + "/chunks")
    assert response.status_code == 201 and response.content == b"one two three four"
    assert response.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2"]


def test_events_larger_than_the_runtime_api_sends_in_one_piece(toy: tuple[LambdaEmulator, ToyApp]) -> None:
    emulator, _ = toy
    # The Runtime API (Go) sends an event over 2 KiB chunked, without Content-Length.
    for size in (100, 3_000, 400_000):
        body = (b"0123456789abcdef" * (size // 16 + 1))[:size]
        answer = _json(emulator.invoke(_event("/echo", body)))
        assert answer["size"] == size and answer["sha256"] == hashlib.sha256(body).hexdigest()


def test_each_invocation_runs_under_its_own_trace_id(toy: tuple[LambdaEmulator, ToyApp]) -> None:
    emulator, _ = toy
    first, second = emulator.invoke(_event("/echo")), emulator.invoke(_event("/echo"))
    assert _json(first)["trace"] == first.trace_id
    assert _json(second)["trace"] == second.trace_id != first.trace_id


def test_an_event_that_is_not_json_is_an_invocation_error(toy: tuple[LambdaEmulator, ToyApp]) -> None:
    emulator, _ = toy
    outcome = emulator.invoke(b"\x00not json")
    assert outcome.error_type == "Runtime.InvalidEvent" and outcome.prelude is None
    assert outcome.error is not None and outcome.error["errorMessage"] == "the event is not a JSON object"
    assert emulator.invoke(_event("/echo")).prelude is not None  # and the loop goes on


def test_a_client_leaving_mid_stream_is_not_heard_and_the_response_runs_to_its_end(
    toy: tuple[LambdaEmulator, ToyApp],
) -> None:
    emulator, app = toy
    with httpx.stream("POST", emulator.url + "/ticks") as response:
        assert next(response.iter_raw()) == b"tick 0;"
    emulator.settle()
    outcome = emulator.outcomes[-1]
    # AWS: a streamed response is not interrupted when the Function URL's client disconnects. The
    # runtime's stream stays open, takes every byte, and is accepted; the app never hears of it.
    assert outcome.client_gone and outcome.trailers == {}
    assert outcome.body == b"".join(b"tick %d;" % n for n in range(10)) + b"end"
    assert app.seen["/ticks"] == "nothing"


def test_a_client_gone_before_the_response_starts_is_not_heard_either(toy: tuple[LambdaEmulator, ToyApp]) -> None:
    emulator, app = toy
    with socket.create_connection(("127.0.0.1", emulator.front_port)) as client:
        client.sendall(b"POST /late-start HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    while not emulator.outcomes:
        time.sleep(0.005)  # the front has yet to read the request
    emulator.settle()
    outcome = emulator.outcomes[-1]
    assert outcome.client_gone and outcome.prelude is not None and outcome.body == b"late"
    assert app.seen["/late-start"] == "nothing"
    assert emulator.invoke(_event("/echo")).prelude is not None


def test_the_runtime_api_breaking_mid_response_is_heard_as_a_disconnect(toy: tuple[LambdaEmulator, ToyApp]) -> None:
    emulator, app = toy
    outcome = emulator.invoke(_event("/wait-disconnect"), wait=False)
    deadline = time.monotonic() + 10
    while not outcome.chunks and time.monotonic() < deadline:
        time.sleep(0.005)
    emulator.break_runtime(outcome)
    emulator.settle()
    assert app.seen["/wait-disconnect"] == "http.disconnect"
    # Through the Function URL, the client sees its response cut short.
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", emulator.url + "/wait-disconnect") as response:
            body = response.iter_raw()
            assert next(body) == b"tick"
            emulator.break_runtime(emulator.outcomes[-1])
            for _ in body:
                pass
    emulator.settle()


def test_no_answer_after_the_whole_body_is_a_broken_runtime_api(toy: tuple[LambdaEmulator, ToyApp]) -> None:
    emulator, app = toy
    outcome = emulator.invoke(_event("/unacknowledged"), acknowledge=False)
    assert outcome.body == b"all of it"
    emulator.settle()
    # Whether the end reached the client is unknown: the relay is told the receiving end is gone.
    assert app.seen["/unacknowledged"] == "ClientGone"
    assert emulator.invoke(_event("/unacknowledged")).body == b"all of it"
    emulator.settle()
    assert app.seen["/unacknowledged"] == "accepted"


def test_the_deadline_counts_from_when_the_runtime_receives_the_event() -> None:
    app = ToyApp()
    with LambdaEmulator() as emulator:
        outcome = emulator.invoke(_event("/echo"), timeout_s=5.0, wait=False)
        time.sleep(0.5)  # queued, no runtime yet: Lambda has not invoked anything
        handed_out = time.time()
        with InProcessRuntime(emulator, app):
            assert outcome.done.wait(10)
    assert handed_out + 5.0 <= outcome.deadline_ms / 1000 + 0.001 <= time.time() + 5.0


def test_past_6_mb_a_stream_reaches_its_client_at_2_mb_per_second(toy: tuple[LambdaEmulator, ToyApp]) -> None:
    emulator, _ = toy
    received = 0
    with httpx.stream("POST", emulator.url + "/seven-mb") as response:
        for piece in response.iter_raw():
            received += len(piece)
            if received <= 6 * MIB:
                paced_from = time.monotonic()
    # The last MB cannot take less than half a second: the documented cap, a lower bound only.
    assert received == 7 * MIB and time.monotonic() - paced_from >= 0.5 - 0.05


def test_the_flush_gets_the_time_left_before_the_deadline(toy: tuple[LambdaEmulator, ToyApp]) -> None:
    emulator, app = toy
    started = time.time()
    emulator.invoke(_event("/echo"), timeout_s=5.0)
    emulator.settle()
    left = 5.0 - (time.time() - started)
    assert left - 0.31 <= app.sink.flushes[-1] <= 5.0 - 0.3  # all of it but the safety margin
    assert app.sink.sent == ["/echo"]


def test_records_a_flush_had_no_time_for_are_sent_when_the_runtime_stops() -> None:
    app = ToyApp()
    with LambdaEmulator() as emulator:
        runtime = InProcessRuntime(emulator, app).__enter__()
        try:
            # A deadline this close leaves the app no time at all: the client still gets an answer.
            outcome = emulator.invoke(_event("/echo"), timeout_s=0.2)
            assert outcome.prelude is not None and outcome.prelude["statusCode"] == 504
            assert _json(outcome)["error"]["type"] == "function_timeout"
            emulator.settle()
            assert app.sink.flushes == [0.0] and app.sink.queued == ["/echo"] and app.sink.sent == []
        finally:
            runtime.stop()
    assert app.sink.closed and app.sink.sent == ["/echo"] and app.sink.queued == []
    assert not app.running  # the app was shut down too


def test_a_runtime_that_stops_leaves_its_events_to_the_next_one() -> None:
    first, second = ToyApp(), ToyApp()
    with LambdaEmulator() as emulator:
        with InProcessRuntime(emulator, first):
            emulator.wait_polled(1)
        with InProcessRuntime(emulator, second):
            emulator.wait_polled(2)
            outcome = emulator.invoke(_event("/echo"))
            assert outcome.prelude is not None and outcome.prelude["statusCode"] == 200
    assert first.sink.sent == [] and second.sink.sent == ["/echo"]
