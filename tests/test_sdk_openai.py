"""The real `openai` Python SDK (sync and async clients) sees exactly the same results through
relaylog as directly against the provider stand-in, and every relayed call leaves a correct record.

Each test makes the same SDK call twice, once with `base_url=standin.url + "/v1"` and once with
`base_url=proxy.url + "/v1"`, compares the parsed results as whole objects (`model_dump()`), and
checks the record field by field against the usage the direct call reported. The record id is
chosen by the test through `Helicone-Request-Id`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionChunk
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy, module_proxy
from tests.support.sdk import MODES, OPENAI, RELAY_STREAM_HEADERS, Call, chat_usage, headers_without
from tests.support.sdk import check_record as check_any_record

MESSAGES = [{"role": "user", "content": "Say hello"}]
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

proxy = module_proxy("relaylog-sdk-openai")
check_record = partial(check_any_record, provider="openai", api_key=OPENAI.api_key)
direct, relayed, call = OPENAI.direct, OPENAI.relayed, OPENAI.call


def dumps(items: list[Any]) -> list[dict[str, Any]]:
    return [item.model_dump() for item in items]


def responses_usage(usage: Any) -> dict[str, int | None]:
    assert usage is not None
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.input_tokens_details.cached_tokens,
        "cache_write_tokens": usage.input_tokens_details.cache_write_tokens,
        "reasoning_tokens": usage.output_tokens_details.reasoning_tokens,
        "audio_input_tokens": None,
        "audio_output_tokens": None,
    }


def stream_body_chunks(response_body: str) -> list[dict[str, Any]]:
    """The chunks a recorded chat stream held, parsed the way the SDK parses them."""
    chunks = []
    for line in response_body.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunks.append(ChatCompletionChunk.model_validate(orjson.loads(line[6:])).model_dump())
    return chunks


def check_chat_stream(
    mode: str,
    standin: StandIn,
    proxy: RunningProxy,
    fn: Callable[[Any, dict[str, Any]], Any],
    headers: dict[str, str] | None = None,
) -> tuple[Call, dict[str, Any]]:
    """A chat stream without `stream_options`: the client sees the direct stream and no usage;
    relaylog records the usage a direct call asking for it reports."""
    plain = direct(mode, standin, lambda c: fn(c, {}), headers)
    with_usage = direct(mode, standin, lambda c: fn(c, {"stream_options": {"include_usage": True}}), headers)
    through, record = relayed(mode, proxy, lambda c: fn(c, {}), headers)

    assert dumps(through.result) == dumps(plain.result)
    assert all(chunk.usage is None for chunk in through.result)
    assert all(chunk.choices for chunk in through.result), "no usage-only chunk may reach the client"
    assert through.body == plain.body and b"stream_options" not in through.body

    usage_chunk = with_usage.result[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    # Apart from `usage`, the direct streams with and without usage carry the same chunks.
    assert [c.model_dump(exclude={"usage"}) for c in with_usage.result[:-1]] == [
        c.model_dump(exclude={"usage"}) for c in plain.result
    ]
    first = plain.result[0]
    check_record(
        record,
        sent=through.body,
        endpoint="/v1/chat/completions",
        model=orjson.loads(through.body)["model"],
        response_model=first.model,
        stream=True,
        usage=chat_usage(usage_chunk.usage),
        usage_source="provider_injected",
    )
    # What relaylog stored is what the client received: the same chunks, no usage.
    assert stream_body_chunks(record["response_body"]) == dumps(plain.result)
    assert '"usage"' not in record["response_body"]
    assert record["response_body"].rstrip().endswith("data: [DONE]")
    return through, record


def check_chat(
    mode: str, standin: StandIn, proxy: RunningProxy, fn: Callable[[Any], Any], headers: dict[str, str] | None = None
) -> tuple[Call, dict[str, Any]]:
    mine = direct(mode, standin, fn, headers)
    through, record = relayed(mode, proxy, fn, headers)
    assert through.result.model_dump() == mine.result.model_dump()
    assert through.body == mine.body
    check_record(
        record,
        sent=through.body,
        endpoint="/v1/chat/completions",
        model=orjson.loads(through.body)["model"],
        response_model=mine.result.model,
        stream=False,
        usage=chat_usage(mine.result.usage),
    )
    assert orjson.loads(record["response_body"]) == mine.result.model_dump(exclude_unset=True)
    return through, record


# --------------------------------------------------------------------------------------------
# Chat completions


@pytest.mark.parametrize("mode", MODES)
def test_chat_non_streamed(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    through, _ = check_chat(
        mode, standin, proxy, lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    )
    message = through.result.choices[0].message
    assert message.content and message.tool_calls is None and through.result.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("mode", MODES)
def test_chat_streamed_hides_injected_usage(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    through, _ = check_chat_stream(
        mode,
        standin,
        proxy,
        lambda c, extra: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, **extra),
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in through.result)
    assert text and through.result[-1].choices[0].finish_reason == "stop"
    assert orjson.loads(standin.requests[-1].body)["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("mode", MODES)
def test_chat_streamed_with_client_asked_usage(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    def fn(c: Any) -> Any:
        return c.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )

    mine = direct(mode, standin, fn)
    through, record = relayed(mode, proxy, fn)
    assert dumps(through.result) == dumps(mine.result)
    assert through.result[-1].choices == [] and through.result[-1].usage is not None
    assert through.body == mine.body
    check_record(
        record,
        sent=through.body,
        endpoint="/v1/chat/completions",
        model="gpt-4o",
        response_model=mine.result[0].model,
        stream=True,
        usage=chat_usage(mine.result[-1].usage),
        usage_source="provider",
    )
    assert stream_body_chunks(record["response_body"]) == dumps(mine.result)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "options",
    [{"include_usage": False}, {"include_obfuscation": False}],
    ids=["include_usage-false", "obfuscation-off"],
)
def test_chat_streamed_with_other_stream_options(
    mode: str, options: dict[str, bool], standin: StandIn, proxy: RunningProxy
) -> None:
    """stream_options without include_usage: relaylog still asks for usage and still hides it."""

    def fn(c: Any, usage: bool) -> Any:
        merged = {**options, "include_usage": True} if usage else options
        return c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options=merged)

    plain = direct(mode, standin, lambda c: fn(c, False))
    with_usage = direct(mode, standin, lambda c: fn(c, True))
    through, record = relayed(mode, proxy, lambda c: fn(c, False))
    assert dumps(through.result) == dumps(plain.result)
    assert all(chunk.usage is None and chunk.choices for chunk in through.result)
    assert orjson.loads(standin.requests[-1].body)["stream_options"] == {**options, "include_usage": True}
    check_record(
        record,
        sent=through.body,
        endpoint="/v1/chat/completions",
        model="gpt-4o-mini",
        response_model=plain.result[0].model,
        stream=True,
        usage=chat_usage(with_usage.result[-1].usage),
        usage_source="provider_injected",
    )
    assert stream_body_chunks(record["response_body"]) == dumps(plain.result)


@pytest.mark.parametrize("mode", MODES)
def test_chat_tool_call(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    through, _ = check_chat(
        mode,
        standin,
        proxy,
        lambda c: c.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL]),
    )
    choice = through.result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [call.function.name for call in choice.message.tool_calls] == ["get_weather"]
    assert "city" in orjson.loads(choice.message.tool_calls[0].function.arguments)

    streamed, _ = check_chat_stream(
        mode,
        standin,
        proxy,
        lambda c, extra: c.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True, **extra
        ),
    )
    arguments = "".join(
        call.function.arguments or "" for chunk in streamed.result for call in chunk.choices[0].delta.tool_calls or []
    )
    assert orjson.loads(arguments) == orjson.loads(choice.message.tool_calls[0].function.arguments)


@pytest.mark.parametrize("mode", MODES)
def test_chat_parallel_tool_calls(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    scenario = {"x-standin-scenario": "parallel-tools"}

    def fn(c: Any, **extra: Any) -> Any:
        return c.chat.completions.create(
            model="gpt-4.1", messages=MESSAGES, tools=[WEATHER_TOOL, TIME_TOOL], parallel_tool_calls=True, **extra
        )

    through, _ = check_chat(mode, standin, proxy, fn, scenario)
    calls = through.result.choices[0].message.tool_calls
    assert len(calls) == 2 and len({call.id for call in calls}) == 2

    streamed, _ = check_chat_stream(mode, standin, proxy, lambda c, extra: fn(c, stream=True, **extra), scenario)
    indexes = {tc.index for chunk in streamed.result for tc in (chunk.choices[0].delta.tool_calls or [])}
    assert indexes == {0, 1}


@pytest.mark.parametrize("mode", MODES)
def test_chat_refusal(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    scenario = {"x-standin-scenario": "refusal"}
    through, _ = check_chat(
        mode, standin, proxy, lambda c: c.chat.completions.create(model="gpt-4o", messages=MESSAGES), scenario
    )
    assert through.result.choices[0].message.refusal and through.result.choices[0].message.content is None

    streamed, _ = check_chat_stream(
        mode,
        standin,
        proxy,
        lambda c, extra: c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **extra),
        scenario,
    )
    refusal = "".join(chunk.choices[0].delta.refusal or "" for chunk in streamed.result)
    assert refusal == through.result.choices[0].message.refusal


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", ["o4-mini", "gpt-5-mini"])
def test_chat_reasoning_usage(mode: str, model: str, standin: StandIn, proxy: RunningProxy) -> None:
    _, record = check_chat(
        mode,
        standin,
        proxy,
        lambda c: c.chat.completions.create(model=model, messages=MESSAGES, reasoning_effort="low"),
    )
    assert record["reasoning_tokens"] and record["reasoning_tokens"] > 0
    assert record["output_tokens"] > record["reasoning_tokens"]

    _, record = check_chat_stream(
        mode,
        standin,
        proxy,
        lambda c, extra: c.chat.completions.create(
            model=model, messages=MESSAGES, reasoning_effort="high", stream=True, **extra
        ),
    )
    assert record["reasoning_tokens"] and record["reasoning_tokens"] > 0


@pytest.mark.parametrize("mode", MODES)
def test_chat_cached_tokens(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    scenario = {"x-standin-scenario": "cached"}
    _, record = check_chat(
        mode, standin, proxy, lambda c: c.chat.completions.create(model="gpt-4o", messages=MESSAGES), scenario
    )
    assert record["cache_read_tokens"] and 0 < record["cache_read_tokens"] < record["input_tokens"]

    _, record = check_chat_stream(
        mode,
        standin,
        proxy,
        lambda c, extra: c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **extra),
        scenario,
    )
    assert record["cache_read_tokens"] and 0 < record["cache_read_tokens"] < record["input_tokens"]


@pytest.mark.parametrize("mode", MODES)
def test_chat_structured_output_parse(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "city",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
                "required": ["city", "population"],
                "additionalProperties": False,
            },
        },
    }
    through, _ = check_chat(
        mode,
        standin,
        proxy,
        lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, response_format=schema),
    )
    assert set(orjson.loads(through.result.choices[0].message.content)) == {"city", "population"}


# --------------------------------------------------------------------------------------------
# Responses API


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("model", "extra", "headers"),
    [
        ("gpt-4o", {}, None),
        ("o4-mini", {"reasoning": {"effort": "low", "summary": "auto"}}, None),
        ("gpt-4.1", {}, {"x-standin-scenario": "cached"}),
        ("gpt-4.1", {"tools": [{"type": "function", **WEATHER_TOOL["function"]}]}, None),
    ],
    ids=["text", "reasoning", "cached", "tool"],
)
def test_responses(
    mode: str, model: str, extra: dict[str, Any], headers: dict[str, str] | None, standin: StandIn, proxy: RunningProxy
) -> None:
    def create(c: Any) -> Any:
        return c.responses.create(model=model, input="Say hello", instructions="Be brief.", **extra)

    mine = direct(mode, standin, create, headers)
    through, record = relayed(mode, proxy, create, headers)
    assert through.result.model_dump() == mine.result.model_dump()
    assert through.body == mine.body
    check_record(
        record,
        sent=through.body,
        endpoint="/v1/responses",
        model=model,
        response_model=mine.result.model,
        stream=False,
        usage=responses_usage(mine.result.usage),
    )
    assert orjson.loads(record["response_body"]) == mine.result.model_dump(exclude_unset=True)

    def stream(c: Any) -> Any:
        return c.responses.create(model=model, input="Say hello", instructions="Be brief.", stream=True, **extra)

    mine_events = direct(mode, standin, stream, headers)
    through_events, record = relayed(mode, proxy, stream, headers)
    assert dumps(through_events.result) == dumps(mine_events.result)
    assert [e.sequence_number for e in through_events.result] == list(range(len(through_events.result)))
    completed = mine_events.result[-1]
    assert completed.type == "response.completed"
    # The streamed response is the same response as the non-streamed one.
    assert completed.response.model_dump() == mine.result.model_dump()
    check_record(
        record,
        sent=through_events.body,
        endpoint="/v1/responses",
        model=model,
        response_model=completed.response.model,
        stream=True,
        usage=responses_usage(completed.response.usage),
        usage_source="provider",  # Responses streams always carry usage: nothing is injected
    )
    assert orjson.loads(standin.requests[-1].body) == orjson.loads(through_events.body)
    assert record["response_body"].count("event: ") == len(mine_events.result)


@pytest.mark.parametrize("mode", MODES)
def test_responses_stream_helper(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    """`client.responses.stream(...)`: the SDK's own accumulation gives the same final response."""

    def fn(c: Any) -> Any:
        if isinstance(c, openai.OpenAI):
            with c.responses.stream(model="gpt-4o", input="Say hello") as events:
                seen = [event.model_dump(warnings=False) for event in events]
                return seen, events.get_final_response().model_dump(warnings=False)

        async def run() -> Any:
            async with c.responses.stream(model="gpt-4o", input="Say hello") as events:
                seen = [event.model_dump(warnings=False) async for event in events]
                return seen, (await events.get_final_response()).model_dump(warnings=False)

        return run()

    mine = direct(mode, standin, fn)
    through, record = relayed(mode, proxy, fn)
    assert through.result == mine.result
    assert record["stream"] is True and record["usage_source"] == "provider"
    assert record["output_tokens"] == mine.result[1]["usage"]["output_tokens"]


# --------------------------------------------------------------------------------------------
# Embeddings


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("encoding", ["default", "float"])
def test_embeddings(mode: str, encoding: str, standin: StandIn, proxy: RunningProxy) -> None:
    extra = {} if encoding == "default" else {"encoding_format": "float"}

    def fn(c: Any) -> Any:
        return c.embeddings.create(model="text-embedding-3-small", input=["first text", "second, longer text"], **extra)

    mine = direct(mode, standin, fn)
    through, record = relayed(mode, proxy, fn)
    assert through.result.model_dump() == mine.result.model_dump()
    assert len(through.result.data) == 2 and len(through.result.data[0].embedding) == 1536
    assert through.body == mine.body
    usage = {
        "input_tokens": mine.result.usage.prompt_tokens,
        "output_tokens": 0,
        "cache_read_tokens": None,
        "cache_write_tokens": None,
        "reasoning_tokens": None,
        "audio_input_tokens": None,
        "audio_output_tokens": None,
    }
    check_record(
        record,
        sent=through.body,
        endpoint="/v1/embeddings",
        model="text-embedding-3-small",
        response_model=mine.result.model,
        stream=False,
        usage=usage,
    )


# --------------------------------------------------------------------------------------------
# Raw responses: headers


@pytest.mark.parametrize("mode", MODES)
def test_raw_response_headers_non_streamed(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    def fn(c: Any) -> Any:
        return c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)

    mine = direct(mode, standin, fn)
    through, record = relayed(mode, proxy, fn)
    assert through.result.model_dump() == mine.result.model_dump()
    assert through.headers is not None and mine.headers is not None
    # Every provider header, in the provider's order, with the provider's values; plus helicone-id.
    assert headers_without(through.headers, "helicone-id") == headers_without(mine.headers)
    assert through.headers["helicone-id"] == record["request_id"]
    assert through.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize("mode", MODES)
def test_raw_response_headers_streamed(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    def fn(c: Any) -> Any:
        return c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    mine = direct(mode, standin, fn)
    through, record = relayed(mode, proxy, fn)
    assert dumps(through.result) == dumps(mine.result)
    assert through.headers is not None and mine.headers is not None
    assert through.headers["helicone-id"] == record["request_id"]
    for name, value in RELAY_STREAM_HEADERS.items():
        assert name not in mine.headers
        assert through.headers[name] == value
    assert headers_without(through.headers, "helicone-id", *RELAY_STREAM_HEADERS) == headers_without(mine.headers)


@pytest.mark.parametrize("mode", MODES)
def test_sdk_generated_request_id_comes_back(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    """Without a Helicone-Request-Id the proxy makes one up and returns it as `helicone-id`."""
    through = call(
        mode,
        proxy.url + "/v1",
        lambda c: c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES),
    )
    assert through.headers is not None
    request_id = through.headers["helicone-id"]
    assert str(uuid.UUID(request_id)) == request_id
    record = proxy.record(request_id)
    assert record["request_body"] == through.body.decode()
    assert not [name for name, _ in standin.requests[-1].headers if name.lower().startswith("helicone-")]
    assert standin.requests[-1].header("authorization") == f"Bearer {OPENAI.api_key}"
    assert OPENAI.api_key not in orjson.dumps(record).decode()


# --------------------------------------------------------------------------------------------
# Errors: the SDK raises the same exception through relaylog as directly


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("status", "error_class"),
    [(400, openai.BadRequestError), (429, openai.RateLimitError), (500, openai.InternalServerError)],
)
def test_provider_errors_raise_the_same_exception(
    mode: str, status: int, error_class: type[openai.APIStatusError], standin: StandIn, proxy: RunningProxy
) -> None:
    headers = {"x-standin-fault": f"status={status}"}

    def fn(c: Any) -> Any:
        return c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    mine, through, record = OPENAI.fail_both(error_class, mode, standin, proxy, fn, headers)
    assert type(through) is type(mine)
    assert (through.status_code, through.body, through.code, through.type, through.message) == (
        mine.status_code,
        mine.body,
        mine.code,
        mine.type,
        mine.message,
    )
    assert through.response.content == mine.response.content
    assert (record["status"], record["error_type"], record["usage_source"], record["cost_usd"]) == (
        status,
        "upstream_error",
        "absent",
        None,
    )
    assert record["input_tokens"] is None and record["output_tokens"] is None
    assert orjson.loads(record["response_body"]) == orjson.loads(mine.response.content)


@pytest.mark.parametrize("mode", MODES)
def test_in_stream_error_raises_the_same_exception(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    """A chat stream that fails part-way (`data: {"error": ...}`): the SDK raises the same APIError,
    and the record says usage is unknown (null), never 0."""
    headers = {"x-standin-scenario": "stream-error"}

    def fn(c: Any) -> Any:
        return c.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)

    mine, through, record = OPENAI.fail_both(openai.APIError, mode, standin, proxy, fn, headers)
    assert type(through) is type(mine)
    assert (through.message, through.body, through.code, through.type) == (
        mine.message,
        mine.body,
        mine.code,
        mine.type,
    )
    expected = {
        "status": 200,
        "stream": True,
        "input_tokens": None,
        "output_tokens": None,
        "usage_source": "absent",
        "cost_usd": None,
        "cost_source": "no_usage",
    }
    assert {name: record[name] for name in expected} == expected
    assert record["response_body"].rstrip().endswith('"code":null}}')


@pytest.mark.parametrize("mode", MODES)
def test_long_stream(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    """About 500 chunks: relaylog's usage stripping holds across many network reads."""
    through, _ = check_chat_stream(
        mode,
        standin,
        proxy,
        lambda c, extra: c.chat.completions.create(model="gpt-4.1-mini", messages=MESSAGES, stream=True, **extra),
        {"x-standin-scenario": "long"},
    )
    assert len(through.result) > 400


def test_many_concurrent_async_calls(standin: StandIn, proxy: RunningProxy) -> None:
    """Thirty interleaved streamed and plain calls on one AsyncOpenAI client: every caller gets its
    own answer and every call its own, correct record."""
    prompts = [f"Question number {i}: say hello" + " please" * i for i in range(30)]
    request_ids = [str(uuid.uuid4()) for _ in prompts]

    async def one(client: Any, i: int, ids: bool, usage: bool) -> Any:
        messages = [{"role": "user", "content": prompts[i]}]
        headers = {"Helicone-Request-Id": request_ids[i]} if ids else {}
        if i % 2:
            answer = await client.chat.completions.create(model="gpt-4o-mini", messages=messages, extra_headers=headers)
            return answer.model_dump()
        extra = {"stream_options": {"include_usage": True}} if usage else {}
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, extra_headers=headers, **extra
        )
        return [chunk.model_dump() async for chunk in stream]

    def everything(ids: bool, usage: bool) -> Callable[[Any], Any]:
        async def run(client: Any) -> Any:
            return await asyncio.gather(*(one(client, i, ids, usage) for i in range(len(prompts))))

        return run

    mine = direct("async", standin, everything(ids=False, usage=False)).result
    with_usage = direct("async", standin, everything(ids=False, usage=True)).result
    through = call("async", proxy.url + "/v1", everything(ids=True, usage=False)).result
    assert through == mine
    assert len({orjson.dumps(answer) for answer in mine}) == len(prompts)
    for i, request_id in enumerate(request_ids):
        record = proxy.record(request_id)
        stream = not i % 2
        usage = with_usage[i][-1]["usage"] if stream else with_usage[i]["usage"]
        expected = {
            "stream": stream,
            "status": 200,
            "usage_source": "provider_injected" if stream else "provider",
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
        }
        assert {name: record[name] for name in expected} == expected
        assert orjson.loads(record["request_body"])["messages"][0]["content"] == prompts[i]


@pytest.mark.parametrize("mode", MODES)
def test_models_list(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    def fn(c: Any) -> Any:
        page = c.models.list()
        if isinstance(c, openai.OpenAI):
            return [model.model_dump() for model in page]

        async def collect() -> Any:
            return [model.model_dump() async for model in page]

        return collect()

    mine = direct(mode, standin, fn)
    through, record = relayed(mode, proxy, fn)
    assert through.result == mine.result and mine.result
    expected = {
        "provider": "openai",
        "endpoint": "/v1/models",
        "method": "GET",
        "model": None,
        "status": 200,
        "stream": False,
        "usage_source": "absent",
        "input_tokens": None,
        "cost_usd": None,
        "error_type": None,
        "request_body": None,
        "request_bytes": 0,
    }
    assert {name: record[name] for name in expected} == expected
    assert orjson.loads(record["response_body"])["data"] == [
        {key: value for key, value in model.items() if value is not None} for model in mine.result
    ]


def test_stream_reaches_the_sdk_as_it_is_produced(standin: StandIn, proxy: RunningProxy) -> None:
    """With the provider pausing between chunks, the SDK gets the first chunk long before the last:
    relaylog forwards events as they come (also while it strips injected usage)."""

    def fn(c: Any) -> Any:
        arrivals = []
        started = time.perf_counter()
        for chunk in c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
            arrivals.append((time.perf_counter() - started, chunk.model_dump()))
        return arrivals

    headers = {"x-standin-fault": "chunk-delay-ms=15"}
    mine = direct("sync", standin, fn, headers).result
    through, record = relayed("sync", proxy, fn, headers)
    assert [chunk for _, chunk in through.result] == [chunk for _, chunk in mine]
    first, last = through.result[0][0], through.result[-1][0]
    assert last - first > 0.15, "chunks were buffered instead of streamed"
    assert record["usage_source"] == "provider_injected" and record["output_tokens"]
    assert record["latency_ms"] - record["ttft_ms"] > 150


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("fault", "completes"), [("drop-after=5", False), ("drop-after=100", True)])
def test_provider_dropping_the_connection(
    mode: str, fault: str, completes: bool, standin: StandIn, proxy: RunningProxy
) -> None:
    """The provider closes the connection without ending the chunked body: part-way (the SDK raises
    APIConnectionError after the same chunks) or after `[DONE]` (the SDK is content both ways)."""
    headers = {"x-standin-fault": fault}

    def fn(c: Any) -> Any:
        got: list[dict[str, Any]] = []

        def outcome(error: BaseException | None) -> Any:
            return got, None if error is None else type(error)

        if isinstance(c, openai.OpenAI):
            try:
                for chunk in c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
                    got.append(chunk.model_dump())
            except openai.APIError as error:
                return outcome(error)
            return outcome(None)

        async def run() -> Any:
            try:
                async for chunk in await c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True):
                    got.append(chunk.model_dump())
            except openai.APIError as error:
                return outcome(error)
            return outcome(None)

        return run()

    mine = direct(mode, standin, fn, headers).result
    through, record = relayed(mode, proxy, fn, headers)
    assert through.result == mine
    chunks, error = mine
    assert (error is None) is completes
    assert error in (None, openai.APIConnectionError)
    assert (len(chunks) > 5) is completes
    assert (record["status"], record["stream"]) == (200, True)
    # After [DONE] the stream is complete, whichever hangs up first, the SDK or the provider.
    assert record["error_type"] == (None if completes else "upstream_disconnect")


def test_usage_survives_a_late_provider_disconnect(standin: StandIn, proxy: RunningProxy) -> None:
    """The provider sends the whole stream (usage chunk and [DONE] included), then closes the
    connection without the final zero-length chunk. A client asking for usage itself gets it
    recorded; relaylog asking on the client's behalf must record it just the same."""

    def fn(c: Any) -> Any:
        return c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)

    with_usage = direct(
        "sync",
        standin,
        lambda c: c.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ),
    ).result
    _, record = relayed("sync", proxy, fn, {"x-standin-fault": "drop-after=100"})
    usage = chat_usage(with_usage[-1].usage)
    expected = {**usage, "usage_source": "provider_injected"}
    assert {name: record[name] for name in expected} == expected
