"""Anthropic Messages API (`POST .../messages`, `.../messages/count_tokens`, `GET .../models`).

Scenario: header `x-standin-scenario`, else model `standin-<scenario>`, else `tool` when `tools`
are offered (a short text block comes first, then `tool_use`), else `text`. A `thinking` request
field (type enabled/adaptive) or the `reasoning` scenario adds a thinking block (thinking_delta +
signature_delta when streamed). `cached` reports cache_read_input_tokens=2048 and
cache_creation_input_tokens=512 (all 5-minute). `refusal` ends with stop_reason "refusal";
`stream-error` sends `event: error` (overloaded_error) after three text deltas.
"""

from __future__ import annotations

import json
from typing import Any

from .wire import (
    CACHE_WRITE_TOKENS,
    CACHED_PREFIX_TOKENS,
    CREATED_ISO,
    JSON_TYPE,
    SSE_TYPE,
    THINKING,
    TOOL_PREAMBLE,
    Ids,
    Plan,
    Reply,
    Request,
    dumps,
    json_pieces,
    make_plan,
    obj,
    pick_scenario,
    prompt_tokens,
    seed_for,
    sse,
    text_pieces,
)

FIELDS = ("messages", "system", "tools", "tool_choice", "thinking", "max_tokens")

ALIASES = {
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
    "claude-sonnet-4-0": "claude-sonnet-4-20250514",
    "claude-3-7-sonnet-latest": "claude-3-7-sonnet-20250219",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
}

# Anthropic bills the full thinking, which is longer than the thinking text it returns.
THINKING_TOKENS = 96


def headers(ids: Ids, content_type: str = JSON_TYPE) -> list[tuple[str, str]]:
    out = [("content-type", content_type)]
    if content_type == SSE_TYPE:
        out.append(("cache-control", "no-cache"))
    out += [
        ("request-id", request_id(ids)),
        ("anthropic-organization-id", "00000000-0000-4000-8000-00000057a9d1"),
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-requests-reset", CREATED_ISO),
        ("anthropic-ratelimit-input-tokens-limit", "2000000"),
        ("anthropic-ratelimit-input-tokens-remaining", "2000000"),
        ("anthropic-ratelimit-input-tokens-reset", CREATED_ISO),
        ("anthropic-ratelimit-output-tokens-limit", "400000"),
        ("anthropic-ratelimit-output-tokens-remaining", "400000"),
        ("anthropic-ratelimit-output-tokens-reset", CREATED_ISO),
        ("anthropic-ratelimit-tokens-limit", "2400000"),
        ("anthropic-ratelimit-tokens-remaining", "2400000"),
        ("anthropic-ratelimit-tokens-reset", CREATED_ISO),
        ("x-robots-tag", "none"),
    ]
    return out


def request_id(ids: Ids) -> str:
    return "req_011C" + ids.token("req", 20, Ids.B58)


_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "The stand-in was asked to reject this request (x-standin-fault status=400)."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization (00000000-0000-4000-8000-00000057a9d1) of 50 input tokens per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.",
    ),
    500: ("api_error", "Internal server error"),
    503: ("overloaded_error", "Overloaded"),
    504: ("timeout_error", "Request timeout"),
    529: ("overloaded_error", "Overloaded"),
}


def error(status: int, ids: Ids, message: str | None = None) -> Reply:
    kind, default = _ERRORS.get(
        status,
        ("api_error" if status >= 500 else "invalid_request_error", f"The stand-in answered with status {status}."),
    )
    payload = {"type": "error", "error": {"type": kind, "message": message or default}, "request_id": request_id(ids)}
    return Reply(status, headers(ids), dumps(payload), compress=True)


def raw_ids(req: Request) -> Ids:
    return seed_for(req.route, "", "error", {"raw": req.body.decode("utf-8", "replace")}, ("raw",))


def _parse(req: Request) -> dict[str, Any] | Reply:
    try:
        body = req.json()
    except ValueError:
        return error(400, raw_ids(req), "There was an error parsing the body of your request")
    if not isinstance(body, dict):
        return error(400, raw_ids(req), "Input should be a valid dictionary")
    for name in ("model", "messages"):
        if name not in body:
            return error(400, raw_ids(req), f"{name}: Field required")
    return body


def count_tokens(req: Request) -> Reply:
    body = _parse(req)
    if isinstance(body, Reply):
        return body
    ids = seed_for(req.route, str(body["model"]), "count", body, FIELDS)
    count = prompt_tokens(body.get("messages"), body.get("system"), body.get("tools"))
    return Reply(200, headers(ids), dumps({"input_tokens": count}), compress=True)


def models(req: Request) -> Reply:
    data = [
        {"type": "model", "id": full, "display_name": alias.replace("-", " ").title(), "created_at": CREATED_ISO}
        for alias, full in ALIASES.items()
    ]
    payload = {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
    return Reply(200, headers(seed_for(req.route, "", "models", {}, ())), dumps(payload), compress=True)


def messages(req: Request) -> Reply:
    body = _parse(req)
    if isinstance(body, Reply):
        return body
    if "max_tokens" not in body:
        return error(400, raw_ids(req), "max_tokens: Field required")
    model = str(body["model"])
    msg = message_for(req, body, model, ALIASES.get(model, model))
    if body.get("stream") is True:
        return msg.stream()
    if msg.plan.stream_error:
        return error(529, msg.ids)
    return Reply(200, headers(msg.ids), dumps(msg.complete()), compress=True)


def message_for(req: Request, body: dict[str, Any], model: str, reported_model: str) -> Message:
    """The answer to a Messages request body (also what Bedrock's InvokeModel relays for Claude)."""
    convo = body["messages"] if isinstance(body.get("messages"), list) else []
    tools = [
        (t.get("name", "tool"), t.get("input_schema"))
        for t in body.get("tools") or []
        if isinstance(t, dict) and "name" in t
    ]
    content = obj(convo[-1] if convo else None).get("content")
    after_tool = isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )
    implied = "tool" if tools and obj(body.get("tool_choice")).get("type") != "none" and not after_tool else "text"
    scenario = pick_scenario(req.header("x-standin-scenario"), model, implied)
    wants_thinking = obj(body.get("thinking")).get("type") in ("enabled", "adaptive")
    plan = make_plan(
        scenario, tools, after_tool=after_tool, reasoning_family=wants_thinking, max_tokens=body.get("max_tokens")
    )
    if plan.calls:
        plan.text = TOOL_PREAMBLE  # Claude usually says what it is about to do before calling
    return Message(seed_for(req.route, model, scenario, body, FIELDS), reported_model, plan, body)


class Message:
    __slots__ = ("ids", "input", "mid", "model", "output", "plan", "read", "write")

    def __init__(self, ids: Ids, model: str, plan: Plan, body: dict[str, Any]) -> None:
        self.ids, self.model, self.plan = ids, model, plan
        self.mid = "msg_01" + ids.token("id", 22, Ids.B58)
        self.input = prompt_tokens(body.get("messages"), body.get("system"), body.get("tools"))
        self.read = CACHED_PREFIX_TOKENS if plan.cached else 0
        self.write = CACHE_WRITE_TOKENS if plan.cached else 0
        self.output = plan.output_tokens() + (THINKING_TOKENS if plan.reasoning else 0)

    def usage(self, output: int) -> dict[str, Any]:
        return {
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.write,
            "cache_read_input_tokens": self.read,
            "cache_creation": {"ephemeral_5m_input_tokens": self.write, "ephemeral_1h_input_tokens": 0},
            "output_tokens": output,
            "service_tier": "standard",
        }

    def signature(self) -> str:
        return "Eq" + self.ids.token("sig", 200, Ids.B62 + "+/") + "=="

    def tool_id(self, index: int) -> str:
        return "toolu_01" + self.ids.token(f"tool{index}", 22, Ids.B58)

    def stop_reason(self) -> str:
        if self.plan.calls:
            return "tool_use"
        if self.plan.refusal is not None:
            return "refusal"
        return "max_tokens" if self.plan.truncated else "end_turn"

    def blocks(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.plan.reasoning:
            out.append({"type": "thinking", "thinking": THINKING, "signature": self.signature()})
        text = self.plan.refusal if self.plan.refusal is not None else self.plan.text
        if text:
            out.append({"type": "text", "text": text})
        for i, call in enumerate(self.plan.calls):
            out.append(
                {"type": "tool_use", "id": self.tool_id(i), "name": call.name, "input": json.loads(call.arguments)}
            )
        return out

    def complete(self) -> dict[str, Any]:
        return {
            "id": self.mid,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.blocks(),
            "stop_reason": self.stop_reason(),
            "stop_sequence": None,
            "usage": self.usage(self.output),
        }

    def stream(self) -> Reply:
        events: list[bytes] = []

        def emit(kind: str, payload: dict[str, Any]) -> None:
            events.append(sse(dumps({"type": kind, **payload}), kind))

        start: dict[str, Any] = {
            "model": self.model,
            "id": self.mid,
            "type": "message",
            "role": "assistant",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self.usage(1),
        }
        emit("message_start", {"message": start})
        for index, block in enumerate(self.blocks()):
            kind = block["type"]
            opening = (
                {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                if kind == "tool_use"
                else (
                    {"type": "thinking", "thinking": "", "signature": ""}
                    if kind == "thinking"
                    else {"type": "text", "text": ""}
                )
            )
            emit("content_block_start", {"index": index, "content_block": opening})
            if index == 0:
                # Anthropic's ping is serialised with spaces, unlike every other event.
                events.append(sse(b'{"type": "ping"}', "ping"))
            if kind == "thinking":
                for piece in text_pieces(THINKING):
                    emit(
                        "content_block_delta", {"index": index, "delta": {"type": "thinking_delta", "thinking": piece}}
                    )
                emit(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "signature_delta", "signature": block["signature"]}},
                )
            elif kind == "tool_use":
                # Real streams open every tool input with an empty fragment.
                for piece in [""] + json_pieces(dumps(block["input"]).decode()):
                    emit(
                        "content_block_delta",
                        {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
                    )
            else:
                pieces = text_pieces(block["text"])
                if self.plan.stream_error:
                    for piece in pieces[:3]:
                        emit("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
                    events.append(
                        sse(
                            b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
                            "error",
                        )
                    )
                    return Reply(200, headers(self.ids, SSE_TYPE), events=events, tail=0)
                for piece in pieces:
                    emit("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": piece}})
            emit("content_block_stop", {"index": index})
        final_usage = {
            "input_tokens": self.input,
            "cache_creation_input_tokens": self.write,
            "cache_read_input_tokens": self.read,
            "output_tokens": self.output,
        }
        emit(
            "message_delta", {"delta": {"stop_reason": self.stop_reason(), "stop_sequence": None}, "usage": final_usage}
        )
        emit("message_stop", {})
        return Reply(200, headers(self.ids, SSE_TYPE), events=events, tail=2)
