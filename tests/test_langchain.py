"""LangChain's `ChatOpenAI` pointed at relaylog behaves exactly as pointed at the provider.

With a custom `base_url`, ChatOpenAI does not ask for stream usage by itself (it only does so for
api.openai.com, or when `stream_usage=True`), so its streamed calls carry no `stream_options`:
relaylog asks upstream for usage, records it (`provider_injected`) and hides it from LangChain,
which then reports `usage_metadata=None`, exactly as it does directly. With `stream_usage=True`
LangChain asks itself, gets usage both ways, and the record says `provider`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI
from openai.types import CompletionUsage
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy, module_proxy
from tests.support.sdk import OPENAI, chat_usage, recorded
from tests.support.sdk import check_record as check_any_record

MODEL = "gpt-4o-mini"
PROMPT = "Say hello"


proxy = module_proxy("relaylog-langchain")


class Model:
    """A ChatOpenAI whose HTTP requests are captured (sync and async clients)."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None, **options: Any) -> None:
        self.sent: list[httpx.Request] = []

        async def capture(request: httpx.Request) -> None:
            self.sent.append(request)

        self.llm = ChatOpenAI(
            model=options.pop("model", MODEL),
            base_url=base_url,
            api_key=OPENAI.api_key,
            streaming=True,
            max_retries=0,
            timeout=10.0,
            default_headers=headers or {},
            http_client=httpx.Client(event_hooks={"request": [self.sent.append]}),
            http_async_client=httpx.AsyncClient(event_hooks={"request": [capture]}),
            **options,
        )

    @property
    def body(self) -> bytes:
        assert len(self.sent) == 1, f"expected one HTTP request, LangChain sent {len(self.sent)}"
        return self.sent[0].content


def without_run_id(message: Any) -> dict[str, Any]:
    """A message as a dict, minus the id LangChain generates per run (`lc_run--<uuid>`)."""
    data = message.model_dump()
    assert str(data.pop("id")).startswith("lc_run--")
    return data


def run(how: str, model: Model, tools: list[dict[str, Any]] | None = None) -> Any:
    llm = model.llm.bind_tools(tools) if tools else model.llm
    if how == "stream":
        return list(llm.stream(PROMPT))
    if how == "invoke":
        return llm.invoke(PROMPT)
    if how == "astream":

        async def collect() -> list[Any]:
            return [chunk async for chunk in llm.astream(PROMPT)]

        return asyncio.run(collect())
    assert how == "ainvoke"
    return asyncio.run(llm.ainvoke(PROMPT))


def both(
    how: str, standin: StandIn, proxy: RunningProxy, tools: list[dict[str, Any]] | None = None, **options: Any
) -> tuple[Any, Any, Model, dict[str, Any]]:
    """The same run directly and through relaylog: (direct result, relayed result, relayed model, record)."""
    mine_model = Model(standin.url + OPENAI.direct_path, **options)
    mine = run(how, mine_model, tools)

    def relayed(ids: dict[str, str]) -> tuple[Any, Model]:
        model = Model(proxy.url + OPENAI.relay_path, ids, **options)
        return run(how, model, tools), model

    (result, model), record = recorded(proxy, relayed)
    assert model.body == mine_model.body
    return mine, result, model, record


def direct_usage(standin: StandIn, body: bytes) -> dict[str, Any]:
    """The usage the provider reports for this request when asked for it."""
    asked = {**orjson.loads(body), "stream_options": {"include_usage": True}}
    response = httpx.post(
        standin.url + "/v1/chat/completions", json=asked, headers={"authorization": f"Bearer {OPENAI.api_key}"}
    )
    last = orjson.loads([line for line in response.text.splitlines() if line.startswith("data: {")][-1][6:])
    assert last["choices"] == []
    return last["usage"]


def check_record(record: dict[str, Any], body: bytes, usage: dict[str, Any], usage_source: str) -> None:
    check_any_record(
        record,
        provider="openai",
        api_key=OPENAI.api_key,
        sent=body,
        endpoint="/v1/chat/completions",
        model=MODEL,
        response_model="gpt-4o-mini-2024-07-18",
        stream=True,
        usage=chat_usage(CompletionUsage.model_validate(usage)),
        usage_source=usage_source,
    )


@pytest.mark.parametrize("how", ["stream", "astream"])
def test_stream_without_stream_usage(how: str, standin: StandIn, proxy: RunningProxy) -> None:
    mine, through, model, record = both(how, standin, proxy)
    assert "stream_options" not in orjson.loads(model.body)  # what LangChain sends to a custom base_url
    assert [without_run_id(c) for c in through] == [without_run_id(c) for c in mine]
    assert all(isinstance(c, AIMessageChunk) and c.usage_metadata is None for c in through)
    text = "".join(str(c.content) for c in through)
    assert text == "".join(str(c.content) for c in mine) and text
    check_record(record, model.body, direct_usage(standin, model.body), "provider_injected")


@pytest.mark.parametrize("how", ["invoke", "ainvoke"])
def test_invoke_streaming(how: str, standin: StandIn, proxy: RunningProxy) -> None:
    mine, through, model, record = both(how, standin, proxy)
    assert orjson.loads(model.body)["stream"] is True  # streaming=True: invoke streams too
    assert without_run_id(through) == without_run_id(mine)
    assert through.content and through.usage_metadata is None
    assert through.response_metadata["finish_reason"] == "stop"
    check_record(record, model.body, direct_usage(standin, model.body), "provider_injected")


@pytest.mark.parametrize("how", ["stream", "invoke"])
def test_stream_usage_asked_by_langchain(how: str, standin: StandIn, proxy: RunningProxy) -> None:
    mine, through, model, record = both(how, standin, proxy, stream_usage=True)
    assert orjson.loads(model.body)["stream_options"] == {"include_usage": True}
    if how == "stream":
        assert [without_run_id(c) for c in through] == [without_run_id(c) for c in mine]
        merged = through[0]
        for chunk in through[1:]:
            merged = merged + chunk
    else:
        assert without_run_id(through) == without_run_id(mine)
        merged = through
    usage = direct_usage(standin, model.body)
    assert merged.usage_metadata is not None
    assert (merged.usage_metadata["input_tokens"], merged.usage_metadata["output_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    check_record(record, model.body, usage, "provider")


def test_tool_calls_stream(standin: StandIn, proxy: RunningProxy) -> None:
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    mine, through, model, record = both("invoke", standin, proxy, tools=[weather])
    assert without_run_id(through) == without_run_id(mine)
    assert [call["name"] for call in through.tool_calls] == ["get_weather"]
    assert "city" in through.tool_calls[0]["args"]
    check_record(record, model.body, direct_usage(standin, model.body), "provider_injected")
