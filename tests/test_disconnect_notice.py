"""The relay hears a client leave through `relaylog serve`'s protocol (relaylog.http_server), by
`scope["extensions"]["relaylog.disconnect"]`, instead of a task per call awaiting `receive()`,
with the same outcomes as that task (which other servers, the Lambda runtime and the cache replay
still use). Every in-process test proxy serves with that protocol; these tests fail if a watcher
falls back to the task."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from relaylog.relay import client as relay_client
from relaylog.relay.client import DisconnectWatcher
from relaylog.runtime.buffered import BufferedResponse
from relaylog.runtime.invoke import invoke
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


@pytest.fixture(scope="module")
def served(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    standin.fault = None
    with RunningProxy(tmp_path_factory.mktemp("served"), standin.url) as proxy:
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


def test_the_server_offers_the_extension(served: RunningProxy) -> None:
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


def test_a_client_leaving_before_the_answer_is_status_zero(
    served: RunningProxy, no_receive_task: list[DisconnectWatcher]
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
    served: RunningProxy, no_receive_task: list[DisconnectWatcher]
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


def test_answers_and_streams_arrive_as_the_provider_sent_them(served: RunningProxy, standin: StandIn) -> None:
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


def test_the_lambda_runtime_offers_the_extension_too() -> None:
    """relaylog's Lambda runtime: the stream's `closed` (the Runtime API breaking) calls back."""
    heard: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["extensions"]["relaylog.disconnect"]["listen"](lambda: heard.append("gone"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        stream.closed.set()
        await asyncio.sleep(0)

    async def run() -> None:
        await invoke(app, {"type": "http", "path": "/"}, b"", stream)

    stream = BufferedResponse()
    asyncio.run(run())
    assert heard == ["gone"]
