"""Amazon Bedrock Runtime's InvokeModel and InvokeModelWithResponseStream for the model families
whose bodies are their own (docs.aws.amazon.com/bedrock/latest/userguide/model-parameters.html):
Anthropic Claude (Messages, `anthropic_version` required), Meta Llama, Amazon Titan Text, Mistral
and Cohere Command R. Amazon Nova shares Converse's shapes and lives in `bedrock_api`.

Each answers with the family's own body and Bedrock's `X-Amzn-Bedrock-*-Token-Count` headers; a
stream sends each of the family's events as a `chunk` frame, the invocation metrics in the last.
"""

from __future__ import annotations

from typing import Any

import orjson

from . import anthropic_api
from .bedrock_replies import FIELDS, chunks, error, invocation_metrics, invoked, non_stream, request_id
from .wire import Ids, Plan, Reply, Request, UsageError, estimate_tokens, make_plan, obj, pick_scenario, seed_for


def bare_model(model: str) -> str:
    """The foundation model of a model id, a cross-region profile id or an ARN."""
    model = model.rsplit("/", 1)[-1]
    first, _, rest = model.partition(".")
    return rest if first in ("us", "eu", "apac", "global", "jp", "au", "ca", "us-gov", "in") and "." in rest else model


def anthropic(req: Request, model: str, body: dict[str, Any], stream: bool) -> Reply:
    if "anthropic_version" not in body:
        return error(
            400,
            "Malformed input request: #: required key [anthropic_version] not found, please reformat your input and try again.",
        )
    if not isinstance(body.get("messages"), list) or "max_tokens" not in body:
        return error(
            400,
            "Malformed input request: #: required key [messages, max_tokens] not found, please reformat your input and try again.",
        )
    bare = bare_model(model)
    reported = bare.removeprefix("anthropic.").rsplit("-v", 1)[0]  # Claude's own name, without Bedrock's version
    msg = anthropic_api.message_for(req, body, model, reported)
    if not stream:
        if msg.plan.stream_error:
            return error(424, ids=msg.ids)
        return invoked(msg.ids, msg.complete(), msg.input, msg.output, msg.read, msg.write)
    events = []
    for raw in msg.stream().events or []:
        name, _, data = raw.partition(b"\ndata: ")
        if name != b"event: ping":  # Bedrock does not relay Anthropic's keep-alive pings
            events.append(orjson.loads(data))
    if events and events[-1].get("type") == "error":
        events.pop()
    return chunks(
        req, msg.ids, events, msg.plan, invocation_metrics(msg.input, msg.output, msg.read, msg.write), closing=2
    )


def _text_plan(req: Request, model: str, body: dict[str, Any], limit: Any) -> tuple[Plan, Ids]:
    scenario = pick_scenario(req.header("x-standin-scenario"), model, "text")
    if scenario in ("tool", "parallel-tools"):
        raise UsageError(f"scenario {scenario!r} needs Converse or a model that calls tools")
    return make_plan(scenario, [], after_tool=False, reasoning_family=False, max_tokens=limit), seed_for(
        req.route, model, scenario, body, FIELDS
    )


def llama(req: Request, model: str, body: dict[str, Any], stream: bool) -> Reply:
    plan, ids = _text_plan(req, model, body, body.get("max_gen_len"))
    prompt, output = max(1, estimate_tokens(body.get("prompt"))), plan.output_tokens()
    reason = "length" if plan.truncated else "stop"
    if not stream:
        return non_stream(
            plan,
            ids,
            {
                "generation": _text(plan),
                "prompt_token_count": prompt,
                "generation_token_count": output,
                "stop_reason": reason,
            },
            prompt,
            output,
        )
    pieces = plan.pieces()
    events = [
        {
            "generation": piece,
            "prompt_token_count": prompt if i == 0 else None,
            "generation_token_count": i + 1,
            "stop_reason": None,
        }
        for i, piece in enumerate(pieces)
    ]
    events.append(
        {"generation": "", "prompt_token_count": None, "generation_token_count": output, "stop_reason": reason}
    )
    return chunks(req, ids, events, plan, invocation_metrics(prompt, output), closing=1)


def titan(req: Request, model: str, body: dict[str, Any], stream: bool) -> Reply:
    plan, ids = _text_plan(req, model, body, obj(body.get("textGenerationConfig")).get("maxTokenCount"))
    prompt, output = max(1, estimate_tokens(body.get("inputText"))), plan.output_tokens()
    reason = "LENGTH" if plan.truncated else "FINISH"
    if not stream:
        return non_stream(
            plan,
            ids,
            {
                "inputTextTokenCount": prompt,
                "results": [{"tokenCount": output, "outputText": _text(plan), "completionReason": reason}],
            },
            prompt,
            output,
        )
    events = [
        {
            "outputText": piece,
            "index": 0,
            "totalOutputTextTokenCount": i + 1,
            "completionReason": None,
            "inputTextTokenCount": prompt if i == 0 else None,
        }
        for i, piece in enumerate(plan.pieces())
    ]
    events.append(
        {
            "outputText": "",
            "index": 0,
            "totalOutputTextTokenCount": output,
            "completionReason": reason,
            "inputTextTokenCount": None,
        }
    )
    return chunks(req, ids, events, plan, invocation_metrics(prompt, output), closing=1)


def mistral(req: Request, model: str, body: dict[str, Any], stream: bool) -> Reply:
    plan, ids = _text_plan(req, model, body, body.get("max_tokens"))
    prompt, output = max(1, estimate_tokens(body.get("prompt"))), plan.output_tokens()
    reason = "length" if plan.truncated else "stop"
    if not stream:
        return non_stream(plan, ids, {"outputs": [{"text": _text(plan), "stop_reason": reason}]}, prompt, output)
    events: list[dict[str, Any]] = [{"outputs": [{"text": piece, "stop_reason": None}]} for piece in plan.pieces()]
    events.append({"outputs": [{"text": "", "stop_reason": reason}]})
    return chunks(req, ids, events, plan, invocation_metrics(prompt, output), closing=1)


def cohere(req: Request, model: str, body: dict[str, Any], stream: bool) -> Reply:
    plan, ids = _text_plan(req, model, body, body.get("max_tokens"))
    prompt, output = (
        max(1, estimate_tokens(body.get("message")) + estimate_tokens(body.get("chat_history"))),
        plan.output_tokens(),
    )
    reason = "MAX_TOKENS" if plan.truncated else "COMPLETE"
    text = _text(plan)
    history = [
        *(body.get("chat_history") or []),
        {"role": "USER", "message": body.get("message")},
        {"role": "CHATBOT", "message": text},
    ]
    response = {
        "response_id": request_id(ids),
        "text": text,
        "generation_id": ids.hex("gen", 8),
        "chat_history": history,
        "finish_reason": reason,
    }
    if not stream:
        return non_stream(plan, ids, response, prompt, output)
    events: list[dict[str, Any]] = [
        {"is_finished": False, "event_type": "stream-start", "generation_id": response["generation_id"]}
    ]
    events += [{"is_finished": False, "event_type": "text-generation", "text": piece} for piece in plan.pieces()]
    events.append({"is_finished": True, "event_type": "stream-end", "response": response, "finish_reason": reason})
    return chunks(req, ids, events, plan, invocation_metrics(prompt, output), closing=1)


def _text(plan: Plan) -> str:
    return (plan.refusal if plan.refusal is not None else plan.text) or ""
