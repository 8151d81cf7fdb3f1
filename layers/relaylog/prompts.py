"""Prompt templates: what makes two calls with the same `Helicone-Prompt-Id` the same version.

A request body is rendered as text, one block per message (`[role]` then its content), with the
system prompt first and each `<helicone-prompt-input key="k">value</helicone-prompt-input>` shown
as `{{k}}`: the template. Calls whose template text is equal are one version; a call with no
inputs marked has its plain messages as its template. Text, not JSON, so versions diff line by
line the way a person reads a prompt.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

import orjson

_INPUT = re.compile(r'<helicone-prompt-input\s+key\s*=\s*"([^"]*)"\s*>.*?</helicone-prompt-input>', re.DOTALL)


def abstract_inputs(text: str) -> str:
    return _INPUT.sub(lambda m: "{{" + m[1] + "}}", text)


def _part(part: Any) -> str:
    """One content part of any provider as text; media are named, never inlined."""
    if isinstance(part, str):
        return part
    if not isinstance(part, Mapping):
        return orjson.dumps(part).decode()
    text = part.get("text")
    if isinstance(text, str):  # OpenAI/Anthropic text parts, Gemini parts
        return text
    kind = part.get("type")
    if kind in ("image_url", "image", "input_image"):
        return "[image]"
    media = part.get("inlineData") or part.get("fileData")
    if isinstance(media, Mapping):  # Gemini
        return "[image]" if str(media.get("mimeType", "")).startswith("image/") else "[file]"
    if kind in ("input_audio", "audio"):
        return "[audio]"
    if kind in ("file", "document", "input_file"):
        return "[file]"
    if kind == "tool_use" or "functionCall" in part:
        call = part.get("functionCall") or part
        return f"tool call {call.get('name')}({orjson.dumps(call.get('input', call.get('args'))).decode()})"
    if kind == "tool_result" or "functionResponse" in part:
        result = part.get("content", (part.get("functionResponse") or {}).get("response"))
        return "tool result: " + _content(result)
    if kind is None:
        return _bedrock_part(part)
    return orjson.dumps(part, option=orjson.OPT_SORT_KEYS).decode()


def _bedrock_part(part: Mapping[str, Any]) -> str:
    """A Bedrock Converse content block, named by its one key (`{"toolUse": {...}}`)."""
    if isinstance(part.get("toolUse"), Mapping):
        use = part["toolUse"]
        return f"tool call {use.get('name')}({orjson.dumps(use.get('input')).decode()})"
    if isinstance(part.get("toolResult"), Mapping):
        return "tool result: " + _content(part["toolResult"].get("content"))
    if "json" in part:  # a tool result's JSON content
        return orjson.dumps(part["json"], option=orjson.OPT_SORT_KEYS).decode()
    for key, name in (("image", "[image]"), ("document", "[file]"), ("video", "[video]"), ("audio", "[audio]")):
        if key in part:
            return name
    if "cachePoint" in part or "reasoningContent" in part:
        return ""
    return orjson.dumps(part, option=orjson.OPT_SORT_KEYS).decode()


def _content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, list):
        return "\n".join(_part(p) for p in content)
    return _part(content)


def _message(message: Any) -> tuple[str, str]:
    if not isinstance(message, Mapping):
        return "message", _content(message)
    role = str(message.get("role") or "user")
    text = _content(message.get("content", message.get("parts")))
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function", {}) if isinstance(call, Mapping) else {}
            text += f"\ntool call {function.get('name')}({function.get('arguments', '')})"
    if role == "tool" and message.get("tool_call_id"):
        role = f"tool {message['tool_call_id']}"
    return role, text


def messages(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(role, text) for every message of an OpenAI, Anthropic, Gemini, Responses API or Bedrock body."""
    blocks: list[tuple[str, str]] = []
    system = body.get("system", body.get("instructions"))
    if system is not None:
        blocks.append(("system", _content(system)))
    gemini_system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(gemini_system, Mapping):
        blocks.append(("system", _content(gemini_system.get("parts"))))
    for key in ("messages", "contents", "input"):
        value = body.get(key)
        if isinstance(value, str):
            blocks.append(("user", value))
        elif isinstance(value, list):
            blocks.extend(_message(m) for m in value)
    if isinstance(body.get("chat_history"), list) and isinstance(body.get("message"), str):  # Cohere on Bedrock
        for turn in body["chat_history"]:
            if isinstance(turn, Mapping):
                blocks.append(("assistant" if turn.get("role") == "CHATBOT" else "user", _content(turn.get("message"))))
        blocks.append(("user", body["message"]))
    if not blocks:  # legacy completions, Llama, Mistral and Titan (`inputText`) on Bedrock
        for key in ("prompt", "inputText"):
            if isinstance(body.get(key), str):
                blocks.append(("prompt", body[key]))
    return blocks


def template_of(request_body: str | None) -> str | None:
    """The template text of a request body, or None when it is missing or not a JSON object."""
    if not request_body:
        return None
    try:
        body = orjson.loads(request_body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, Mapping):
        return None
    lines: list[str] = []
    for role, text in messages(body):
        lines.append(f"[{role}]")
        lines.extend(abstract_inputs(text).splitlines() or [""])
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        names = [str((t.get("function") or t).get("name", "?")) if isinstance(t, Mapping) else "?" for t in tools]
        lines.append("[tools]")
        lines.append(", ".join(names))
    return "\n".join(lines)


def template_hash(template: str) -> str:
    return hashlib.sha256(template.encode()).hexdigest()[:16]


class Version(TypedDict):
    version: int  # 1 for the first template seen, then in order of first use
    hash: str
    template: str
    first_seen: str
    last_seen: str
    requests: int
    cost_usd: float
    cost_unknown: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None


@dataclass(frozen=True, slots=True)
class Call:
    """What versioning needs of one request."""

    request_id: str
    created_at: str
    template: str
    cost_usd: float | None
    latency_ms: float | None


def _quantile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, as DuckDB's quantile_cont."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def versions(calls: Iterable[Call]) -> list[Version]:
    """One entry per distinct template, numbered by first use."""
    groups: dict[str, list[Call]] = {}
    for call in sorted(calls, key=lambda c: (c.created_at, c.request_id)):
        groups.setdefault(call.template, []).append(call)
    found: list[Version] = []
    for number, (template, members) in enumerate(groups.items(), start=1):
        latencies = sorted(c.latency_ms for c in members if c.latency_ms is not None)
        costs = [c.cost_usd for c in members if c.cost_usd is not None]
        found.append(
            Version(
                version=number,
                hash=template_hash(template),
                template=template,
                first_seen=members[0].created_at,
                last_seen=members[-1].created_at,
                requests=len(members),
                cost_usd=sum(costs),
                cost_unknown=len(members) - len(costs),
                latency_p50_ms=_quantile(latencies, 0.5),
                latency_p95_ms=_quantile(latencies, 0.95),
            )
        )
    return found


class DiffLine(TypedDict):
    op: str  # " " same, "-" only in the first, "+" only in the second
    text: str


def diff_lines(before: str, after: str) -> list[DiffLine]:
    """Every line of both texts in order, each marked kept, removed or added."""
    a, b = before.splitlines(), after.splitlines()
    out: list[DiffLine] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            out.extend(DiffLine(op=" ", text=line) for line in a[i1:i2])
            continue
        out.extend(DiffLine(op="-", text=line) for line in a[i1:i2])
        out.extend(DiffLine(op="+", text=line) for line in b[j1:j2])
    return out
