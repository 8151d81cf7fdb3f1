"""OpenAI Chat Completions (`POST .../chat/completions`), plus the headers and error bodies every
OpenAI-style endpoint shares.

Scenario for a chat call (see `wire.pick_scenario`): header `x-standin-scenario`, else model
`standin-<scenario>`, else `tool` when `tools` are offered (and `tool_choice` is not "none"),
else `text`. Models of a reasoning family (o1*, o3*, o4*, gpt-5* except gpt-5-chat*) always
report `completion_tokens_details.reasoning_tokens` (64/192/448 for low/medium/high effort).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from .wire import (
    CACHED_PREFIX_TOKENS,
    CREATED,
    JSON_TYPE,
    REASONING_EFFORT_TOKENS,
    SSE_TYPE,
    Ids,
    Plan,
    Reply,
    Request,
    dumps,
    dumps_pretty,
    json_pieces,
    make_plan,
    obfuscation,
    obj,
    pick_scenario,
    prompt_tokens,
    seed_for,
    sse,
    text_pieces,
)

# What OpenAI reports as `model` for an alias: the dated snapshot that served the call.
SNAPSHOTS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "gpt-4.1": "gpt-4.1-2025-04-14",
    "gpt-4.1-mini": "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano": "gpt-4.1-nano-2025-04-14",
    "o1": "o1-2024-12-17",
    "o3": "o3-2025-04-16",
    "o3-mini": "o3-mini-2025-01-31",
    "o4-mini": "o4-mini-2025-04-16",
    "gpt-5": "gpt-5-2025-08-07",
    "gpt-5-mini": "gpt-5-mini-2025-08-07",
    "gpt-5-nano": "gpt-5-nano-2025-08-07",
}

CHAT_FIELDS = (
    "messages",
    "tools",
    "tool_choice",
    "max_tokens",
    "max_completion_tokens",
    "reasoning_effort",
    "response_format",
)


def is_reasoning_model(model: str) -> bool:
    return model.startswith(("o1", "o3", "o4")) or (model.startswith("gpt-5") and "chat" not in model)


@functools.lru_cache(maxsize=256)
def fingerprint(model: str) -> str:
    return "fp_" + Ids(model.encode()).hex("fp", 10)


def headers(ids: Ids, content_type: str = JSON_TYPE) -> list[tuple[str, str]]:
    return [
        ("content-type", content_type),
        ("access-control-expose-headers", "X-Request-ID"),
        ("openai-organization", "user-standin"),
        ("openai-processing-ms", "42"),
        ("openai-project", "proj_standin"),
        ("openai-version", "2020-10-01"),
        ("x-ratelimit-limit-requests", "30000"),
        ("x-ratelimit-limit-tokens", "150000000"),
        ("x-ratelimit-remaining-requests", "29999"),
        ("x-ratelimit-remaining-tokens", "149999000"),
        ("x-ratelimit-reset-requests", "2ms"),
        ("x-ratelimit-reset-tokens", "0s"),
        ("x-request-id", "req_" + ids.hex("req", 32)),
        ("x-content-type-options", "nosniff"),
    ]


_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "The stand-in was asked to reject this request (x-standin-fault status=400)."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: bad-key. You can find your API key at https://platform.openai.com/account/api-keys.",
    ),
    403: (
        "invalid_request_error",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `unknown` does not exist or you do not have access to it.",
    ),
    409: ("invalid_request_error", None, "The request conflicted with another request."),
    413: ("invalid_request_error", None, "Request too large."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for gpt-4o-mini in organization org-standin on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s. Visit https://platform.openai.com/account/rate-limits to learn more.",
    ),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
    504: ("server_error", None, "Gateway timeout."),
}


def error(
    status: int, ids: Ids, message: str | None = None, *, param: str | None = None, code: str | None = None
) -> Reply:
    """An OpenAI error: `{"error": {message, type, param, code}}`, which OpenAI indents by four
    spaces and ends with a newline, unlike its two-space success bodies."""
    kind, default_code, default_message = _ERRORS.get(
        status,
        (
            "server_error" if status >= 500 else "invalid_request_error",
            None,
            f"The stand-in answered with status {status}.",
        ),
    )
    payload = {
        "error": {"message": message or default_message, "type": kind, "param": param, "code": code or default_code}
    }
    body = json.dumps(payload, indent=4, ensure_ascii=False).encode() + b"\n"
    return Reply(status, headers(ids), body, compress=True)


def raw_ids(req: Request) -> Ids:
    """Ids for answers given before the body could be read (bad JSON, bad key)."""
    return seed_for(req.route, "", "error", {"raw": req.body.decode("utf-8", "replace")}, ("raw",))


def parse_body(req: Request) -> dict[str, Any] | Reply:
    try:
        body = req.json()
    except ValueError:
        return error(
            400,
            raw_ids(req),
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. "
            "If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
        )
    if not isinstance(body, dict):
        return error(400, raw_ids(req), "Invalid type for request body: expected an object.")
    return body


def model_of(req: Request, body: dict[str, Any]) -> str:
    """The body's model, or an Azure deployment name taken from the path."""
    model = body.get("model")
    if isinstance(model, str) and model:
        return model
    parts = req.route.split("/")
    if "deployments" in parts and parts.index("deployments") + 1 < len(parts):
        return parts[parts.index("deployments") + 1]
    return ""


def response_schema(fmt: Any) -> Any:
    """The JSON schema a chat `response_format` asks the answer to follow, if any."""
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict):
        return fmt["json_schema"].get("schema") or {}
    if fmt.get("type") == "json_object":
        return {"type": "object", "properties": {"answer": {"type": "string"}}}
    return None


def usage(prompt: int, completion: int, cached: int, reasoning: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_completions(req: Request) -> Reply:
    body = parse_body(req)
    if isinstance(body, Reply):
        return body
    model = model_of(req, body)
    messages = body.get("messages")
    if not model:
        return error(400, raw_ids(req), "you must provide a model parameter")
    if not isinstance(messages, list):
        return error(
            400,
            raw_ids(req),
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not messages:
        return error(
            400,
            raw_ids(req),
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param="messages",
            code="empty_array",
        )

    tools = [
        (t["function"].get("name", "tool"), t["function"].get("parameters"))
        for t in body.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    after_tool = last.get("role") in ("tool", "function")
    implied = "tool" if tools and body.get("tool_choice") != "none" and not after_tool else "text"
    scenario = pick_scenario(req.header("x-standin-scenario"), model, implied)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    plan = make_plan(
        scenario,
        tools,
        after_tool=after_tool,
        reasoning_family=is_reasoning_model(model),
        max_tokens=limit,
        schema=response_schema(body.get("response_format")),
    )
    ids = seed_for(req.route, model, scenario, body, CHAT_FIELDS)

    prompt = prompt_tokens(messages, body.get("tools"))
    cached = CACHED_PREFIX_TOKENS if plan.cached else 0
    prompt += cached
    reasoning = REASONING_EFFORT_TOKENS.get(str(body.get("reasoning_effort") or "medium"), 192) if plan.reasoning else 0
    completion = plan.output_tokens() + reasoning
    use = usage(prompt, completion, cached, reasoning)
    tier = str(body["service_tier"]) if body.get("service_tier") in ("flex", "priority", "scale") else "default"
    info = _Chat(ids, SNAPSHOTS.get(model, model), tier)

    if body.get("stream") is True:
        options = obj(body.get("stream_options"))
        return info.stream(
            plan, use, options.get("include_usage") is True, options.get("include_obfuscation", True) is not False
        )
    if plan.stream_error:
        return error(500, ids)
    return info.complete(plan, use)


class _Chat:
    """Serialises one answer as a chat completion or as its chunk stream."""

    __slots__ = ("completion_id", "ids", "model", "tier")

    def __init__(self, ids: Ids, model: str, tier: str) -> None:
        self.ids, self.model, self.tier = ids, model, tier
        self.completion_id = "chatcmpl-" + ids.token("id", 29)

    def call_id(self, index: int) -> str:
        return "call_" + self.ids.token(f"call{index}", 24)

    def finish_reason(self, plan: Plan) -> str:
        if plan.calls:
            return "tool_calls"
        return "length" if plan.truncated else "stop"

    def complete(self, plan: Plan, use: dict[str, Any]) -> Reply:
        message: dict[str, Any] = {"role": "assistant", "content": plan.text}
        if plan.calls:
            message["tool_calls"] = [
                {"id": self.call_id(i), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for i, c in enumerate(plan.calls)
            ]
        message["refusal"] = plan.refusal
        message["annotations"] = []
        payload = {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": CREATED,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason(plan)}],
            "usage": use,
            "service_tier": self.tier,
            "system_fingerprint": fingerprint(self.model),
        }
        return Reply(200, headers(self.ids), dumps_pretty(payload), compress=True)

    def stream(self, plan: Plan, use: dict[str, Any], include_usage: bool, obfuscate: bool) -> Reply:
        # Chunks are assembled from bytes so that the two modes differ only by `,"usage":null`
        # in every chunk and the extra usage chunk, exactly like the real API.
        prefix = (
            b'{"id":"'
            + self.completion_id.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(CREATED).encode()
            + b',"model":'
            + dumps(self.model)
            + b',"service_tier":'
            + dumps(self.tier)
            + b',"system_fingerprint":"'
            + fingerprint(self.model).encode()
            + b'","choices":'
        )
        null_usage = b',"usage":null' if include_usage else b""
        events: list[bytes] = []

        def chunk(choices: bytes, usage_part: bytes, visible: int) -> None:
            tail = b"}"
            if obfuscate:
                tail = b',"obfuscation":"' + obfuscation(self.ids, len(events), visible).encode() + b'"}'
            events.append(sse(prefix + choices + usage_part + tail))

        def delta(d: dict[str, Any], finish: str | None = None) -> None:
            choice = {"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}
            chunk(b"[" + dumps(choice) + b"]", null_usage, sum(len(str(v)) for v in d.values()))

        if plan.calls:
            # No separate role chunk: the first tool-call delta carries the role, as OpenAI sends it.
            for i, call in enumerate(plan.calls):
                opening = {
                    "index": i,
                    "id": self.call_id(i),
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }
                first: dict[str, Any] = (
                    {"role": "assistant", "content": None, "tool_calls": [opening], "refusal": None}
                    if i == 0
                    else {"tool_calls": [opening]}
                )
                delta(first)
                for piece in json_pieces(call.arguments):
                    delta({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
        elif plan.refusal is not None:
            delta({"role": "assistant", "content": None, "refusal": ""})
            for piece in text_pieces(plan.refusal):
                delta({"refusal": piece})
        else:
            delta({"role": "assistant", "content": "", "refusal": None})
            pieces = plan.pieces()
            if plan.stream_error:
                for piece in pieces[:3]:
                    delta({"content": piece})
                failure = {"error": {"message": _ERRORS[500][2], "type": "server_error", "param": None, "code": None}}
                events.append(sse(dumps(failure)))
                return Reply(200, headers(self.ids, SSE_TYPE), events=events, tail=0)
            for piece in pieces:
                delta({"content": piece})
        closing_start = len(events)
        delta({}, self.finish_reason(plan))
        if include_usage:
            chunk(b"[]", b',"usage":' + dumps(use), 0)
        events.append(sse(b"[DONE]"))
        return Reply(200, headers(self.ids, SSE_TYPE), events=events, tail=len(events) - closing_start)
