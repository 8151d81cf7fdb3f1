"""Gemini through relaylog (`/gemini/...`) with plain HTTP: the same bytes as directly, and a record
whose usage follows Gemini's `usageMetadata` (thinking tokens counted as output)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy, module_proxy
from tests.support.sdk import RELAY_STREAM_HEADERS, check_record, headers_without, recorded

API_KEY = "AIza-test-provider-key"
PROMPT = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}
WEATHER = {
    "functionDeclarations": [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
}


proxy = module_proxy("relaylog-gemini")


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


class Exchange:
    """One POST as the client saw it: status, headers, the raw (still encoded) and decoded body."""

    def __init__(self, http: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> None:
        request = http.build_request("POST", url, content=body, headers={"content-type": "application/json", **headers})
        response = http.send(request, stream=True)
        try:
            self.raw_chunks = list(response.iter_raw())
        finally:
            response.close()
        self.status = response.status_code
        self.headers = response.headers
        decoded = httpx.Response(response.status_code, headers=response.headers, content=b"".join(self.raw_chunks))
        self.raw = b"".join(self.raw_chunks)
        self.content = decoded.content if "content-encoding" in response.headers else self.raw


def post_both(
    http: httpx.Client,
    standin: StandIn,
    proxy: RunningProxy,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[Exchange, Exchange, dict[str, Any], bytes]:
    """The same request directly and through relaylog: (direct, relayed, record, bytes sent)."""
    sent = orjson.dumps(body)
    headers = {"x-goog-api-key": API_KEY, **(headers or {})}
    mine = Exchange(http, standin.url + path, sent, headers)
    relayed, record = recorded(
        proxy, lambda ids: Exchange(http, proxy.url + "/gemini" + path, sent, {**headers, **ids})
    )
    assert relayed.headers["helicone-id"] == record["request_id"]
    return mine, relayed, record, sent


def assert_same(mine: Exchange, through: Exchange, streamed: bool) -> None:
    assert through.status == mine.status
    assert through.raw == mine.raw  # byte for byte, compression included
    assert through.content == mine.content
    added = [
        "helicone-id",
        *(RELAY_STREAM_HEADERS if streamed and "event-stream" in mine.headers["content-type"] else ()),
    ]
    for name in added[1:]:
        assert name not in mine.headers and through.headers[name] == RELAY_STREAM_HEADERS[name]
    assert headers_without(through.headers, *added) == headers_without(mine.headers)


def final_usage(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """The last usageMetadata (Gemini's counts are cumulative) and the model version."""
    last = [obj for obj in objects if "usageMetadata" in obj][-1]
    return last["usageMetadata"], last["modelVersion"]


def sse_objects(text: bytes) -> list[dict[str, Any]]:
    events = [event for event in text.split(b"\r\n\r\n") if event.strip()]
    assert all(event.startswith(b"data: ") for event in events)
    return [orjson.loads(event[6:]) for event in events]


def record_usage(um: dict[str, Any]) -> dict[str, int | None]:
    thoughts = um.get("thoughtsTokenCount")
    return {
        "input_tokens": um["promptTokenCount"] + um.get("toolUsePromptTokenCount", 0),
        "output_tokens": um.get("candidatesTokenCount", 0) + (thoughts or 0),
        # Gemini leaves out counts that are zero: inside usageMetadata, missing means 0.
        "cache_read_tokens": um.get("cachedContentTokenCount", 0),
        "cache_write_tokens": None,
        "reasoning_tokens": thoughts or 0,
        "audio_input_tokens": None,
        "audio_output_tokens": None,
    }


def check_gemini_record(
    record: dict[str, Any], *, sent: bytes, path: str, model: str, stream: bool, um: dict[str, Any], version: str
) -> None:
    check_record(
        record,
        provider="gemini",
        price_provider="google",
        api_key=API_KEY,
        sent=sent,
        endpoint=path.split("?", 1)[0],
        model=model,
        response_model=version,
        stream=stream,
        usage=record_usage(um),
    )


CASES = [
    pytest.param("gemini-2.5-flash", PROMPT, None, id="thinking"),
    pytest.param(
        "gemini-2.5-flash",
        {**PROMPT, "generationConfig": {"thinkingConfig": {"thinkingBudget": 0}}},
        None,
        id="thinking-off",
    ),
    pytest.param("gemini-2.0-flash", PROMPT, None, id="no-thinking-model"),
    pytest.param(
        "gemini-2.5-pro",
        {**PROMPT, "generationConfig": {"thinkingConfig": {"includeThoughts": True}}},
        None,
        id="thoughts-shown",
    ),
    pytest.param("gemini-2.5-flash", PROMPT, {"x-standin-scenario": "cached"}, id="cached"),
    pytest.param("gemini-2.5-flash", {**PROMPT, "tools": [WEATHER]}, None, id="tool"),
]


@pytest.mark.parametrize(("model", "body", "headers"), CASES)
def test_generate_content(
    model: str,
    body: dict[str, Any],
    headers: dict[str, str] | None,
    http: httpx.Client,
    standin: StandIn,
    proxy: RunningProxy,
) -> None:
    path = f"/v1beta/models/{model}:generateContent"
    mine, through, record, sent = post_both(http, standin, proxy, path, body, headers)
    assert mine.status == 200
    assert_same(mine, through, streamed=False)
    assert standin.requests[-1].body == sent and standin.requests[-1].route == path
    answer = orjson.loads(mine.content)
    um, version = final_usage([answer])
    check_gemini_record(record, sent=sent, path=path, model=model, stream=False, um=um, version=version)
    assert record["response_body"] == mine.content.decode()
    if headers == {"x-standin-scenario": "cached"}:
        assert record["cache_read_tokens"] == um["cachedContentTokenCount"] > 0
    if model == "gemini-2.5-flash" and "generationConfig" not in body:
        assert record["reasoning_tokens"] == um["thoughtsTokenCount"] > 0
        assert record["output_tokens"] == um["candidatesTokenCount"] + um["thoughtsTokenCount"]


@pytest.mark.parametrize(("model", "body", "headers"), CASES)
def test_stream_generate_content_sse(
    model: str,
    body: dict[str, Any],
    headers: dict[str, str] | None,
    http: httpx.Client,
    standin: StandIn,
    proxy: RunningProxy,
) -> None:
    path = f"/v1beta/models/{model}:streamGenerateContent?alt=sse"
    mine, through, record, sent = post_both(http, standin, proxy, path, body, headers)
    assert mine.status == 200 and mine.headers["content-type"] == "text/event-stream"
    assert_same(mine, through, streamed=True)
    assert standin.requests[-1].path == path
    objects = sse_objects(mine.content)
    assert len(objects) > 1 or "tools" in body  # text arrives in pieces; a tool call in one chunk
    um, version = final_usage(objects)
    check_gemini_record(record, sent=sent, path=path, model=model, stream=True, um=um, version=version)
    assert record["response_body"] == mine.content.decode()
    assert record["response_bytes"] == len(mine.raw)


@pytest.mark.parametrize(("model", "body", "headers"), CASES)
def test_stream_generate_content_json_array(
    model: str,
    body: dict[str, Any],
    headers: dict[str, str] | None,
    http: httpx.Client,
    standin: StandIn,
    proxy: RunningProxy,
) -> None:
    path = f"/v1beta/models/{model}:streamGenerateContent"
    mine, through, record, sent = post_both(http, standin, proxy, path, body, headers)
    assert mine.status == 200 and mine.headers["content-type"].startswith("application/json")
    assert_same(mine, through, streamed=True)
    objects = orjson.loads(mine.content)
    assert isinstance(objects, list) and (len(objects) > 1 or "tools" in body)
    um, version = final_usage(objects)
    check_gemini_record(record, sent=sent, path=path, model=model, stream=True, um=um, version=version)
    assert record["response_body"] == mine.content.decode()


def test_streams_agree_with_generate_content(http: httpx.Client, standin: StandIn, proxy: RunningProxy) -> None:
    """The three ways of asking record the same usage, cost and response model."""
    base = "/v1beta/models/gemini-2.5-flash"
    fields = (
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "reasoning_tokens",
        "cost_usd",
        "response_model",
        "model",
    )
    records = [
        post_both(http, standin, proxy, base + suffix, PROMPT)[2]
        for suffix in (":generateContent", ":streamGenerateContent?alt=sse", ":streamGenerateContent")
    ]
    assert [r["stream"] for r in records] == [False, True, True]
    assert {tuple(r[f] for f in fields) for r in records} == {tuple(records[0][f] for f in fields)}


def test_stream_arrives_in_pieces(http: httpx.Client, standin: StandIn, proxy: RunningProxy) -> None:
    """relaylog forwards each event as it comes instead of buffering the whole stream."""
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    mine, through, record, _ = post_both(http, standin, proxy, path, PROMPT, {"x-standin-fault": "chunk-delay-ms=40"})
    assert_same(mine, through, streamed=True)
    assert len(through.raw_chunks) > 1
    assert record["ttft_ms"] + 60 < record["latency_ms"]


def test_api_key_in_query_is_relayed_but_not_recorded(
    http: httpx.Client, standin: StandIn, proxy: RunningProxy
) -> None:
    path = f"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key={API_KEY}"
    sent = orjson.dumps(PROMPT)
    mine = Exchange(http, standin.url + path, sent, {})
    relayed, record = recorded(proxy, lambda ids: Exchange(http, proxy.url + "/gemini" + path, sent, ids))
    assert_same(mine, relayed, streamed=True)
    assert standin.requests[-1].query == {"alt": "sse", "key": API_KEY}
    assert record["endpoint"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert API_KEY not in orjson.dumps(record).decode()


@pytest.mark.parametrize("status", [400, 429, 503])
@pytest.mark.parametrize("suffix", [":generateContent", ":streamGenerateContent?alt=sse"])
def test_provider_errors_relayed_unchanged(
    status: int, suffix: str, http: httpx.Client, standin: StandIn, proxy: RunningProxy
) -> None:
    path = "/v1beta/models/gemini-2.5-flash" + suffix
    mine, through, record, _ = post_both(http, standin, proxy, path, PROMPT, {"x-standin-fault": f"status={status}"})
    assert mine.status == status
    assert_same(mine, through, streamed=False)
    assert orjson.loads(mine.content)["error"]["code"] == status
    expected = {
        "provider": "gemini",
        "model": "gemini-2.5-flash",
        "status": status,
        "stream": suffix.startswith(":stream"),
        "error_type": "upstream_error",
        "usage_source": "absent",
        "input_tokens": None,
        "output_tokens": None,
        "cost_usd": None,
        "cost_source": "no_usage",
        "response_body": mine.content.decode(),
    }
    assert {name: record[name] for name in expected} == expected


def test_safety_block(http: httpx.Client, standin: StandIn, proxy: RunningProxy) -> None:
    path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    mine, through, record, sent = post_both(http, standin, proxy, path, PROMPT, {"x-standin-scenario": "refusal"})
    assert_same(mine, through, streamed=True)
    objects = sse_objects(mine.content)
    assert objects[-1]["candidates"][0]["finishReason"] == "SAFETY"
    um, version = final_usage(objects)
    check_gemini_record(record, sent=sent, path=path, model="gemini-2.5-flash", stream=True, um=um, version=version)
