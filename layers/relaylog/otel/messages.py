"""Prompt content as the GenAI conventions' opt-in attributes: `gen_ai.system_instructions` and
`gen_ai.input.messages` from the request body, `gen_ai.output.messages` from the response.

Only called when the operator turned content capture on, and only from bodies the record holds:
a body omitted with Helicone-Omit-Request/-Response is not in the record and so never exported.
Messages follow the conventions' JSON schema (role, parts of type text, tool_call,
tool_call_response, reasoning, blob, uri, or the provider's own type), recorded on the span as JSON
text since span attributes cannot hold structures in the Python SDK. Bodies relaylog cannot read
(or formats without messages, such as embeddings) add nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai

from ..providers.registry import PROVIDERS, Family, wire_family
from ..record import Record
from .outputs import output_messages
from .parts import (
    Message,
    Part,
    anthropic_part,
    dicts,
    gemini_part,
    object_at,
    openai_part,
    text_parts,
    tool_call,
    tool_response,
)


def content_attributes(record: Record) -> dict[str, str]:
    provider = PROVIDERS.get(record["provider"])
    family: Family = wire_family(provider.family if provider is not None else "openai", record["endpoint"])
    endpoint = record["endpoint"].split("?", 1)[0]
    found: dict[str, str] = {}
    request = _json(record["request_body"])
    if isinstance(request, dict):
        system, messages = _inputs(family, endpoint, request)
        if system:
            found[gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS] = _dumps(system)
        if messages:
            found[gen_ai.GEN_AI_INPUT_MESSAGES] = _dumps(messages)
    body = record["response_body"]
    if body and record["status"] < 400:
        outputs = output_messages(family, endpoint, body.encode())
        if outputs:
            found[gen_ai.GEN_AI_OUTPUT_MESSAGES] = _dumps(outputs)
    return found


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _inputs(family: Family, endpoint: str, body: dict[str, Any]) -> tuple[list[Part], list[Message]]:
    if family == "anthropic":
        return _anthropic(body)
    if family == "gemini":
        return _gemini(body)
    if endpoint.endswith("/chat/completions"):
        return _openai_chat(body)
    if endpoint.endswith("/responses"):
        return _openai_responses(body)
    if endpoint.endswith("/completions"):
        prompt = body.get("prompt")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        return [], [{"role": "user", "parts": text_parts(p)} for p in prompts if isinstance(p, str)]
    return [], []


def _openai_chat(body: dict[str, Any]) -> tuple[list[Part], list[Message]]:
    system: list[Part] = []
    messages: list[Message] = []
    for message in dicts(body.get("messages")):
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_openai_content(message.get("content")))
            continue
        if role == "tool":
            parts: list[Part] = [tool_response(message.get("tool_call_id"), message.get("content"))]
        else:
            parts = _openai_content(message.get("content"))
            for call in dicts(message.get("tool_calls")):
                function = object_at(call, "function")
                parts.append(tool_call(call.get("id"), function.get("name"), function.get("arguments")))
        entry: Message = {"role": role if isinstance(role, str) else "user", "parts": parts}
        if isinstance(message.get("name"), str):
            entry["name"] = message["name"]
        messages.append(entry)
    return system, messages


def _openai_content(content: Any) -> list[Part]:
    if isinstance(content, list):
        return [openai_part(item) for item in content if isinstance(item, dict)]
    return text_parts(content)


def _openai_responses(body: dict[str, Any]) -> tuple[list[Part], list[Message]]:
    system = text_parts(body.get("instructions"))
    items = body.get("input")
    if isinstance(items, str):
        return system, [{"role": "user", "parts": text_parts(items)}]
    messages: list[Message] = []
    for item in dicts(items):
        kind = item.get("type")
        if kind == "function_call":
            call = tool_call(item.get("call_id"), item.get("name"), item.get("arguments"))
            messages.append({"role": "assistant", "parts": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "parts": [tool_response(item.get("call_id"), item.get("output"))]})
        elif "role" in item:
            role = item["role"]
            if role in ("system", "developer"):
                system.extend(_openai_content(item.get("content")))
            else:
                messages.append({"role": role, "parts": _openai_content(item.get("content"))})
    return system, messages


def _anthropic(body: dict[str, Any]) -> tuple[list[Part], list[Message]]:
    system_field = body.get("system")
    system = (
        [anthropic_part(b) for b in dicts(system_field)] if isinstance(system_field, list) else text_parts(system_field)
    )
    messages: list[Message] = []
    for message in dicts(body.get("messages")):
        content = message.get("content")
        parts = [anthropic_part(b) for b in dicts(content)] if isinstance(content, list) else text_parts(content)
        role = message.get("role")
        # A user turn made only of tool results is the tools answering.
        if parts and all(p["type"] == "tool_call_response" for p in parts):
            role = "tool"
        messages.append({"role": role if isinstance(role, str) else "user", "parts": parts})
    return system, messages


def _gemini(body: dict[str, Any]) -> tuple[list[Part], list[Message]]:
    instruction = body.get("systemInstruction") or body.get("system_instruction")
    system = [gemini_part(p) for p in dicts(instruction.get("parts"))] if isinstance(instruction, dict) else []
    messages: list[Message] = []
    for content in dicts(body.get("contents")):
        parts = [gemini_part(p) for p in dicts(content.get("parts"))]
        role = content.get("role")
        if parts and all(p["type"] == "tool_call_response" for p in parts):
            role = "tool"
        messages.append({"role": "assistant" if role == "model" else role or "user", "parts": parts})
    return system, messages
