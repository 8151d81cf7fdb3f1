"""`relaylog show` puts streamed answers back together in every provider format, and each stream
reads as the same answer as the provider's whole (non-streamed) body for the same call: the
stand-in answers both, and the whole body is read here by hand, the way its format documents it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from relaylog.cli import main
from relaylog.standin import StandIn
from relaylog.store.scores import append_scores, score_lines

from tests.support.records import BASE, make_record, write_records

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
HEADERS = {"authorization": "Bearer sk-test", "x-api-key": "sk-test", "anthropic-version": "2023-06-01"}


def _whole_openai_chat(body: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    message = body["choices"][0]["message"]
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message.get("tool_calls") or []]
    return message.get("content") or "", calls


def _whole_responses(body: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    text = "".join(c["text"] for item in body["output"] if item["type"] == "message" for c in item["content"])
    calls = [(i["name"], json.loads(i["arguments"])) for i in body["output"] if i["type"] == "function_call"]
    return text, calls


def _whole_anthropic(body: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    text = "".join(b["text"] for b in body["content"] if b["type"] == "text")
    return text, [(b["name"], b["input"]) for b in body["content"] if b["type"] == "tool_use"]


def _whole_gemini(body: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    parts = body["candidates"][0]["content"]["parts"]
    text = "".join(p["text"] for p in parts if "text" in p and not p.get("thought"))
    return text, [(p["functionCall"]["name"], p["functionCall"]["args"]) for p in parts if "functionCall" in p]


GEMINI = "/v1beta/models/gemini-2.5-flash"
OPENAI_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
# (provider, whole path, streamed path, request body, whole-body reader); `stream` added for streams.
CASES: dict[str, tuple[str, str, str | None, dict[str, Any], Any]] = {
    "openai-chat-text": ("openai", "/v1/chat/completions", None, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, _whole_openai_chat),
    "openai-chat-tools": ("openai", "/v1/chat/completions", None, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "weather?"}], "tools": OPENAI_TOOLS}, _whole_openai_chat),
    "openai-chat-parallel-tools": ("openai", "/v1/chat/completions", None, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "weather?"}], "tools": OPENAI_TOOLS, "x-scenario": "parallel-tools"}, _whole_openai_chat),
    "responses-text": ("openai", "/v1/responses", None, {"model": "gpt-4.1", "input": "hi"}, _whole_responses),
    "responses-tools": ("openai", "/v1/responses", None, {"model": "gpt-4.1", "input": "weather?", "tools": [{"type": "function", "name": "get_weather", "parameters": WEATHER}]}, _whole_responses),
    "anthropic-text": ("anthropic", "/v1/messages", None, {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "hi"}]}, _whole_anthropic),
    "anthropic-tools": ("anthropic", "/v1/messages", None, {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "weather?"}], "tools": [{"name": "get_weather", "input_schema": WEATHER}]}, _whole_anthropic),
    "gemini-text": ("gemini", f"{GEMINI}:generateContent", f"{GEMINI}:streamGenerateContent?alt=sse", {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, _whole_gemini),
    "gemini-tools": ("gemini", f"{GEMINI}:generateContent", f"{GEMINI}:streamGenerateContent?alt=sse", {"contents": [{"role": "user", "parts": [{"text": "weather?"}]}], "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": WEATHER}]}]}, _whole_gemini),
    # Without alt=sse Gemini streams one JSON array of chunks.
    "gemini-json-array": ("gemini", f"{GEMINI}:generateContent", f"{GEMINI}:streamGenerateContent", {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, _whole_gemini),
}  # fmt: skip


def _show(capsys: pytest.CaptureFixture[str], data_dir: Path, request_id: str, *extra: str) -> str:
    code = main(["show", request_id, "--data-dir", str(data_dir), *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _answer_section(out: str) -> str:
    return out.split(" ---\n", 2)[-1] if "--- response" in out else ""


@pytest.mark.parametrize("case", list(CASES))
def test_a_stream_reads_as_the_whole_answer(
    case: str, standin: StandIn, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    provider, whole_path, stream_path, body, read_whole = CASES[case]
    body = dict(body)
    headers = dict(HEADERS)
    if "x-scenario" in body:
        headers["x-standin-scenario"] = body.pop("x-scenario")
    whole = httpx.post(standin.url + whole_path, json=body, headers=headers)
    streamed_body = {**body, "stream": True} if stream_path is None else body
    streamed = httpx.post(standin.url + (stream_path or whole_path), json=streamed_body, headers=headers)
    assert whole.status_code == streamed.status_code == 200
    text, calls = read_whole(whole.json())
    assert text or calls

    record = make_record(
        BASE, provider=provider, stream=True, request_body=json.dumps(streamed_body), response_body=streamed.text
    )
    write_records(tmp_path, [record])
    answer = _answer_section(_show(capsys, tmp_path, record["request_id"]))
    blocks = answer.rstrip("\n").split("\n\n")
    if text:
        assert blocks.pop(0) == text
    shown_calls = []
    for block in blocks:
        name, _, arguments = block.removeprefix("tool call ").partition("(")
        shown_calls.append((name, json.loads(arguments.removesuffix(")"))))
    assert shown_calls == calls
    # --raw is the stream as relayed (a JSON array pretty-printed, as every JSON body).
    raw = _show(capsys, tmp_path, record["request_id"], "--raw")
    if streamed.text.startswith("["):
        assert json.dumps(streamed.json(), indent=2, ensure_ascii=False) in raw
    else:
        assert streamed.text.strip() in raw


def test_show_lists_the_prompt_tools_scores_and_feedback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    request = {
        "model": "claude-haiku-4-5",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}],
        "tools": [{"name": "lookup_order", "input_schema": {}}],
    }  # fmt: skip
    error = '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    record = make_record(BASE, provider="anthropic", status=529, request_body=json.dumps(request), response_body=error)
    write_records(tmp_path, [record])
    append_scores(tmp_path, score_lines(record["request_id"], {"feedback": False, "accuracy": 0.25}, "wrong", BASE))
    out = _show(capsys, tmp_path, record["request_id"][:8])
    assert "\nfeedback             bad (wrong)\nscore                accuracy = 0.25\n" in out
    assert out.endswith(
        "--- request ---\n[system]\nBe brief.\n\n[user]\nWhat is this?\n[image]\n\n[tools offered]\nlookup_order\n\n"
        "--- response ---\nerror: Overloaded\n"
    )


def test_an_answer_no_reader_knows_is_shown_as_relayed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = make_record(BASE, status=502, response_body="<html>Bad gateway</html>")
    write_records(tmp_path, [record])
    assert _show(capsys, tmp_path, record["request_id"]).endswith("--- response ---\n<html>Bad gateway</html>\n")
