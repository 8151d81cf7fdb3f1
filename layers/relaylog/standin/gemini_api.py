"""Gemini API: `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent` (with
`?alt=sse`: `data: {...}\\r\\n\\r\\n` events; without: one JSON array sent progressively as
`[{...}\\n,\\r\\n{...}\\n]`) and `:countTokens`. `/v1/models/...` works the same.

Scenario: header `x-standin-scenario`, else model `standin-<scenario>`, else `tool` when function
declarations are offered, else `text`. gemini-2.5* and gemini-3* models think (report
`thoughtsTokenCount`) unless `thinkingConfig.thinkingBudget` is 0; `includeThoughts` adds a
`"thought": true` part. `cached` reports `cachedContentTokenCount`; `refusal` is a SAFETY block.
An invalid key (`bad-key`) gets HTTP 400 API_KEY_INVALID, as Google really answers it.
"""

from __future__ import annotations

import json
from typing import Any

from .wire import (
    CACHED_PREFIX_TOKENS,
    THINKING,
    Ids,
    Plan,
    Reply,
    Request,
    dumps_pretty,
    make_plan,
    pick_scenario,
    prompt_tokens,
    seed_for,
    text_pieces,
)

FIELDS = ("contents", "systemInstruction", "system_instruction", "tools", "generationConfig", "generation_config")
THOUGHT_TOKENS = 160
_STATUS = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: (
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
    ),
    403: (
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
    ),
    404: ("NOT_FOUND", "models/unknown is not found for API version v1beta, or is not supported for generateContent."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
    ),
    500: (
        "INTERNAL",
        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    ),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
}


def headers(content_type: str = "application/json; charset=UTF-8") -> list[tuple[str, str]]:
    out = [("content-type", content_type)]
    if content_type == "text/event-stream":
        out.append(("content-disposition", "attachment"))
    return out + [
        ("vary", "Origin"),
        ("vary", "X-Origin"),
        ("vary", "Referer"),
        ("server", "scaffolding on HTTPServer2"),
        ("x-xss-protection", "0"),
        ("x-frame-options", "SAMEORIGIN"),
        ("x-content-type-options", "nosniff"),
        ("server-timing", "gfet4t7; dur=42"),
    ]


def error(status: int, message: str | None = None, retry_after: str | None = None, reason: str | None = None) -> Reply:
    name, default = _STATUS.get(
        status, ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION", f"The stand-in answered with status {status}.")
    )
    err: dict[str, Any] = {"code": status, "message": message or default, "status": name}
    if reason:
        err["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        ]
    elif status == 429:
        err["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after or 20}s"}]
    return Reply(status, headers(), dumps_pretty({"error": err}) + b"\n", compress=True)


def bad_key(req: Request) -> bool:
    auth = req.header("authorization") or ""
    return req.header("x-goog-api-key") == "bad-key" or req.query.get("key") == "bad-key" or auth == "Bearer bad-key"


def handle(req: Request) -> Reply:
    last = req.route.rsplit("/", 1)[-1]
    model, _, method = last.partition(":")
    try:
        body = req.json()
    except ValueError:
        return error(400, "Invalid JSON payload received. Unexpected token.")
    if not isinstance(body, dict):
        return error(400, "Invalid JSON payload received. Expected an object.")
    contents = body.get("contents")
    if method == "countTokens":
        count = prompt_tokens(contents, body.get("systemInstruction"))
        return Reply(
            200,
            headers(),
            dumps_pretty({"totalTokens": count, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": count}]}),
            compress=True,
        )
    if not isinstance(contents, list) or not contents:
        return error(400, "* GenerateContentRequest.contents: contents is not specified\n")
    tools = [
        (decl.get("name", "tool"), decl.get("parameters") or decl.get("parametersJsonSchema"))
        for tool in body.get("tools") or []
        if isinstance(tool, dict)
        for decl in (tool.get("functionDeclarations") or tool.get("function_declarations") or [])
        if isinstance(decl, dict)
    ]
    parts = contents[-1].get("parts") if isinstance(contents[-1], dict) else None
    after_tool = isinstance(parts, list) and any(
        isinstance(p, dict) and ("functionResponse" in p or "function_response" in p) for p in parts
    )
    implied = "tool" if tools and not after_tool else "text"
    scenario = pick_scenario(req.header("x-standin-scenario"), model, implied)
    config = body.get("generationConfig") or body.get("generation_config") or {}
    thinking = config.get("thinkingConfig") or config.get("thinking_config") or {}
    thinks = (
        model.startswith(("gemini-2.5", "gemini-3"))
        and thinking.get("thinkingBudget", thinking.get("thinking_budget")) != 0
    )
    schema = config.get("responseJsonSchema") or config.get("responseSchema") or config.get("response_schema")
    if schema is None and config.get("responseMimeType") == "application/json":
        schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    plan = make_plan(
        scenario,
        tools,
        after_tool=after_tool,
        reasoning_family=thinks,
        max_tokens=config.get("maxOutputTokens"),
        schema=schema,
    )
    answer = _Answer(
        seed_for(req.route.rsplit(":", 1)[0], model, scenario, body, FIELDS),
        model,
        plan,
        body,
        bool(thinking.get("includeThoughts") or thinking.get("include_thoughts")),
    )
    if method == "streamGenerateContent":
        return answer.stream(req.query.get("alt") == "sse")
    if plan.stream_error:
        return error(503)
    return Reply(
        200, headers(), dumps_pretty(answer.chunk(answer.all_parts(), True, answer.output)) + b"\n", compress=True
    )


def _compact(value: Any) -> bytes:
    """Google's SSE JSON: a space after each colon but none after commas."""
    return json.dumps(value, separators=(",", ": "), ensure_ascii=False).encode()


class _Answer:
    __slots__ = ("cached", "ids", "model", "output", "plan", "prompt", "response_id", "show_thoughts", "thoughts")

    def __init__(self, ids: Ids, model: str, plan: Plan, body: dict[str, Any], show_thoughts: bool) -> None:
        self.ids, self.model, self.plan, self.show_thoughts = ids, model, plan, show_thoughts
        self.cached = CACHED_PREFIX_TOKENS if plan.cached else 0
        self.prompt = (
            prompt_tokens(body.get("contents"), body.get("systemInstruction"), body.get("tools")) + self.cached
        )
        self.thoughts = THOUGHT_TOKENS if plan.reasoning else 0
        self.output = plan.output_tokens()
        self.response_id = ids.token("resp", 23)

    def usage(self, candidates: int) -> dict[str, Any]:
        use: dict[str, Any] = {"promptTokenCount": self.prompt}
        if candidates:
            use["candidatesTokenCount"] = candidates
        use["totalTokenCount"] = self.prompt + candidates + self.thoughts
        if self.cached:
            use["cachedContentTokenCount"] = self.cached
        use["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.prompt}]
        if self.cached:
            use["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": self.cached}]
        if self.thoughts:
            use["thoughtsTokenCount"] = self.thoughts
        return use

    def finish(self) -> str:
        if self.plan.refusal is not None:
            return "SAFETY"
        return "MAX_TOKENS" if self.plan.truncated else "STOP"

    def call_parts(self) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        for i, call in enumerate(self.plan.calls):
            part: dict[str, Any] = {"functionCall": {"name": call.name, "args": json.loads(call.arguments)}}
            if i == 0 and self.plan.reasoning:
                part["thoughtSignature"] = self.ids.token("sig", 120, Ids.B62 + "+/")
            parts.append(part)
        return parts

    def all_parts(self) -> list[dict[str, Any]]:
        parts = [{"text": THINKING, "thought": True}] if self.show_thoughts and self.plan.reasoning else []
        if self.plan.text:
            parts.append({"text": self.plan.text})
        return parts + self.call_parts()

    def chunk(self, parts: list[dict[str, Any]], last: bool, candidates: int) -> dict[str, Any]:
        candidate: dict[str, Any] = {}
        if self.plan.refusal is not None:
            candidate = {
                "finishReason": "SAFETY",
                "index": 0,
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
                ],
            }
        else:
            candidate["content"] = {"parts": parts, "role": "model"}
            if last:
                candidate["finishReason"] = self.finish()
            candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": self.usage(candidates),
            "modelVersion": self.model,
            "responseId": self.response_id,
        }

    def stream(self, as_sse: bool) -> Reply:
        """Text arrives in three chunks, each with cumulative usage; the finish reason rides on the
        last one."""
        groups: list[list[dict[str, Any]]] = []
        if self.show_thoughts and self.plan.reasoning:
            groups.append([{"text": THINKING, "thought": True}])
        pieces = self.plan.pieces()
        size = max(1, -(-len(pieces) // 3))
        groups += [[{"text": "".join(pieces[i : i + size])}] for i in range(0, len(pieces), size)]
        if self.plan.calls:
            groups.append(self.call_parts())
        if not groups:
            groups.append([])
        payloads: list[dict[str, Any]] = []
        for n, parts in enumerate(groups):
            done = n == len(groups) - 1
            text_so_far = sum(
                len(text_pieces(p["text"])) for g in groups[: n + 1] for p in g if "text" in p and not p.get("thought")
            )
            payloads.append(self.chunk(parts, done, self.output if done else max(text_so_far, 1)))
        error_at = 1 if self.plan.stream_error else None
        if error_at is not None:
            payloads = payloads[:error_at] + [
                {"error": {"code": 503, "message": _STATUS[503][1], "status": "UNAVAILABLE"}}
            ]
        if as_sse:
            events = [b"data: " + _compact(p) + b"\r\n\r\n" for p in payloads]
            return Reply(200, headers("text/event-stream"), events=events, tail=0 if error_at else 1)
        events = [(b"[" if i == 0 else b"\n,\r\n") + dumps_pretty(p) for i, p in enumerate(payloads)] + [b"\n]"]
        return Reply(200, headers(), events=events, tail=0 if error_at else 2)
