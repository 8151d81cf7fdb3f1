"""The provider stand-in, talked to directly by the real SDKs and by raw HTTP.

These tests pin the wire details the proxy tests rely on: SSE framing, usage fields, errors,
faults, determinism and request recording.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel

# conftest.py puts the repository root on sys.path, so the stand-in imports as `relaylog.standin`.
from relaylog.standin import StandIn
from relaylog.standin.app import App
from relaylog.standin.wire import AFTER_TOOL, LONG_TEXT, REFUSAL, TEXT, THINKING, Request

ROOT = Path(__file__).resolve().parents[1]
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}}},
}


@pytest.fixture
def s() -> Iterator[StandIn]:
    with StandIn() as standin:
        yield standin


@pytest.fixture
def oai(s: StandIn) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key="sk-test", max_retries=0)


@pytest.fixture
def claude(s: StandIn) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=s.url, api_key="sk-ant-test", max_retries=0)


def sse_data(raw: bytes) -> list[Any]:
    """The parsed `data:` payloads of an SSE body ([DONE] kept as the string)."""
    out: list[Any] = []
    for event in raw.decode().split("\n\n"):
        for line in event.split("\n"):
            if line.startswith("data: "):
                payload = line[6:]
                out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def sse_events(raw: bytes) -> list[tuple[str, Any]]:
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


# -- OpenAI chat completions -----------------------------------------------------------------


def test_openai_chat_non_stream(s: StandIn, oai: openai.OpenAI) -> None:
    raw = oai.chat.completions.with_raw_response.create(**CHAT)
    completion = raw.parse()
    assert completion.choices[0].message.content == TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini-2024-07-18"
    assert completion.id.startswith("chatcmpl-") and completion.created == 1767225600
    usage = completion.usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["openai-processing-ms"].isdigit()
    assert raw.headers["content-type"] == "application/json"
    assert len(s.requests) == 1
    seen = s.requests[0]
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.json()["messages"] == CHAT["messages"]
    assert seen.header("authorization") == "Bearer sk-test"
    assert ("Authorization", "Bearer sk-test") in seen.headers or ("authorization", "Bearer sk-test") in seen.headers


def test_openai_chat_stream_and_usage_modes(s: StandIn, oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(**CHAT, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert all(c.usage is None for c in chunks)
    chunks = list(oai.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens

    # The raw bytes of the two modes differ by exactly `,"usage":null` per chunk plus the usage chunk.
    with httpx.Client(base_url=s.url) as http:
        plain = http.post("/v1/chat/completions", json={**CHAT, "stream": True})
        usage = http.post(
            "/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        )
    assert plain.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert "content-encoding" not in plain.headers and plain.headers["transfer-encoding"] == "chunked"
    assert b'"usage"' not in plain.content
    assert plain.content.endswith(b"data: [DONE]\n\n") and usage.content.endswith(b"data: [DONE]\n\n")
    usage_events = usage.content.split(b"\n\n")
    plain_events = plain.content.split(b"\n\n")
    assert len(usage_events) == len(plain_events) + 1
    usage_chunk = usage_events[-3]
    assert b'"choices":[],"usage":{"prompt_tokens":' in usage_chunk
    rebuilt = b"\n\n".join(e for e in usage_events if e != usage_chunk).replace(b',"usage":null', b"")
    assert rebuilt == plain.content
    first = sse_data(plain.content)[0]
    assert list(first) == [
        "id",
        "object",
        "created",
        "model",
        "service_tier",
        "system_fingerprint",
        "choices",
        "obfuscation",
    ]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}


def test_openai_chat_async(s: StandIn) -> None:
    async def main() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=s.url + "/v1", api_key="sk-test", max_retries=0)
        completion = await client.chat.completions.create(**CHAT)
        streamed = ""
        async for chunk in await client.chat.completions.create(**CHAT, stream=True):
            streamed += chunk.choices[0].delta.content or "" if chunk.choices else ""
        await client.close()
        return completion.choices[0].message.content or "", streamed

    assert asyncio.run(main()) == (TEXT, TEXT)


def test_openai_tool_calls(oai: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL])
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}

    with oai.chat.completions.stream(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.arguments == call.function.arguments
    assert final.choices[0].message.tool_calls[0].id == call.id

    # After the tool result the model answers in text, so agent loops end.
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "22C"},
    ]
    follow = oai.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL])
    assert follow.choices[0].message.content == AFTER_TOOL


def test_openai_parallel_tools_stream_deltas(s: StandIn, oai: openai.OpenAI) -> None:
    with httpx.Client(base_url=s.url) as http:
        raw = http.post(
            "/v1/chat/completions",
            json={**CHAT, "tools": [WEATHER_TOOL, TIME_TOOL], "stream": True},
            headers={"x-standin-scenario": "parallel-tools"},
        ).content
    deltas = [c["choices"][0]["delta"] for c in sse_data(raw)[:-1]]
    assert deltas[0]["role"] == "assistant" and deltas[0]["content"] is None
    opening = deltas[0]["tool_calls"][0]
    assert set(opening) == {"index", "id", "type", "function"} and opening["function"]["arguments"] == ""
    assert deltas[1]["tool_calls"][0] == {"index": 0, "function": {"arguments": '{"'}}
    second = next(d for d in deltas if d.get("tool_calls", [{}])[0].get("index") == 1)
    assert second["tool_calls"][0]["function"]["name"] == "get_time"
    completion = oai.chat.completions.create(
        **CHAT, tools=[WEATHER_TOOL, TIME_TOOL], extra_headers={"x-standin-scenario": "parallel-tools"}
    )
    assert [c.function.name for c in completion.choices[0].message.tool_calls] == ["get_weather", "get_time"]


def test_openai_refusal_reasoning_cached(oai: openai.OpenAI) -> None:
    refusal = oai.chat.completions.create(model="standin-refusal", messages=CHAT["messages"])
    assert refusal.choices[0].message.refusal == REFUSAL and refusal.choices[0].message.content is None
    chunks = list(oai.chat.completions.create(model="standin-refusal", messages=CHAT["messages"], stream=True))
    assert "".join(c.choices[0].delta.refusal or "" for c in chunks) == REFUSAL

    reasoning = oai.chat.completions.create(model="o4-mini", messages=CHAT["messages"], reasoning_effort="high")
    assert reasoning.model == "o4-mini-2025-04-16"
    assert reasoning.usage.completion_tokens_details.reasoning_tokens == 448
    assert reasoning.usage.completion_tokens > 448

    cached = oai.chat.completions.create(**CHAT, extra_headers={"x-standin-scenario": "cached"})
    assert cached.usage.prompt_tokens_details.cached_tokens == 2048
    assert cached.usage.prompt_tokens > 2048
    assert cached.usage.total_tokens == cached.usage.prompt_tokens + cached.usage.completion_tokens


def test_openai_structured_output_and_max_tokens(oai: openai.OpenAI) -> None:
    class Person(BaseModel):
        name: str
        age: int
        tags: list[str]

    parsed = oai.chat.completions.parse(model="gpt-4o-mini", messages=CHAT["messages"], response_format=Person)
    person = parsed.choices[0].message.parsed
    assert isinstance(person, Person) and person.age == 3

    short = oai.chat.completions.create(**CHAT, max_completion_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


def test_openai_stream_error_scenario(oai: openai.OpenAI) -> None:
    got = ""
    with pytest.raises(openai.APIError, match="The server had an error"):
        for chunk in oai.chat.completions.create(model="standin-stream-error", messages=CHAT["messages"], stream=True):
            got += chunk.choices[0].delta.content or ""
    assert got and TEXT.startswith(got)
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="standin-stream-error", messages=CHAT["messages"])


def test_openai_errors(s: StandIn) -> None:
    bad = openai.OpenAI(base_url=s.url + "/v1", api_key="bad-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad.chat.completions.create(**CHAT)
    assert auth.value.code == "invalid_api_key"
    assert auth.value.response.content.startswith(b'{\n    "error": {\n        "message": "Incorrect API key')

    client = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-test", max_retries=0)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(**CHAT, extra_headers={"x-standin-fault": "status=429;retry-after=2"})
    assert limited.value.response.headers["retry-after"] == "2"
    assert limited.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(**CHAT, extra_headers={"x-standin-fault": "status=500"})
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    # The SDK retries a 503 that says retry-after-ms and then gives up with the same error.
    retrying = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-test", max_retries=1)
    s.clear()
    with pytest.raises(openai.InternalServerError):
        retrying.chat.completions.create(**CHAT, extra_headers={"x-standin-fault": "status=503,retry-after-ms=10"})
    assert len(s.requests) == 2


# -- OpenAI Responses API --------------------------------------------------------------------


def test_responses_create_and_stream(s: StandIn, oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="gpt-4o", input="Say hello")
    assert response.output_text == TEXT and response.status == "completed"
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens

    with oai.responses.stream(model="gpt-4o", input="Say hello") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == TEXT and final.id == response.id
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]

    with httpx.Client(base_url=s.url) as http:
        raw = http.post("/v1/responses", json={"model": "gpt-4o", "input": "Say hello", "stream": True}).content
    events = sse_events(raw)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(kind == data["type"] for kind, data in events)


def test_responses_tools_reasoning_cached(oai: openai.OpenAI) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"]}
    with oai.responses.stream(model="gpt-4o", input="Weather?", tools=[tool]) as stream:
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris", "unit": "celsius"}
    follow = oai.responses.create(
        model="gpt-4o",
        tools=[tool],
        input=[
            {"role": "user", "content": "Weather?"},
            {"type": "function_call_output", "call_id": call.call_id, "output": "22C"},
        ],
    )
    assert follow.output_text == AFTER_TOOL

    with oai.responses.stream(model="o4-mini", input="hi", reasoning={"effort": "low", "summary": "auto"}) as stream:
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].summary[0].text == THINKING
    assert final.usage.output_tokens_details.reasoning_tokens == 64

    cached = oai.responses.create(model="gpt-4o", input="hi", extra_headers={"x-standin-scenario": "cached"})
    assert cached.usage.input_tokens_details.cached_tokens == 2048


# -- other OpenAI endpoints -------------------------------------------------------------------


def test_embeddings_float_and_base64(s: StandIn, oai: openai.OpenAI) -> None:
    floats = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float")
    assert [len(d.embedding) for d in floats.data] == [1536, 1536]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    decoded = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])  # SDK asks for base64
    assert s.requests[-1].json()["encoding_format"] == "base64"
    assert decoded.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    small = oai.embeddings.create(model="text-embedding-3-large", input="x", dimensions=8)
    assert len(small.data[0].embedding) == 8


def test_models_audio(s: StandIn, oai: openai.OpenAI) -> None:
    assert "gpt-4o-mini" in [m.id for m in oai.models.list()]
    speech = oai.audio.speech.create(model="tts-1", voice="alloy", input="Hello there")
    audio = speech.read()
    assert audio.startswith(b"ID3") and b"\xff\xfb" in audio and len(audio) > 4096
    assert speech.response.headers["content-type"] == "audio/mpeg"
    upload = bytes(range(256)) * 64
    text = oai.audio.transcriptions.create(model="whisper-1", file=("clip.wav", upload, "audio/wav"))
    assert f"Received {len(upload)} bytes from clip.wav" in text.text
    assert (s.requests[-1].header("content-type") or "").startswith("multipart/form-data; boundary=")


# -- Anthropic --------------------------------------------------------------------------------


def test_anthropic_messages(s: StandIn, claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=256, messages=[{"role": "user", "content": "Hi"}]
    )
    message = raw.parse()
    assert message.content[0].text == TEXT and message.stop_reason == "end_turn"
    assert message.model == "claude-haiku-4-5-20251001" and message.id.startswith("msg_01")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert raw.headers["request-id"].startswith("req_011C")
    # Newer SDKs send the key as a bearer token; older ones as x-api-key.
    assert "sk-ant-test" in (s.requests[-1].header("x-api-key") or s.requests[-1].header("authorization") or "")

    with claude.messages.stream(
        model="claude-haiku-4-5", max_tokens=256, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == TEXT and final.usage.output_tokens == message.usage.output_tokens

    with httpx.Client(base_url=s.url) as http:
        body = {
            "model": "claude-haiku-4-5",
            "max_tokens": 256,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        }
        raw_stream = http.post("/v1/messages", json=body)
    assert raw_stream.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = sse_events(raw_stream.content)
    kinds = [kind for kind, _ in events]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert b'event: ping\ndata: {"type": "ping"}\n\n' in raw_stream.content
    assert events[0][1]["message"]["usage"]["output_tokens"] == 1
    assert events[-2][1]["usage"]["output_tokens"] == message.usage.output_tokens


def test_anthropic_thinking_tools_cache(claude: anthropic.Anthropic) -> None:
    tools = [
        {
            "name": "get_weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    with claude.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        tools=tools,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].thinking == THINKING and final.content[0].signature
    assert final.content[2].input == {"city": "Paris"} and final.stop_reason == "tool_use"
    follow = claude.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=1024,
        tools=tools,
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": final.content[2].id, "name": "get_weather", "input": {"city": "Paris"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": final.content[2].id, "content": "22C"}],
            },
        ],
    )
    assert follow.content[0].text == AFTER_TOOL

    cached = claude.messages.create(
        model="claude-haiku-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"x-standin-scenario": "cached"},
    )
    assert (cached.usage.cache_read_input_tokens, cached.usage.cache_creation_input_tokens) == (2048, 512)
    assert cached.usage.cache_creation.ephemeral_5m_input_tokens == 512
    refusal = claude.messages.create(
        model="standin-refusal", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    )
    assert refusal.stop_reason == "refusal"


def test_anthropic_errors(s: StandIn, claude: anthropic.Anthropic) -> None:
    bad = anthropic.Anthropic(base_url=s.url, api_key="bad-key", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as auth:
        bad.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    body = json.loads(auth.value.response.content)
    assert (
        body["type"] == "error"
        and body["error"]["type"] == "authentication_error"
        and body["request_id"].startswith("req_")
    )
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(
            model="claude-haiku-4-5",
            max_tokens=8,
            messages=[{"role": "user", "content": "Hi"}],
            extra_headers={"x-standin-fault": "status=429;retry-after=7"},
        )
    assert limited.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        claude.messages.create(
            model="claude-haiku-4-5",
            max_tokens=8,
            messages=[{"role": "user", "content": "Hi"}],
            extra_headers={"x-standin-fault": "status=529"},
        )
    assert overloaded.value.status_code == 529 and overloaded.value.body["error"]["type"] == "overloaded_error"
    missing = httpx.post(s.url + "/v1/messages", json={"model": "claude-haiku-4-5", "messages": []})
    assert missing.status_code == 400 and missing.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        with claude.messages.stream(
            model="standin-stream-error", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
        ) as stream:
            for _ in stream:
                pass


# -- Gemini -----------------------------------------------------------------------------------

GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}


def test_gemini_generate_and_stream(s: StandIn) -> None:
    with httpx.Client(base_url=s.url, headers={"x-goog-api-key": "g-test"}) as http:
        whole = http.post("/v1beta/models/gemini-2.5-flash:generateContent", json=GEMINI_BODY)
        sse = http.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", json=GEMINI_BODY)
        array = http.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent", json=GEMINI_BODY)
        plain = http.post("/v1beta/models/gemini-2.0-flash:generateContent", json=GEMINI_BODY)
        bad = http.post("/v1beta/models/gemini-2.0-flash:generateContent?key=bad-key", json=GEMINI_BODY)
    result = whole.json()
    usage = result["usageMetadata"]
    assert result["candidates"][0]["content"]["parts"][0]["text"] == TEXT
    assert result["candidates"][0]["finishReason"] == "STOP" and result["modelVersion"] == "gemini-2.5-flash"
    assert (
        usage["totalTokenCount"]
        == usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    assert "thoughtsTokenCount" not in plain.json()["usageMetadata"]

    assert sse.headers["content-type"] == "text/event-stream"
    assert sse.content.endswith(b"\r\n\r\n") and sse.content.startswith(
        b'data: {"candidates": [{"content": {"parts": [{"text": '
    )
    chunks = [json.loads(e[6:]) for e in sse.content.decode().split("\r\n\r\n") if e]
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == TEXT
    assert chunks[-1]["usageMetadata"] == usage and {c["responseId"] for c in chunks} == {result["responseId"]}

    assert array.content.startswith(b"[{\n") and b"\n,\r\n{\n" in array.content and array.content.endswith(b"\n]")
    assert json.loads(array.content) == chunks

    assert bad.status_code == 400 and bad.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"


def test_gemini_tools_cached_errors(s: StandIn) -> None:
    tools = [
        {
            "functionDeclarations": [
                {"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}
            ]
        }
    ]
    with httpx.Client(base_url=s.url) as http:
        called = http.post(
            "/v1beta/models/gemini-2.0-flash:generateContent", json={**GEMINI_BODY, "tools": tools}
        ).json()
        cached = http.post(
            "/v1beta/models/gemini-2.0-flash:generateContent",
            json=GEMINI_BODY,
            headers={"x-standin-scenario": "cached"},
        ).json()
        limited = http.post(
            "/v1beta/models/gemini-2.0-flash:generateContent",
            json=GEMINI_BODY,
            headers={"x-standin-fault": "status=429"},
        )
        busy = http.post(
            "/v1beta/models/gemini-2.0-flash:generateContent",
            json=GEMINI_BODY,
            headers={"x-standin-fault": "status=503"},
        )
    assert called["candidates"][0]["content"]["parts"][0]["functionCall"] == {
        "name": "get_weather",
        "args": {"city": "Paris"},
    }
    assert cached["usageMetadata"]["cachedContentTokenCount"] == 2048
    assert limited.status_code == 429 and limited.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert busy.json()["error"]["status"] == "UNAVAILABLE"


# -- faults -----------------------------------------------------------------------------------


def test_fault_delays(s: StandIn) -> None:
    with httpx.Client(base_url=s.url) as http:
        started = time.monotonic()
        http.post("/v1/chat/completions", json=CHAT, headers={"x-standin-fault": "delay-ms=300"})
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        with http.stream(
            "POST",
            "/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers={"x-standin-fault": "chunk-delay-ms=20"},
        ) as response:
            arrivals = [time.monotonic() for _ in response.iter_raw()]
        assert time.monotonic() - started >= 0.02 * 15  # 17 events: 16 gaps
        assert len(arrivals) >= 5  # the events really arrived one by one


def test_fault_end_delay_holds_back_the_end_of_the_body(s: StandIn) -> None:
    streamed = {**CHAT, "stream": True}
    fault = {"x-standin-fault": "end-delay-ms=300"}
    with httpx.Client(base_url=s.url) as http:
        whole = http.post("/v1/chat/completions", json=streamed).content
        with http.stream("POST", "/v1/chat/completions", json=streamed, headers=fault) as response:
            got = b""
            for piece in response.iter_raw():
                got += piece
                if got.endswith(b"data: [DONE]\n\n"):
                    done_at = time.monotonic()
            ended_at = time.monotonic()
        assert got == whole and ended_at - done_at >= 0.25  # every event, then the end of the body late
        plain = http.post("/v1/chat/completions", json=CHAT, headers={"accept-encoding": "identity"}).content
        with http.stream(
            "POST", "/v1/chat/completions", json=CHAT, headers={"accept-encoding": "identity", **fault}
        ) as response:
            pieces = [(time.monotonic(), piece) for piece in response.iter_raw()]
        assert b"".join(piece for _, piece in pieces) == plain
        assert pieces[-1][1] == plain[-1:] and pieces[-1][0] - pieces[0][0] >= 0.25  # the last byte, late


def test_fault_drop_reset_stall_truncate(s: StandIn) -> None:
    streamed = {**CHAT, "stream": True}
    with httpx.Client(base_url=s.url, timeout=httpx.Timeout(5, read=0.5)) as http:
        got: list[bytes] = []
        with pytest.raises(httpx.RemoteProtocolError):
            with http.stream(
                "POST", "/v1/chat/completions", json=streamed, headers={"x-standin-fault": "drop-after=3"}
            ) as response:
                for piece in response.iter_raw():
                    got.append(piece)
        assert b"".join(got).count(b"data: ") == 3
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/v1/chat/completions", json=CHAT, headers={"x-standin-fault": "drop-after=10"})
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            http.post("/v1/chat/completions", json=CHAT, headers={"x-standin-fault": "reset"})
        got = []
        with pytest.raises(httpx.ReadTimeout):
            with http.stream(
                "POST", "/v1/chat/completions", json=streamed, headers={"x-standin-fault": "stall-after=2"}
            ) as response:
                for piece in response.iter_raw():
                    got.append(piece)
        assert b"".join(got).count(b"data: ") == 2
        truncated = http.post("/v1/chat/completions", json=streamed, headers={"x-standin-fault": "truncate"})
        events = sse_data(truncated.content)
        assert truncated.status_code == 200 and "[DONE]" not in events
        assert all(e["choices"][0]["finish_reason"] is None for e in events)
        assert (
            len(
                sse_data(
                    http.post("/v1/chat/completions", json=streamed, headers={"x-standin-fault": "truncate=2"}).content
                )
            )
            == 2
        )
        anth = {
            "model": "claude-haiku-4-5",
            "max_tokens": 64,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        }
        kinds = [
            k
            for k, _ in sse_events(
                http.post("/v1/messages", json=anth, headers={"x-standin-fault": "truncate"}).content
            )
        ]
        assert kinds[-1] == "content_block_stop"
        typo = http.post("/v1/chat/completions", json=CHAT, headers={"x-standin-fault": "stauts=500"})
        assert typo.status_code == 400 and "stauts" in typo.json()["standin_error"]
        # The connection pool still works after all of that.
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_sdk_sees_faults(s: StandIn, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(**CHAT, extra_headers={"x-standin-fault": "reset"})
    with pytest.raises(openai.APIConnectionError):
        for _ in oai.chat.completions.create(**CHAT, stream=True, extra_headers={"x-standin-fault": "drop-after=4"}):
            pass
    s.fault = "status=500"  # a default for calls without the header
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(**CHAT)
    s.fault = None
    assert oai.chat.completions.create(**CHAT).choices[0].message.content == TEXT


def test_fault_times_fails_the_first_n_then_answers(s: StandIn) -> None:
    with httpx.Client(base_url=s.url) as http:
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # now in the reply cache
        spec = f"status=503;times=2;id={uuid.uuid4()}"
        statuses = [
            http.post("/v1/chat/completions", json=CHAT, headers={"x-standin-fault": spec}).status_code
            for _ in range(4)
        ]
        assert statuses == [503, 503, 200, 200]
        answered = http.post("/v1/chat/completions", json=CHAT, headers={"x-standin-fault": spec})
        assert answered.json()["choices"][0]["message"]["content"] == TEXT
        # Another id is another count; so is the same fault written differently (the exact value counts).
        other = f"status=503;times=2;id={uuid.uuid4()}"
        assert http.post("/v1/chat/completions", json=CHAT, headers={"x-standin-fault": other}).status_code == 503
        assert (
            http.post(
                "/v1/chat/completions", json=CHAT, headers={"x-standin-fault": spec.replace(";", ",")}
            ).status_code
            == 503
        )
        limited = f"status=429;retry-after=1;times=1;id={uuid.uuid4()}"
        first = http.post("/v1/chat/completions", json=CHAT, headers={"x-standin-fault": limited})
        assert first.status_code == 429 and first.headers["retry-after"] == "1"
        second = http.post("/v1/chat/completions", json=CHAT, headers={"x-standin-fault": limited})
        assert second.status_code == 200 and "retry-after" not in second.headers
        never = http.post("/v1/chat/completions", json=CHAT, headers={"x-standin-fault": "status=500;times=0"})
        assert never.status_code == 200
        for bad in ("status=500;times=-1", "status=500;times=two", "status=500;id="):
            assert http.post("/v1/chat/completions", json=CHAT, headers={"x-standin-fault": bad}).status_code == 400


def test_fault_times_shapes_streams_and_other_faults_too(s: StandIn) -> None:
    streamed = {**CHAT, "stream": True}
    spec = f"truncate=2;times=1;id={uuid.uuid4()}"
    with httpx.Client(base_url=s.url) as http:
        assert (
            len(sse_data(http.post("/v1/chat/completions", json=streamed, headers={"x-standin-fault": spec}).content))
            == 2
        )
        assert (
            sse_data(http.post("/v1/chat/completions", json=streamed, headers={"x-standin-fault": spec}).content)[-1]
            == "[DONE]"
        )


def test_sdk_retries_through_a_fault_with_times(s: StandIn) -> None:
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-test", max_retries=2)
    s.clear()
    spec = f"status=503;retry-after-ms=1;times=2;id={uuid.uuid4()}"
    completion = client.chat.completions.create(**CHAT, extra_headers={"x-standin-fault": spec})
    assert completion.choices[0].message.content == TEXT
    assert len(s.requests) == 3


def test_fault_times_counts_exactly_under_concurrency() -> None:
    app = App(gzip=False)
    spec = f"status=429;times=25;id={uuid.uuid4()}"
    req = Request(
        "POST",
        "/v1/chat/completions",
        [("x-standin-fault", spec), ("content-type", "application/json")],
        json.dumps(CHAT).encode(),
    )

    def status() -> int:
        return app.handle(Request(req.method, req.path, req.headers, req.body))[0].status

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: status(), range(200)))
    assert statuses.count(429) == 25 and statuses.count(200) == 175


# -- transport details ------------------------------------------------------------------------


def test_determinism_and_gzip(s: StandIn) -> None:
    with httpx.Client(base_url=s.url) as http:
        first = http.post("/v1/chat/completions", json=CHAT, headers={"accept-encoding": "gzip"})
        second = http.post("/v1/chat/completions", json=CHAT, headers={"accept-encoding": "gzip"})
        identity = http.post("/v1/chat/completions", json=CHAT, headers={"accept-encoding": "identity"})
        streamed = http.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers={"accept-encoding": "gzip"})
        streamed_usage = http.post(
            "/v1/chat/completions", json={**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        )
        other = http.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "Other"}]})
    assert first.headers["content-encoding"] == "gzip" and "content-encoding" not in identity.headers
    assert first.content == second.content == identity.content
    assert first.headers["x-request-id"] == second.headers["x-request-id"]
    assert gzip.decompress(http_raw_gzip(s)) == identity.content
    assert "content-encoding" not in streamed.headers
    # A proxy that asks for usage must not change the ids the client would see.
    assert sse_data(streamed.content)[0]["id"] == sse_data(streamed_usage.content)[0]["id"] == first.json()["id"]
    assert other.json()["id"] != first.json()["id"]
    s.gzip = False
    with httpx.Client(base_url=s.url) as http:
        assert (
            "content-encoding"
            not in http.post("/v1/chat/completions", json=CHAT, headers={"accept-encoding": "gzip"}).headers
        )


def http_raw_gzip(s: StandIn) -> bytes:
    """The compressed bytes as sent (httpx would decompress them)."""
    with httpx.Client(base_url=s.url) as http:
        with http.stream("POST", "/v1/chat/completions", json=CHAT, headers={"accept-encoding": "gzip"}) as response:
            return b"".join(response.iter_raw())


def test_recording_off_and_keep_alive_pipelining() -> None:
    with StandIn(record=False) as quiet:
        request = (
            b"POST /v1/chat/completions?api-version=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(json.dumps(CHAT)), json.dumps(CHAT).encode())
        )
        with socket.create_connection(("127.0.0.1", quiet.port)) as sock:
            sock.sendall(request + request.replace(b"Say hello", b"Say hellO"))
            data = b""
            sock.settimeout(5)
            while data.count(b"HTTP/1.1 200 OK") < 2 or not data.rstrip().endswith(b"}"):
                data += sock.recv(65536)
        assert data.count(b"HTTP/1.1 200 OK") == 2
        assert quiet.requests == []


def test_request_recording(s: StandIn) -> None:
    with httpx.Client(base_url=s.url) as http:
        http.post(
            "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
            content=b'{"messages":[{"role":"user","content":"x"}]}',
            headers={"X-Custom": "A", "x-custom": "B"},
        )
    seen = s.requests[0]
    assert seen.path == "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21"
    assert seen.route == "/openai/deployments/my-gpt/chat/completions" and seen.query == {"api-version": "2024-10-21"}
    assert ("X-Custom", "A") in seen.headers and ("x-custom", "B") in seen.headers
    assert seen.body == b'{"messages":[{"role":"user","content":"x"}]}'
    s.clear()
    assert s.requests == []


def test_long_scenario_and_unknown_route(s: StandIn) -> None:
    with httpx.Client(base_url=s.url) as http:
        long = http.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers={"x-standin-scenario": "long"})
        missing = http.post("/v1/nothing", json={})
        unknown = http.post("/v1/chat/completions", json=CHAT, headers={"x-standin-scenario": "nope"})
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in sse_data(long.content)[:-1]) == LONG_TEXT
    assert missing.status_code == 404 and "Invalid URL (POST /v1/nothing)" in missing.text
    assert unknown.status_code == 400 and "nope" in unknown.json()["standin_error"]


def test_langchain_openai(s: StandIn) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(model="gpt-4o-mini", base_url=s.url + "/v1", api_key="sk-test", max_retries=0)
    assert chat.invoke("Say hello").content == TEXT
    assert "".join(str(chunk.content) for chunk in chat.stream("Say hello")) == TEXT
    message = chat.bind_tools([WEATHER_TOOL]).invoke("Weather?")
    assert message.tool_calls[0]["name"] == "get_weather" and message.tool_calls[0]["args"]["city"] == "Paris"
    assert (
        message.usage_metadata["total_tokens"]
        == message.usage_metadata["input_tokens"] + message.usage_metadata["output_tokens"]
    )


def test_runs_as_subprocess() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "relaylog.standin", "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("standin listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert httpx.post(url + "/v1/chat/completions", json=CHAT).json()["choices"][0]["message"]["content"] == TEXT
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
