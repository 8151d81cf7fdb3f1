"""The real `anthropic` Python SDK (sync and async clients) sees exactly the same results through
relaylog (`base_url=proxy.url + "/anthropic"`) as directly against the provider stand-in, and every
relayed call leaves a correct record.

relaylog maps `/anthropic/...` to the provider's origin and keeps the rest of the path, so the
direct client's base URL is the stand-in's origin itself (the SDK adds `/v1/messages`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import orjson
import pytest
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy, module_proxy
from tests.support.sdk import ANTHROPIC, MODES, headers_without
from tests.support.sdk import check_record as check_any_record

MODEL = "claude-haiku-4-5"
MESSAGES = [{"role": "user", "content": "Say hello"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
    },
}

proxy = module_proxy("relaylog-sdk-anthropic")
both = ANTHROPIC.both


def create(**params: Any) -> Callable[[Any], Any]:
    def fn(client: Any) -> Any:
        return client.messages.create(**params)

    return fn


def stream(**params: Any) -> Callable[[Any], Any]:
    """`client.messages.stream(...)`: (every event as a dict, get_final_message())."""

    def fn(client: Any) -> Any:
        if isinstance(client, anthropic.Anthropic):
            with client.messages.stream(**params) as events:
                return [event.model_dump() for event in events], events.get_final_message()

        async def run() -> Any:
            async with client.messages.stream(**params) as events:
                seen = [event.model_dump() async for event in events]
                return seen, await events.get_final_message()

        return run()

    return fn


def raw_stream(**params: Any) -> Callable[[Any], Any]:
    """`client.messages.create(stream=True)`: the raw server-sent events as parsed objects."""

    def fn(client: Any) -> Any:
        if isinstance(client, anthropic.Anthropic):
            return [event.model_dump() for event in client.messages.create(stream=True, **params)]

        async def run() -> Any:
            return [event.model_dump() async for event in await client.messages.create(stream=True, **params)]

        return run()

    return fn


def record_usage(usage: Any) -> dict[str, int | None]:
    """Anthropic's three disjoint input numbers, normalised: input counts all of them."""
    cache_write = usage.cache_creation_input_tokens or 0
    cache_read = usage.cache_read_input_tokens or 0
    return {
        "input_tokens": usage.input_tokens + cache_write + cache_read,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_input_tokens,
        "cache_write_tokens": usage.cache_creation_input_tokens,
        "reasoning_tokens": None,  # Anthropic bills thinking as output without a separate count
        "audio_input_tokens": None,
        "audio_output_tokens": None,
    }


def check_record(record: dict[str, Any], *, sent: bytes, message: Any, stream: bool) -> None:
    check_any_record(
        record,
        provider="anthropic",
        api_key=ANTHROPIC.api_key,
        sent=sent,
        endpoint="/v1/messages",
        model=orjson.loads(sent)["model"],
        response_model=message.model,
        stream=stream,
        usage=record_usage(message.usage),
    )


def check_all_ways(
    mode: str, standin: StandIn, proxy: RunningProxy, params: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
    """messages.create, messages.stream and create(stream=True), each direct vs relayed.
    Returns (the message, the stream helper's events, the raw events)."""
    mine, through, record = both(mode, standin, proxy, create(**params), headers)
    assert through.result.model_dump() == mine.result.model_dump()
    assert through.body == mine.body
    check_record(record, sent=through.body, message=mine.result, stream=False)
    assert orjson.loads(record["response_body"]) == mine.result.model_dump(exclude_unset=True)

    mine_s, through_s, record = both(mode, standin, proxy, stream(**params), headers)
    events, final = through_s.result
    assert events == mine_s.result[0]
    assert final.model_dump() == mine_s.result[1].model_dump()
    # The streamed answer is the same message as the non-streamed one.
    assert final.model_dump() == mine.result.model_dump()
    assert through_s.body == mine_s.body
    check_record(record, sent=through_s.body, message=final, stream=True)
    assert record["response_body"].startswith("event: message_start\n")
    # Every event the SDK saw was recorded (plus the `ping` the SDK skips).
    recorded = [line[7:] for line in record["response_body"].splitlines() if line.startswith("event: ")]
    assert [name for name in recorded if name != "ping"] == [e["type"] for e in events if e["type"] in RAW_TYPES]

    mine_r, through_r, record = both(mode, standin, proxy, raw_stream(**params), headers)
    assert through_r.result == mine_r.result
    assert [e["type"] for e in through_r.result] == [e["type"] for e in events if e["type"] in RAW_TYPES]
    check_record(record, sent=through_r.body, message=final, stream=True)
    return mine.result, events, through_r.result


RAW_TYPES = {
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
}


@pytest.mark.parametrize("mode", MODES)
def test_text(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    message, events, _ = check_all_ways(
        mode, standin, proxy, {"model": MODEL, "max_tokens": 1024, "messages": MESSAGES}
    )
    assert [block.type for block in message.content] == ["text"] and message.stop_reason == "end_turn"
    text = "".join(e["text"] for e in events if e["type"] == "text")
    assert text == message.content[0].text


@pytest.mark.parametrize("mode", MODES)
def test_long_answer(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    message, events, _ = check_all_ways(
        mode, standin, proxy, {"model": MODEL, "max_tokens": 4096, "messages": MESSAGES}, {"x-standin-scenario": "long"}
    )
    assert len(events) > 400 and message.usage.output_tokens > 400


@pytest.mark.parametrize("mode", MODES)
def test_system_prompt_and_max_tokens_cut(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    message, _, _ = check_all_ways(
        mode, standin, proxy, {"model": MODEL, "max_tokens": 3, "system": "Be brief.", "messages": MESSAGES}
    )
    assert message.stop_reason == "max_tokens"


@pytest.mark.parametrize("mode", MODES)
def test_tool_use(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    params = {"model": MODEL, "max_tokens": 1024, "messages": MESSAGES, "tools": [WEATHER_TOOL]}
    message, events, raw = check_all_ways(mode, standin, proxy, params)
    assert message.stop_reason == "tool_use"
    tool = [block for block in message.content if block.type == "tool_use"]
    assert len(tool) == 1 and tool[0].name == "get_weather" and "city" in tool[0].input
    deltas = [
        e["delta"] for e in raw if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    ]
    assert len(deltas) > 1
    assert orjson.loads("".join(d["partial_json"] for d in deltas)) == tool[0].input
    # The SDK's accumulated snapshots end with the whole input.
    snapshots = [e["snapshot"] for e in events if e["type"] == "input_json"]
    assert snapshots and snapshots[-1] == tool[0].input


@pytest.mark.parametrize("mode", MODES)
def test_tool_result_round_trip(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    first, _, _ = both(
        mode, standin, proxy, create(model=MODEL, max_tokens=1024, messages=MESSAGES, tools=[WEATHER_TOOL])
    )
    tool = next(block for block in first.result.content if block.type == "tool_use")
    messages = [
        *MESSAGES,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.result.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "sunny, 22 C"}]},
    ]
    message, _, _ = check_all_ways(
        mode, standin, proxy, {"model": MODEL, "max_tokens": 1024, "messages": messages, "tools": [WEATHER_TOOL]}
    )
    assert [block.type for block in message.content] == ["text"]


@pytest.mark.parametrize("mode", MODES)
def test_extended_thinking(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    params = {
        "model": MODEL,
        "max_tokens": 2048,
        "messages": MESSAGES,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    message, events, raw = check_all_ways(mode, standin, proxy, params)
    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking = message.content[0]
    assert thinking.thinking and thinking.signature
    delta_types = {e["delta"]["type"] for e in raw if e["type"] == "content_block_delta"}
    assert delta_types == {"thinking_delta", "signature_delta", "text_delta"}
    assert "".join(e["thinking"] for e in events if e["type"] == "thinking") == thinking.thinking
    assert [e["signature"] for e in events if e["type"] == "signature"] == [thinking.signature]
    # Thinking is billed as output: more output tokens than the visible text alone.
    plain, _, _ = both(mode, standin, proxy, create(model=MODEL, max_tokens=2048, messages=MESSAGES))
    assert message.usage.output_tokens > plain.result.usage.output_tokens


@pytest.mark.parametrize("mode", MODES)
def test_prompt_caching_usage(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    params = {
        "model": MODEL,
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "A long, cached system prompt.", "cache_control": {"type": "ephemeral"}}],
        "messages": MESSAGES,
    }
    message, _, _ = check_all_ways(mode, standin, proxy, params, {"x-standin-scenario": "cached"})
    usage = message.usage
    assert usage.cache_read_input_tokens and usage.cache_creation_input_tokens
    _, through, record = both(mode, standin, proxy, create(**params), {"x-standin-scenario": "cached"})
    assert record["input_tokens"] == (
        usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens
    )
    assert (record["cache_read_tokens"], record["cache_write_tokens"]) == (
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("status", "error_class"),
    [(429, anthropic.RateLimitError), (529, anthropic.OverloadedError), (400, anthropic.BadRequestError)],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_provider_errors_raise_the_same_exception(
    mode: str,
    status: int,
    error_class: type[anthropic.APIStatusError],
    streamed: bool,
    standin: StandIn,
    proxy: RunningProxy,
) -> None:
    params = {"model": MODEL, "max_tokens": 1024, "messages": MESSAGES}
    fn = stream(**params) if streamed else create(**params)
    headers = {"x-standin-fault": f"status={status};retry-after=7"}
    mine, through, record = ANTHROPIC.fail_both(error_class, mode, standin, proxy, fn, headers)
    assert type(through) is type(mine)
    assert (through.status_code, through.body, through.request_id, through.message) == (
        mine.status_code,
        mine.body,
        mine.request_id,
        mine.message,
    )
    assert through.response.content == mine.response.content
    assert headers_without(through.response.headers, "helicone-id") == headers_without(mine.response.headers)
    assert through.response.headers["retry-after"] == "7"
    assert through.response.headers["helicone-id"] == record["request_id"]

    expected = {
        "provider": "anthropic",
        "endpoint": "/v1/messages",
        "model": MODEL,
        "status": status,
        "stream": streamed,
        "error_type": "upstream_error",
        "usage_source": "absent",
        "input_tokens": None,
        "output_tokens": None,
        "cost_usd": None,
        "cost_source": "no_usage",
    }
    assert {name: record[name] for name in expected} == expected
    assert orjson.loads(record["response_body"]) == mine.body


@pytest.mark.parametrize("mode", MODES)
def test_in_stream_overloaded_error(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    """An `event: error` after some text: the SDK raises the same error both ways."""
    params = {"model": MODEL, "max_tokens": 1024, "messages": MESSAGES}
    headers = {"x-standin-scenario": "stream-error"}
    mine, through, record = ANTHROPIC.fail_both(
        anthropic.APIStatusError, mode, standin, proxy, raw_stream(**params), headers
    )
    assert type(through) is type(mine)
    assert (through.status_code, through.body, through.message) == (mine.status_code, mine.body, mine.message)
    assert record["status"] == 200 and record["stream"] is True
    assert "event: error" in record["response_body"]


@pytest.mark.parametrize("mode", MODES)
def test_count_tokens_and_models_are_relayed_without_usage(mode: str, standin: StandIn, proxy: RunningProxy) -> None:
    """count_tokens answers `input_tokens` at top level: that is a count, not tokens processed."""
    mine, through, record = both(
        mode, standin, proxy, lambda c: c.messages.count_tokens(model=MODEL, messages=MESSAGES)
    )
    assert through.result.model_dump() == mine.result.model_dump() and mine.result.input_tokens > 0
    expected = {
        "provider": "anthropic",
        "endpoint": "/v1/messages/count_tokens",
        "model": MODEL,
        "status": 200,
        "input_tokens": None,
        "output_tokens": None,
        "usage_source": "absent",
        "cost_usd": None,
        "error_type": None,
        "request_body": through.body.decode(),
    }
    assert {name: record[name] for name in expected} == expected

    def models(c: Any) -> Any:
        page = c.models.list()
        if isinstance(c, anthropic.Anthropic):
            return [model.model_dump() for model in page]

        async def collect() -> Any:
            return [model.model_dump() async for model in page]

        return collect()

    mine, through, record = both(mode, standin, proxy, models)
    assert through.result == mine.result and mine.result
    assert (record["method"], record["endpoint"], record["model"], record["usage_source"]) == (
        "GET",
        "/v1/models",
        None,
        "absent",
    )
