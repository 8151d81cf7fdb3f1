"""A call is complete once the provider's terminal event has reached the client, whatever becomes
of either connection afterwards; a client that leaves before it is `client_disconnect`.

The OpenAI SDK stops reading at `data: [DONE]` and closes the connection without reading the end
of the HTTP body; over a real network the end often arrives in a read of its own. The stand-in's
`end-delay-ms` fault sends it late, and the real SDKs (and agent frameworks built on them) leave in
between. Clients here that stop at the terminal event of a format whose SDK reads on (Anthropic,
the Responses API, Gemini) stop there the way code returning at the final event does.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from aiohttp import web
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy, module_proxy
from tests.support.upstream import AiohttpUpstream

MESSAGES = [{"role": "user", "content": "Say hello"}]
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}
END_DELAY_MS = 300  # the end of the body, this long after the terminal event
CALLS_PER_CLIENT = 10  # x 6 clients: 60 calls, 6 at a time

proxy = module_proxy("relaylog-complete")


class Clients:
    """One client of each kind for all the calls (building an SDK client costs milliseconds of CPU
    that would hold up the others' reading); each call passes its own headers."""

    def __init__(self, base: str) -> None:
        self.openai = openai.AsyncOpenAI(base_url=base + "/v1", api_key="sk-test", max_retries=0)
        self.anthropic = anthropic.AsyncAnthropic(base_url=base + "/anthropic", api_key="sk-ant-test", max_retries=0)
        self.http = httpx.AsyncClient(base_url=base + "/gemini", timeout=10)

    async def close(self) -> None:
        await self.openai.close()
        await self.anthropic.close()
        await self.http.aclose()


# -- clients: each makes one call and returns the last event it read -------------------------


async def chat(c: Clients, headers: dict[str, str], *, include_usage: bool, before_end: bool = False) -> str:
    """The OpenAI SDK as frameworks use it: iterate the chunks (it stops at [DONE] and closes).
    `before_end`: leave after the last chunk instead, one event before [DONE]."""
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = await c.openai.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=2, stream=True, extra_headers=headers, **extra
    )
    async for chunk in stream:
        last = "usage" if chunk.usage is not None else (chunk.choices[0].finish_reason or "delta")
        if before_end and last == ("usage" if include_usage else "length"):
            await stream.close()
            return last
    return "[DONE]"


async def responses(c: Clients, headers: dict[str, str], *, before_end: bool = False) -> str:
    stream = await c.openai.responses.create(
        model="gpt-4o-mini", input="Say hello", max_output_tokens=2, stream=True, extra_headers=headers
    )
    async for event in stream:
        if event.type == ("response.output_item.done" if before_end else "response.incomplete"):
            await stream.close()
            return event.type
    return "end of body"


async def messages(c: Clients, headers: dict[str, str], *, before_end: bool = False) -> str:
    async with c.anthropic.messages.stream(
        model="claude-haiku-4-5", max_tokens=2, messages=MESSAGES, extra_headers=headers
    ) as stream:
        async for event in stream:
            if event.type == ("message_delta" if before_end else "message_stop"):
                return event.type
    return "end of body"


async def gemini(c: Clients, headers: dict[str, str], *, before_end: bool = False) -> str:
    """Plain HTTP, stopping at the chunk with the finish reason, or (`before_end`) at the one
    before it: the stand-in's answer comes in three chunks."""
    path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    chunks = 0
    async with c.http.stream("POST", path, json=GEMINI, headers=headers) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            chunks += 1
            if orjson.loads(line[6:])["candidates"][0].get("finishReason"):
                return "finishReason"
            if before_end and chunks == 2:
                return "chunk"
    return "end of body"


async def gemini_array(c: Clients, headers: dict[str, str]) -> str:
    """streamGenerateContent without alt=sse, read until the JSON array is whole."""
    body = b""
    async with c.http.stream(
        "POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent", json=GEMINI, headers=headers
    ) as response:
        async for chunk in response.aiter_bytes():
            body += chunk
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError:
                continue
            return "]"
    return "end of body"


Call = Callable[[Clients, dict[str, str]], Awaitable[str]]
CLIENTS: dict[str, Call] = {
    "chat": lambda c, h: chat(c, h, include_usage=False),
    "chat+include_usage": lambda c, h: chat(c, h, include_usage=True),
    "responses": responses,
    "anthropic": messages,
    "gemini": gemini,
    "gemini-array": gemini_array,
}


def run_calls(base: str, calls: list[tuple[Call, dict[str, str]]], at_once: int) -> list[str]:
    """The calls, `at_once` at a time; what each client read last. The clients share this test's
    one core with relaylog and the stand-in: too many at once and they fall so far behind that the
    end of a body is in before a client gets round to hanging up."""

    async def run() -> list[str]:
        clients = Clients(base)
        ends: list[str] = []
        try:
            for i in range(0, len(calls), at_once):
                batch = calls[i : i + at_once]
                ends += await asyncio.gather(*(call(clients, headers) for call, headers in batch))
        finally:
            await clients.close()
        return ends

    return asyncio.run(run())


def _records(proxy: RunningProxy, ids: list[str]) -> dict[str, dict[str, Any]]:
    return {request_id: proxy.record(request_id) for request_id in ids}


# -- the tests ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_clients_that_hang_up_at_the_terminal_event_are_successes(proxy: RunningProxy, standin: StandIn) -> None:
    """60 calls, six at a time, every format, the end of each body 300 ms after its terminal event: each
    client leaves in between (the OpenAI SDK by itself), and every record is a success with usage."""
    calls: list[tuple[Call, dict[str, str]]] = []
    ids: dict[str, str] = {}
    for _ in range(CALLS_PER_CLIENT):
        for name, client in CLIENTS.items():
            request_id = str(uuid.uuid4())
            ids[request_id] = name
            calls.append(
                (client, {"x-standin-fault": f"end-delay-ms={END_DELAY_MS}", "Helicone-Request-Id": request_id})
            )
    ends = run_calls(proxy.url, calls, at_once=len(CLIENTS))
    # Each client stopped at its terminal event, before the end of the body.
    assert Counter(zip(ids.values(), ends, strict=True)) == {
        ("chat", "[DONE]"): CALLS_PER_CLIENT,
        ("chat+include_usage", "[DONE]"): CALLS_PER_CLIENT,
        ("responses", "response.incomplete"): CALLS_PER_CLIENT,
        ("anthropic", "message_stop"): CALLS_PER_CLIENT,
        ("gemini", "finishReason"): CALLS_PER_CLIENT,
        ("gemini-array", "]"): CALLS_PER_CLIENT,
    }
    records = _records(proxy, list(ids))
    outcomes = Counter(
        (ids[i], r["status"], r["error_type"], r["usage_source"], r["parse_error"]) for i, r in records.items()
    )
    usage_source = {"chat": "provider_injected"}
    assert outcomes == {
        (name, 200, None, usage_source.get(name, "provider"), None): CALLS_PER_CLIENT for name in CLIENTS
    }
    assert all(r["input_tokens"] and r["output_tokens"] and r["cost_usd"] for r in records.values())
    # The record keeps what the client received: the stream up to and including its terminal event.
    chat_body = next(r["response_body"] for i, r in records.items() if ids[i] == "chat")
    assert chat_body.endswith("data: [DONE]\n\n") and '"usage"' not in chat_body


def test_clients_that_leave_one_event_before_the_end_are_client_disconnects(
    proxy: RunningProxy, standin: StandIn
) -> None:
    """The same clients leaving one event before the terminal event, which the provider sends
    300 ms after the one before: each call is `client_disconnect` with what was received."""
    leaving: dict[str, Call] = {
        "chat": lambda c, h: chat(c, h, include_usage=False, before_end=True),
        "chat+include_usage": lambda c, h: chat(c, h, include_usage=True, before_end=True),
        "responses": lambda c, h: responses(c, h, before_end=True),
        "anthropic": lambda c, h: messages(c, h, before_end=True),
        "gemini": lambda c, h: gemini(c, h, before_end=True),
    }
    ids: dict[str, str] = {}
    calls: list[tuple[Call, dict[str, str]]] = []
    for name, client in leaving.items():
        request_id = str(uuid.uuid4())
        ids[request_id] = name
        calls.append((client, {"x-standin-fault": f"chunk-delay-ms={END_DELAY_MS}", "Helicone-Request-Id": request_id}))
    ends = run_calls(proxy.url, calls, at_once=len(calls))
    assert ends == ["length", "usage", "response.output_item.done", "message_delta", "chunk"]
    for request_id, record in _records(proxy, list(ids)).items():
        assert (record["status"], record["error_type"]) == (200, "client_disconnect"), ids[request_id]
        assert record["response_bytes"] > 0


CHUNK = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'
LATE_USAGE = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":1,"total_tokens":8}}\n\n'


def test_usage_the_provider_sends_after_its_terminal_event_is_still_read(
    make_proxy: Callable[..., RunningProxy],
) -> None:
    """A provider that sends its usage after [DONE] (some OpenAI-compatible servers trail data):
    the SDK has left at [DONE], relaylog reads on and records the usage, never sending it."""

    async def chat_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(CHUNK + b"data: [DONE]\n\n")
        await asyncio.sleep(0.3)
        await response.write(LATE_USAGE)
        return response

    with AiohttpUpstream(chat_stream) as upstream:
        proxy = make_proxy(upstream)
        request_id = str(uuid.uuid4())
        client = openai.OpenAI(base_url=proxy.url + "/mistral/v1", api_key="sk-test", max_retries=0)
        chunks = list(
            client.chat.completions.create(
                model="mistral-small-latest",
                messages=MESSAGES,
                stream=True,
                extra_headers={"Helicone-Request-Id": request_id},
            )
        )
        record = proxy.record(request_id)
    assert [c.choices[0].delta.content for c in chunks] == ["hi"]
    assert (record["status"], record["error_type"], record["parse_error"]) == (200, None, None)
    assert (record["input_tokens"], record["output_tokens"], record["usage_source"]) == (7, 1, "provider")
    assert record["response_body"] == (CHUNK + b"data: [DONE]\n\n").decode()


def test_a_provider_that_never_ends_after_its_terminal_event_is_let_go(
    make_proxy: Callable[..., RunningProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider that keeps the stream open after [DONE] (comments, forever): once the client has
    left, relaylog reads on only so long, then writes the record as the success it was."""
    monkeypatch.setattr("relaylog.relay.attempts._READ_ON_S", 0.3)
    stopped = threading.Event()

    async def chat_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(CHUNK + b"data: [DONE]\n\n")
        try:
            for _ in range(200):  # 10 s of keep-alive comments, each inside the read timeout
                await asyncio.sleep(0.05)
                await response.write(b": keep-alive\n\n")
        except (ConnectionError, asyncio.CancelledError):
            stopped.set()
            raise
        return response

    with AiohttpUpstream(chat_stream) as upstream:
        proxy = make_proxy(upstream)
        request_id = str(uuid.uuid4())
        client = openai.OpenAI(base_url=proxy.url + "/mistral/v1", api_key="sk-test", max_retries=0)
        list(
            client.chat.completions.create(
                model="mistral-small-latest",
                messages=MESSAGES,
                stream=True,
                extra_headers={"Helicone-Request-Id": request_id},
            )
        )
        record = proxy.record(request_id, timeout=5.0)
        assert stopped.wait(5.0), "relaylog kept reading the provider"
    assert (record["status"], record["error_type"], record["parse_error"]) == (200, None, None)
    assert record["response_body"] == (CHUNK + b"data: [DONE]\n\n").decode()
