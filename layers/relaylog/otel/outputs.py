"""The model's answer as `gen_ai.output.messages`: one message per choice or candidate, streams
put back together from their deltas."""

from __future__ import annotations

from typing import Any

import orjson

from ..providers.registry import Family
from ..providers.sse import sse_events
from .parts import (
    Message,
    Part,
    anthropic_part,
    dicts,
    gemini_part,
    index_of,
    object_at,
    openai_part,
    text_parts,
    tool_call,
)


def output_messages(family: Family, endpoint: str, body: bytes) -> list[Message]:
    head = body.lstrip()[:1]
    if head in (b"{", b"["):
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            return []
        chunks = obj if isinstance(obj, list) else [obj]
    else:
        chunks = []
        for _name, data in sse_events(body):
            try:
                chunks.append(orjson.loads(data))
            except orjson.JSONDecodeError:
                continue  # [DONE], or an event cut short
        chunks = [c for c in chunks if isinstance(c, dict)]
    if family == "anthropic":
        return _anthropic(chunks)
    if family == "gemini":
        return _gemini(chunks)
    if endpoint.endswith("/responses"):
        return _openai_responses(chunks)
    return _openai_choices(chunks)


def _openai_choices(chunks: list[dict[str, Any]]) -> list[Message]:
    """Chat completions and legacy completions, whole (`message`) or streamed (`delta`)."""
    built: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in dicts(chunk.get("choices")):
            state = built.setdefault(index_of(choice, 0), {"text": [], "parts": [], "calls": {}, "finish": None})
            if isinstance(choice.get("text"), str):
                state["text"].append(choice["text"])
            message = choice.get("message") or choice.get("delta")
            if isinstance(message, dict):
                for key in ("content", "refusal"):
                    if isinstance(message.get(key), str):
                        state["text"].append(message[key])
                    elif isinstance(message.get(key), list):
                        state["parts"].extend(openai_part(p) for p in dicts(message[key]))
                for position, call in enumerate(dicts(message.get("tool_calls"))):
                    empty = {"id": None, "name": None, "arguments": ""}
                    slot = state["calls"].setdefault(index_of(call, position), empty)
                    function = object_at(call, "function")
                    slot["id"] = call.get("id") or slot["id"]
                    slot["name"] = function.get("name") or slot["name"]
                    if isinstance(function.get("arguments"), str):
                        slot["arguments"] += function["arguments"]
            if choice.get("finish_reason"):
                state["finish"] = choice["finish_reason"]
    messages: list[Message] = []
    for index in sorted(built):
        state = built[index]
        parts = text_parts("".join(state["text"])) + state["parts"]
        parts += [tool_call(c["id"], c["name"], c["arguments"]) for _, c in sorted(state["calls"].items())]
        messages.append(_message(parts, state["finish"]))
    return messages


def _openai_responses(chunks: list[dict[str, Any]]) -> list[Message]:
    # A whole response, or a stream whose final event carries the whole response.
    response = next((c["response"] for c in reversed(chunks) if isinstance(c.get("response"), dict)), None)
    if response is None and chunks and chunks[-1].get("object") == "response":
        response = chunks[-1]
    if response is None:
        return []
    parts: list[Part] = []
    for item in dicts(response.get("output")):
        kind = item.get("type")
        if kind == "message":
            parts.extend(openai_part(p) for p in dicts(item.get("content")))
        elif kind == "function_call":
            parts.append(tool_call(item.get("call_id"), item.get("name"), item.get("arguments")))
        elif kind == "reasoning":
            parts.extend({"type": "reasoning", "content": s.get("text")} for s in dicts(item.get("summary")))
    details = response.get("incomplete_details")
    finish = details.get("reason") if isinstance(details, dict) else None
    return [_message(parts, finish)]


def _anthropic(chunks: list[dict[str, Any]]) -> list[Message]:
    if len(chunks) == 1 and chunks[0].get("type") == "message":
        message = chunks[0]
        return [_message([anthropic_part(b) for b in dicts(message.get("content"))], message.get("stop_reason"))]
    blocks: dict[int, dict[str, Any]] = {}
    finish = None
    for event in chunks:
        kind = event.get("type")
        index = index_of(event, 0)
        if kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            blocks[index] = dict(event["content_block"], _json="")
        elif kind == "content_block_delta" and index in blocks and isinstance(event.get("delta"), dict):
            delta, block = event["delta"], blocks[index]
            for key in ("text", "thinking"):
                if isinstance(delta.get(key), str):
                    block[key] = block.get(key, "") + delta[key]
            if isinstance(delta.get("partial_json"), str):
                block["_json"] += delta["partial_json"]
        elif kind == "message_delta" and isinstance(event.get("delta"), dict):
            finish = event["delta"].get("stop_reason") or finish
    parts = []
    for _, block in sorted(blocks.items()):
        if block.get("type") == "tool_use" and block["_json"]:
            block["input"] = block["_json"]  # decoded by tool_call
        parts.append(anthropic_part(block))
    return [_message(parts, finish)] if parts or finish else []


def _gemini(chunks: list[dict[str, Any]]) -> list[Message]:
    built: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for position, candidate in enumerate(dicts(chunk.get("candidates"))):
            state = built.setdefault(index_of(candidate, position), {"parts": [], "finish": None})
            content = candidate.get("content")
            for part in dicts(content.get("parts") if isinstance(content, dict) else None):
                converted = gemini_part(part)
                last = state["parts"][-1] if state["parts"] else None
                # Streamed text arrives in pieces of the same kind: join them into one part.
                if last and converted["type"] in ("text", "reasoning") and last["type"] == converted["type"]:
                    last["content"] += converted["content"]
                else:
                    state["parts"].append(converted)
            if candidate.get("finishReason"):
                state["finish"] = candidate["finishReason"]
    return [_message(built[i]["parts"], built[i]["finish"]) for i in sorted(built)]


def _message(parts: list[Part], finish: Any) -> Message:
    message: Message = {"role": "assistant", "parts": parts}
    if isinstance(finish, str):
        message["finish_reason"] = finish
    return message
