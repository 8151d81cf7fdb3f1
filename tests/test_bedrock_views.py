"""Bedrock calls read back like the others: the request list's previews of the prompt and the answer
(each answer as boto3 itself put it together), and `relaylog show` with the stream as SSE text."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import EventStreamError
from relaylog.cli import main
from relaylog.query.preview import PREVIEW_CHARS
from relaylog.standin import StandIn

from tests.support.bedrock import (
    CLAUDE,
    LLAMA,
    NOVA,
    REGION,
    boto3_client,
    signing_proxy,
)
from tests.support.proxy import RunningProxy

TOOLS = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
            }
        }
    ]
}


@pytest.fixture(scope="module")
def proxy(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with signing_proxy(tmp_path_factory.mktemp("bedrock-views"), standin) as running:
        yield running


@pytest.fixture(scope="module")
def key(proxy: RunningProxy) -> str:
    return proxy.keys.create("views")[0]


def one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1].rstrip() + "…"


def test_previews_of_bedrock_calls(proxy: RunningProxy, key: str) -> None:
    expected: dict[str, tuple[str, str]] = {}

    def client(**headers: str) -> tuple[Any, str]:
        request_id = str(uuid.uuid4())
        made = boto3_client(
            f"{proxy.url}/bedrock/{REGION}",
            headers={"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": request_id, **headers},
        )
        return made, request_id

    bedrock, rid = client()
    answer = bedrock.converse(
        modelId=NOVA,
        system=[{"text": "Be brief."}],
        messages=[{"role": "user", "content": [{"text": "Name a\n fruit"}]}],
    )
    expected[rid] = ("Name a fruit", answer["output"]["message"]["content"][0]["text"])

    bedrock, rid = client()
    events = list(
        bedrock.converse_stream(
            modelId=CLAUDE, messages=[{"role": "user", "content": [{"text": "Weather in Paris?"}]}], toolConfig=TOOLS
        )["stream"]
    )
    start = next(e["contentBlockStart"]["start"]["toolUse"] for e in events if "contentBlockStart" in e)
    arguments = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "toolUse" in e.get("contentBlockDelta", {}).get("delta", {})
    )
    expected[rid] = ("Weather in Paris?", f"{start['name']}({arguments})")

    bedrock, rid = client()
    after_tool = [
        {"role": "user", "content": [{"text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}],
        },
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"json": {"sky": "sunny"}}]}}]},
    ]
    answer = bedrock.converse(modelId=CLAUDE, messages=after_tool, toolConfig=TOOLS)
    expected[rid] = ('tool result: {"sky":"sunny"}', answer["output"]["message"]["content"][0]["text"])

    bedrock, rid = client()
    body: dict[str, Any] = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Stream to me"}],
    }
    chunks = [
        json.loads(e["chunk"]["bytes"])
        for e in bedrock.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(body))["body"]
    ]
    expected[rid] = (
        "Stream to me",
        "".join(c["delta"].get("text", "") for c in chunks if c["type"] == "content_block_delta"),
    )

    for model, body, read in (
        (LLAMA, {"prompt": "Tell me about llamas"}, lambda c: c["generation"]),
        (
            "mistral.mistral-7b-instruct-v0:2",
            {"prompt": "Tell me about the mistral"},
            lambda c: c["outputs"][0]["text"],
        ),
        ("amazon.titan-text-express-v1", {"inputText": "Tell me about titans"}, lambda c: c["outputText"]),
    ):
        bedrock, rid = client()
        chunks = [
            json.loads(e["chunk"]["bytes"])
            for e in bedrock.invoke_model_with_response_stream(modelId=model, body=json.dumps(body))["body"]
        ]
        expected[rid] = (next(iter(body.values())), "".join(read(c) for c in chunks))

    bedrock, rid = client()
    body = {
        "message": "And in Lima?",
        "chat_history": [{"role": "USER", "message": "Hi"}, {"role": "CHATBOT", "message": "Hello"}],
    }
    answer = json.loads(bedrock.invoke_model(modelId="cohere.command-r-v1:0", body=json.dumps(body))["body"].read())
    expected[rid] = ("And in Lima?", answer["text"])

    bedrock, rid = client(**{"x-standin-scenario": "stream-error"})
    said = []
    with pytest.raises(EventStreamError) as raised:
        for e in bedrock.converse_stream(modelId=NOVA, messages=[{"role": "user", "content": [{"text": "Break"}]}])[
            "stream"
        ]:
            said += [e["contentBlockDelta"]["delta"]["text"]] if "contentBlockDelta" in e else []
    expected[rid] = ("Break", " ".join([*said, raised.value.response["Error"]["Message"]]))

    for request_id in expected:
        proxy.record(request_id)
    listed = httpx.get(
        proxy.url + "/api/v1/requests", params={"limit": 500}, headers={"Authorization": f"Bearer {key}"}
    ).json()["data"]
    rows = {r["request_id"]: r for r in listed}
    for request_id, (prompt, completion) in expected.items():
        assert (rows[request_id]["request_preview"], rows[request_id]["response_preview"]) == (
            one_line(prompt),
            one_line(completion),
        ), request_id


def test_relaylog_show_puts_the_stream_together_and_raw_keeps_its_sse_text(
    proxy: RunningProxy, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    request_id = str(uuid.uuid4())
    bedrock = boto3_client(
        f"{proxy.url}/bedrock/{REGION}", headers={"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": request_id}
    )
    list(
        bedrock.converse_stream(modelId=NOVA, messages=[{"role": "user", "content": [{"text": "Say hello"}]}])["stream"]
    )
    proxy.record(request_id)
    assert main(["show", request_id[:8], "--data-dir", str(proxy.data_dir)]) == 0
    shown = capsys.readouterr().out
    assert "bedrock" in shown and NOVA in shown
    assert "Say hello" in shown and "Hello!" in shown  # the prompt, and the answer put back together
    assert "event: contentBlockDelta" not in shown
    assert main(["show", request_id[:8], "--raw", "--data-dir", str(proxy.data_dir)]) == 0
    raw = capsys.readouterr().out
    assert 'event: contentBlockDelta\ndata: {"contentBlockIndex":0,"delta":{"text":"Hello!"}' in raw
    assert "event: metadata\n" in raw


def test_the_record_of_a_refused_bedrock_call(proxy: RunningProxy, key: str) -> None:
    answer = httpx.post(f"{proxy.url}/bedrock/{REGION}/model/{NOVA}/converse", json={"messages": []})
    assert answer.status_code == 401
    record = proxy.record(answer.headers["helicone-id"])
    assert (record["provider"], record["model"], record["error_type"], record["attempt_count"]) == (
        "bedrock",
        None,
        "unauthorized",
        0,
    )
