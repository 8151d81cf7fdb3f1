"""OpenAI Responses API (`POST .../responses`): a response object, or its typed SSE stream
(`event:` + `data:` lines, every event numbered by `sequence_number`).

Scenario choice is the same as for chat (`openai_api`): the header, a `standin-<scenario>` model,
`tool` when function tools are offered, and reasoning tokens for reasoning-family models. An
`input` whose last item is a `function_call_output` is answered in text. Reasoning answers start
with a `reasoning` output item (with a summary when `reasoning.summary` is set).
"""

from __future__ import annotations

from typing import Any

from .openai_api import (
    SNAPSHOTS,
    error,
    headers,
    is_reasoning_model,
    parse_body,
    raw_ids,
)
from .wire import (
    CACHED_PREFIX_TOKENS,
    CREATED,
    REASONING_EFFORT_TOKENS,
    SSE_TYPE,
    THINKING,
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

FIELDS = (
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "reasoning",
    "text",
    "previous_response_id",
)


def responses(req: Request) -> Reply:
    body = parse_body(req)
    if isinstance(body, Reply):
        return body
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error(
            400, raw_ids(req), "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
        )
    items = body.get("input")
    tools = [
        (t.get("name", "tool"), t.get("parameters"))
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type") == "function"
    ]
    after_tool = (
        isinstance(items, list)
        and bool(items)
        and isinstance(items[-1], dict)
        and items[-1].get("type") == "function_call_output"
    )
    implied = "tool" if tools and body.get("tool_choice") != "none" and not after_tool else "text"
    scenario = pick_scenario(req.header("x-standin-scenario"), model, implied)
    fmt = obj(obj(body.get("text")).get("format"))
    schema = (fmt.get("schema") or {}) if fmt.get("type") == "json_schema" else None
    plan = make_plan(
        scenario,
        tools,
        after_tool=after_tool,
        reasoning_family=is_reasoning_model(model),
        max_tokens=body.get("max_output_tokens"),
        schema=schema,
    )
    built = _Response(seed_for(req.route, model, scenario, body, FIELDS), body, model, plan)
    if body.get("stream") is True:
        return built.stream()
    if plan.stream_error:
        return error(500, built.ids)
    return Reply(200, headers(built.ids), dumps_pretty(built.envelope("final", built.items())), compress=True)


class _Response:
    __slots__ = ("body", "ids", "model", "plan", "reasoning", "rid", "summary", "usage")

    def __init__(self, ids: Ids, body: dict[str, Any], model: str, plan: Plan) -> None:
        self.ids, self.body, self.plan = ids, body, plan
        self.model = SNAPSHOTS.get(model, model)
        self.rid = "resp_" + ids.hex("resp", 48)
        cfg = obj(body.get("reasoning"))
        effort = cfg.get("effort") or ("medium" if plan.reasoning else None)
        self.reasoning = {"effort": effort, "summary": cfg.get("summary")}
        self.summary = plan.reasoning and bool(cfg.get("summary"))
        tokens = REASONING_EFFORT_TOKENS.get(str(effort), 192) if plan.reasoning else 0
        cached = CACHED_PREFIX_TOKENS if plan.cached else 0
        prompt = prompt_tokens(body.get("input"), body.get("instructions"), body.get("tools")) + cached
        output = plan.output_tokens() + tokens
        self.usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": tokens},
            "total_tokens": prompt + output,
        }

    # -- output items -----------------------------------------------------------------------

    def item_id(self, prefix: str, index: int) -> str:
        return f"{prefix}_" + self.ids.hex(f"{prefix}{index}", 48)

    def items(self) -> list[dict[str, Any]]:
        """The finished output items, in order."""
        out: list[dict[str, Any]] = []
        if self.plan.reasoning:
            out.append(self.reasoning_item(done=True))
        for i, call in enumerate(self.plan.calls):
            out.append(self.call_item(i, call.name, call.arguments, done=True))
        if self.plan.text is not None or self.plan.refusal is not None:
            out.append(self.message_item(done=True))
        return out

    def reasoning_item(self, done: bool) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.item_id("rs", 0), "type": "reasoning"}
        include = self.body.get("include") or []
        if isinstance(include, list) and "reasoning.encrypted_content" in include:
            item["encrypted_content"] = "gAAAAA" + self.ids.token("enc", 120)
        item["summary"] = [{"type": "summary_text", "text": THINKING}] if done and self.summary else []
        return item

    def call_item(self, index: int, name: str, arguments: str, done: bool) -> dict[str, Any]:
        return {
            "id": self.item_id("fc", index),
            "type": "function_call",
            "status": "completed" if done else "in_progress",
            "arguments": arguments if done else "",
            "call_id": "call_" + self.ids.token(f"call{index}", 24),
            "name": name,
        }

    def part(self, done: bool) -> dict[str, Any]:
        if self.plan.refusal is not None:
            return {"type": "refusal", "refusal": self.plan.refusal if done else ""}
        return {
            "type": "output_text",
            "annotations": [],
            "logprobs": [],
            "text": (self.plan.text or "") if done else "",
        }

    def message_item(self, done: bool) -> dict[str, Any]:
        status = ("incomplete" if self.plan.truncated else "completed") if done else "in_progress"
        return {
            "id": self.item_id("msg", 0),
            "type": "message",
            "status": status,
            "content": [self.part(True)] if done else [],
            "role": "assistant",
        }

    # -- the response object ----------------------------------------------------------------

    def envelope(self, stage: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        """The response object; `stage` is "start" (created/in_progress), "final" or "failed"."""
        body = self.body
        final = stage == "final"
        status = {"start": "in_progress", "failed": "failed"}.get(
            stage, "incomplete" if self.plan.truncated else "completed"
        )
        text = {"format": {"type": "text"}, "verbosity": "medium"}
        if isinstance(body.get("text"), dict):
            text.update(body["text"])
        tools = [
            dict({"strict": True}, **t) if t.get("type") == "function" else t
            for t in body.get("tools") or []
            if isinstance(t, dict)
        ]
        return {
            "id": self.rid,
            "object": "response",
            "created_at": CREATED,
            "status": status,
            "background": False,
            "billing": {"payer": "developer"},
            "completed_at": CREATED + 1 if final and not self.plan.truncated else None,
            "error": {
                "code": "server_error",
                "message": "The server had an error while processing your request. Sorry about that!",
            }
            if stage == "failed"
            else None,
            "incomplete_details": {"reason": "max_output_tokens"} if final and self.plan.truncated else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "max_tool_calls": body.get("max_tool_calls"),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "prompt_cache_retention": None,
            "reasoning": self.reasoning,
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": "default" if final else "auto",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": text,
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": tools,
            "top_logprobs": body.get("top_logprobs", 0),
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation", "disabled"),
            "usage": self.usage if final else None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }

    # -- the stream -------------------------------------------------------------------------

    def stream(self) -> Reply:
        obfuscate = not (
            isinstance(self.body.get("stream_options"), dict)
            and self.body["stream_options"].get("include_obfuscation") is False
        )
        events: list[bytes] = []

        def emit(kind: str, fields: dict[str, Any]) -> None:
            payload = {"type": kind, "sequence_number": len(events), **fields}
            if obfuscate and "delta" in fields:
                payload["obfuscation"] = obfuscation(self.ids, len(events), len(fields["delta"]))
            events.append(sse(dumps(payload), kind))

        emit("response.created", {"response": self.envelope("start", [])})
        emit("response.in_progress", {"response": self.envelope("start", [])})
        index = 0
        if self.plan.reasoning:
            self._reasoning_events(emit, index)
            index += 1
        for i, call in enumerate(self.plan.calls):
            item = self.call_item(i, call.name, call.arguments, done=False)
            emit("response.output_item.added", {"output_index": index, "item": item})
            for piece in json_pieces(call.arguments):
                emit(
                    "response.function_call_arguments.delta",
                    {"item_id": item["id"], "output_index": index, "delta": piece},
                )
            emit(
                "response.function_call_arguments.done",
                {"item_id": item["id"], "output_index": index, "arguments": call.arguments},
            )
            emit(
                "response.output_item.done",
                {"output_index": index, "item": self.call_item(i, call.name, call.arguments, done=True)},
            )
            index += 1
        has_message = self.plan.text is not None or self.plan.refusal is not None
        if has_message and self._message_events(emit, index):
            return Reply(200, headers(self.ids, SSE_TYPE), events=events, tail=0)
        final = "response.incomplete" if self.plan.truncated else "response.completed"
        emit(final, {"response": self.envelope("final", self.items())})
        return Reply(200, headers(self.ids, SSE_TYPE), events=events, tail=1)

    def _reasoning_events(self, emit: Any, index: int) -> None:
        item = self.reasoning_item(done=False)
        emit("response.output_item.added", {"output_index": index, "item": item})
        if self.summary:
            where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
            emit("response.reasoning_summary_part.added", {**where, "part": {"type": "summary_text", "text": ""}})
            for piece in text_pieces(THINKING):
                emit("response.reasoning_summary_text.delta", {**where, "delta": piece})
            emit("response.reasoning_summary_text.done", {**where, "text": THINKING})
            emit("response.reasoning_summary_part.done", {**where, "part": {"type": "summary_text", "text": THINKING}})
        emit("response.output_item.done", {"output_index": index, "item": self.reasoning_item(done=True)})

    def _message_events(self, emit: Any, index: int) -> bool:
        """The message item's events; True when the stream-error scenario cut the stream short."""
        item = self.message_item(done=False)
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        emit("response.output_item.added", {"output_index": index, "item": item})
        emit("response.content_part.added", {**where, "part": self.part(False)})
        if self.plan.refusal is not None:
            for piece in text_pieces(self.plan.refusal):
                emit("response.refusal.delta", {**where, "delta": piece})
            emit("response.refusal.done", {**where, "refusal": self.plan.refusal})
        else:
            pieces = self.plan.pieces()
            if self.plan.stream_error:
                for piece in pieces[:3]:
                    emit("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
                message = "The server had an error while processing your request. Sorry about that!"
                emit("error", {"code": "server_error", "message": message, "param": None})
                emit("response.failed", {"response": self.envelope("failed", [])})
                return True
            for piece in pieces:
                emit("response.output_text.delta", {**where, "delta": piece, "logprobs": []})
            emit("response.output_text.done", {**where, "text": self.plan.text, "logprobs": []})
        emit("response.content_part.done", {**where, "part": self.part(True)})
        emit("response.output_item.done", {"output_index": index, "item": self.message_item(done=True)})
        return False
