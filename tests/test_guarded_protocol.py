"""`relaylog serve`'s protocol (http_guard.GuardedHttpToolsProtocol) beyond its head limits
(tests/test_hostile.py): it tells the relay that the client left through
`scope["extensions"]["relaylog.disconnect"]` instead of a task per call awaiting `receive()`, with
the same outcomes as that task (tests/test_relay.py, test_complete.py run the relay under plain
uvicorn, which has no such extension); and it writes a response's head with its body."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import uvicorn
from relaylog.http_guard import GuardedHttpToolsProtocol, HeadWithBody
from relaylog.relay import client as relay_client
from relaylog.relay.client import DisconnectWatcher
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


class ServedProxy(RunningProxy):
    """RunningProxy served with the protocol `relaylog serve` uses."""

    def __init__(self, data_dir: Path, upstream_url: str, **settings: Any) -> None:
        super().__init__(data_dir, upstream_url, **settings)
        config = uvicorn.Config(
            self.app, loop="asyncio", http=GuardedHttpToolsProtocol, lifespan="on", access_log=False,
            log_level="warning",
        )  # fmt: skip
        self._server = uvicorn.Server(config)


@pytest.fixture(scope="module")
def served(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProxy]:
    standin.fault = None
    with ServedProxy(tmp_path_factory.mktemp("served"), standin.url) as proxy:
        yield proxy


@pytest.fixture
def no_receive_task(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[DisconnectWatcher]]:
    """Fails the test if a watcher falls back to a task awaiting `receive()`; lists the watchers."""
    made: list[DisconnectWatcher] = []

    class Watcher(DisconnectWatcher):
        __slots__ = ()

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            made.append(self)

        async def _wait(self, receive: Any) -> None:
            raise AssertionError("a task awaited receive() although the server tells of disconnects")

    monkeypatch.setattr(relay_client, "DisconnectWatcher", Watcher)
    monkeypatch.setattr("relaylog.relay.attempts.DisconnectWatcher", Watcher)
    yield made
    assert made, "no watcher was made: the test did not exercise one"


def test_the_server_offers_the_extension(served: ServedProxy) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope.get("extensions", {}).get("relaylog.disconnect"))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    proxy_app = served._server.config.loaded_app
    served._server.config.loaded_app = app
    try:
        assert httpx.get(served.url + "/anything").status_code == 204
    finally:
        served._server.config.loaded_app = proxy_app
    assert seen and callable(seen[0]["listen"])


def test_a_client_leaving_mid_stream_stops_the_relay(
    served: ServedProxy, no_receive_task: list[DisconnectWatcher]
) -> None:
    body = {**CHAT, "stream": True, "model": "standin-long"}
    with httpx.stream(
        "POST", served.url + "/v1/chat/completions", json=body, headers={"x-standin-fault": "chunk-delay-ms=20"}
    ) as response:
        request_id = response.headers["helicone-id"]
        for _ in response.iter_raw():
            break
    record = served.record(request_id)
    assert record["status"] == 200 and record["error_type"] == "client_disconnect"
    assert record["latency_ms"] < 3000  # about 500 events 20 ms apart would take 10 s
    assert no_receive_task[0].gone


def test_a_client_leaving_before_the_answer_is_status_zero(
    served: ServedProxy, no_receive_task: list[DisconnectWatcher]
) -> None:
    before = len(served.records())
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            served.url + "/v1/chat/completions", json=CHAT, timeout=0.3, headers={"x-standin-fault": "delay-ms=1500"}
        )
    record = served.wait_records(before + 1)[-1]
    assert record["status"] == 0 and record["error_type"] == "client_disconnect"
    assert record["latency_ms"] < 1400


def test_a_client_hanging_up_at_done_is_a_success(
    served: ServedProxy, no_receive_task: list[DisconnectWatcher]
) -> None:
    """The OpenAI SDK leaves at [DONE]; the end of the body comes 300 ms later. The relay reads on
    for the usage it asked for: a complete call with usage."""

    async def call() -> str:
        async with openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="sk-test", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=CHAT["messages"], max_tokens=2, stream=True,  # type: ignore[arg-type]
                extra_headers={"x-standin-fault": "end-delay-ms=300"},
            )  # fmt: skip
            request_id = stream.response.headers["helicone-id"]
            async for _ in stream:
                pass
            return request_id

    record = served.record(asyncio.run(call()))
    assert (record["status"], record["error_type"]) == (200, None)
    assert record["usage_source"] == "provider_injected" and record["output_tokens"]
    assert not no_receive_task[0].gone


# -- the head written with its body --------------------------------------------------------------


class Wire(asyncio.Transport):
    """A transport that keeps each write (one system call each on a real socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _on_loop(test: Any) -> None:
    async def run() -> None:
        wire = Wire()
        await test(wire, HeadWithBody(wire, asyncio.get_running_loop()))

    asyncio.run(run())


def test_a_head_and_the_body_written_in_the_same_step_go_out_in_one_write() -> None:
    async def test(wire: Wire, transport: HeadWithBody) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"body")
        assert wire.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        await asyncio.sleep(0)
        transport.write(b"more")  # nothing after the head is held
        assert wire.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]

    _on_loop(test)


def test_a_head_whose_body_comes_later_goes_out_on_the_next_turn() -> None:
    async def test(wire: Wire, transport: HeadWithBody) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert wire.writes == []
        await asyncio.sleep(0)
        assert wire.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
        transport.write(b"data: 1\n\n")
        assert wire.writes == [b"HTTP/1.1 200 OK\r\n\r\n", b"data: 1\n\n"]

    _on_loop(test)


def test_closing_writes_the_head_first_and_a_gone_client_gets_nothing() -> None:
    async def test(wire: Wire, transport: HeadWithBody) -> None:
        transport.write(b"head")
        transport.close()
        assert wire.writes == [b"head"] and wire.closed and transport.is_closing()

    _on_loop(test)

    async def gone(wire: Wire, transport: HeadWithBody) -> None:
        transport.write(b"head")
        wire.close()  # the client left before the loop's next turn
        await asyncio.sleep(0)
        assert wire.writes == []

    _on_loop(gone)


def test_answers_and_streams_arrive_as_the_provider_sent_them(served: ServedProxy, standin: StandIn) -> None:
    body = orjson.dumps(CHAT)
    headers = {"content-type": "application/json", "accept-encoding": "gzip"}
    direct = httpx.post(standin.url + "/v1/chat/completions", content=body, headers=headers)
    relayed = httpx.post(served.url + "/v1/chat/completions", content=body, headers=headers)
    assert relayed.status_code == direct.status_code == 200
    assert relayed.headers["content-encoding"] == "gzip"
    assert orjson.loads(relayed.content)["choices"] == orjson.loads(direct.content)["choices"]
    stream = orjson.dumps({**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    direct_stream = httpx.post(standin.url + "/v1/chat/completions", content=stream, headers=headers)
    relayed_stream = httpx.post(served.url + "/v1/chat/completions", content=stream, headers=headers)
    assert relayed_stream.headers["content-type"].startswith("text/event-stream")
    assert relayed_stream.content.count(b"data: ") == direct_stream.content.count(b"data: ")
    assert relayed_stream.content.endswith(b"data: [DONE]\n\n")
