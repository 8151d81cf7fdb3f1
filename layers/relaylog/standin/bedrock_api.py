"""Amazon Bedrock Runtime: `POST /model/{modelId}/converse`, `/converse-stream`, `/invoke` and
`/invoke-with-response-stream` (docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
and the pages of the other three), after the request's SigV4 signature or API key is checked
(`bedrock_auth`).

Converse answers in JSON (`output.message`, `stopReason`, `usage`, `metrics`); ConverseStream in an
AWS event stream, one frame per event: messageStart, contentBlockStart (tool use only),
contentBlockDelta, contentBlockStop, messageStop, metadata (usage). InvokeModel answers with the
model family's own body, chosen by the model id (cross-region profile prefixes and ARNs allowed):
Amazon Nova here, as it shares Converse's shapes; the other families in `bedrock_invoke`. The
answers' common pieces (errors, stream frames, metrics) are in `bedrock_replies`. `cached` reports
2048 cache reads and 512 cache writes beside the uncached input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import orjson

from . import bedrock_auth, bedrock_invoke
from .bedrock_replies import (
    FIELDS,
    LATENCY_MS,
    chunks,
    dumps,
    error,
    invocation_metrics,
    invoked,
    pad,
    request_id,
    stream_exception,
    stream_headers,
)
from .eventstream import event
from .wire import (
    CACHE_WRITE_TOKENS,
    CACHED_PREFIX_TOKENS,
    JSON_TYPE,
    Reply,
    Request,
    json_pieces,
    make_plan,
    obj,
    pick_scenario,
    prompt_tokens,
    seed_for,
    text_pieces,
)

OPERATIONS = frozenset({"converse", "converse-stream", "invoke", "invoke-with-response-stream"})


def handle(req: Request) -> Reply:
    refused = bedrock_auth.check(req)
    if isinstance(refused, bedrock_auth.Refusal):
        return error(refused.status, refused.message, name=refused.error_type)
    parts = req.route.split("/")
    model, operation = unquote(parts[-2]), parts[-1]
    try:
        body = orjson.loads(req.body)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return error(400, "Malformed input request, please reformat your input and try again.")
    if operation in ("converse", "converse-stream"):
        return _Conversation(req, model, body).answer(stream=operation == "converse-stream")
    family = _family(model)
    if family is None:
        return error(400, "The provided model identifier is invalid.")
    return family(req, model, body, operation == "invoke-with-response-stream")


def _family(model: str) -> Callable[[Request, str, dict[str, Any], bool], Reply] | None:
    bare = bedrock_invoke.bare_model(model)
    for prefix, family in _FAMILIES:
        if bare.startswith(prefix):
            return family
    return None


# -- Converse and ConverseStream (and Amazon Nova's InvokeModel, which shares their shapes) -------


class _Conversation:
    def __init__(self, req: Request, model: str, body: dict[str, Any]) -> None:
        self.req = req
        messages = body.get("messages") if isinstance(body.get("messages"), list) else []
        specs = [obj(t.get("toolSpec")) for t in obj(body.get("toolConfig")).get("tools") or [] if isinstance(t, dict)]
        tools = [(s.get("name", "tool"), obj(s.get("inputSchema")).get("json")) for s in specs if "name" in s]
        last = obj(messages[-1] if messages else None).get("content")
        after_tool = isinstance(last, list) and any(isinstance(b, dict) and "toolResult" in b for b in last)
        scenario = pick_scenario(
            req.header("x-standin-scenario"), model, "tool" if tools and not after_tool else "text"
        )
        config = obj(body.get("inferenceConfig"))
        limit = config.get("maxTokens", config.get("max_new_tokens"))
        self.plan = make_plan(scenario, tools, after_tool=after_tool, reasoning_family=False, max_tokens=limit)
        self.ids = seed_for(req.route, model, scenario, body, FIELDS)
        self.input = prompt_tokens(messages, body.get("system"), body.get("toolConfig"))
        self.read = CACHED_PREFIX_TOKENS if self.plan.cached else 0
        self.write = CACHE_WRITE_TOKENS if self.plan.cached else 0
        self.output = self.plan.output_tokens()

    def stop_reason(self) -> str:
        if self.plan.calls:
            return "tool_use"
        return "max_tokens" if self.plan.truncated else "end_turn"

    def blocks(self) -> list[dict[str, Any]]:
        text = self.plan.refusal if self.plan.refusal is not None else self.plan.text
        out: list[dict[str, Any]] = [{"text": text}] if text else []
        for i, call in enumerate(self.plan.calls):
            out.append(
                {"toolUse": {"toolUseId": self.tool_id(i), "name": call.name, "input": orjson.loads(call.arguments)}}
            )
        return out

    def tool_id(self, index: int) -> str:
        return "tooluse_" + self.ids.token(f"tool{index}", 22)

    def usage(self, *, counts: bool = False) -> dict[str, int]:
        """Converse's usage, or Nova InvokeModel's (whose cache fields end in `Count`)."""
        out = {
            "inputTokens": self.input,
            "outputTokens": self.output,
            "totalTokens": self.input + self.output + self.read + self.write,
        }
        if self.plan.cached or counts:
            suffix = "Count" if counts else "s"
            out[f"cacheReadInputToken{suffix}"] = self.read
            out[f"cacheWriteInputToken{suffix}"] = self.write
        return out

    def answer(self, *, stream: bool) -> Reply:
        if stream:
            return self.stream()
        if self.plan.stream_error:
            return error(424, ids=self.ids)
        payload = {
            "metrics": {"latencyMs": LATENCY_MS},
            "output": {"message": {"content": self.blocks(), "role": "assistant"}},
            "stopReason": self.stop_reason(),
            "usage": self.usage(),
        }
        return Reply(200, [("content-type", JSON_TYPE), ("x-amzn-requestid", request_id(self.ids))], dumps(payload))

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(event type, payload without padding) of the stream, ending with messageStop and metadata."""
        out: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
        for index, block in enumerate(self.blocks()):
            if "toolUse" in block:
                use = block["toolUse"]
                out.append(
                    (
                        "contentBlockStart",
                        {
                            "contentBlockIndex": index,
                            "start": {"toolUse": {"name": use["name"], "toolUseId": use["toolUseId"]}},
                        },
                    )
                )
                deltas: list[dict[str, Any]] = [
                    {"toolUse": {"input": piece}} for piece in json_pieces(orjson.dumps(use["input"]).decode())
                ]
            else:
                deltas = [{"text": piece} for piece in text_pieces(block["text"])]
                if self.plan.stream_error:
                    out += [("contentBlockDelta", {"contentBlockIndex": index, "delta": d}) for d in deltas[:3]]
                    return out
            out += [("contentBlockDelta", {"contentBlockIndex": index, "delta": d}) for d in deltas]
            out.append(("contentBlockStop", {"contentBlockIndex": index}))
        out.append(("messageStop", {"stopReason": self.stop_reason()}))
        out.append(("metadata", {"metrics": {"latencyMs": LATENCY_MS}, "usage": self.usage()}))
        return out

    def stream(self) -> Reply:
        frames = [
            event(name, dumps({**payload, "p": pad(self.ids, i)})) for i, (name, payload) in enumerate(self.events())
        ]
        if self.plan.stream_error:
            frames.append(stream_exception(self.req))
        return Reply(200, stream_headers(self.ids), events=frames, tail=0 if self.plan.stream_error else 2)

    def nova_stream_events(self) -> list[dict[str, Any]]:
        """Nova's InvokeModelWithResponseStream events: the Converse events keyed by their name."""
        out = []
        for name, payload in self.events():
            if name == "metadata":
                payload = {
                    "usage": {"inputTokens": self.input, "outputTokens": self.output},
                    "metrics": {},
                    "trace": {},
                }
            out.append({name: payload})
        return out


def _nova(req: Request, model: str, body: dict[str, Any], stream: bool) -> Reply:
    talk = _Conversation(req, model, body)
    if stream:
        events = talk.nova_stream_events()
        return chunks(
            req,
            talk.ids,
            events,
            talk.plan,
            invocation_metrics(talk.input, talk.output, talk.read, talk.write),
            closing=2,
        )
    if talk.plan.stream_error:
        return error(424, ids=talk.ids)
    payload = {
        "output": {"message": {"content": talk.blocks(), "role": "assistant"}},
        "stopReason": talk.stop_reason(),
        "usage": talk.usage(counts=True),
    }
    return invoked(talk.ids, payload, talk.input, talk.output, talk.read, talk.write)


_FAMILIES: tuple[tuple[str, Callable[[Request, str, dict[str, Any], bool], Reply]], ...] = (
    ("anthropic.", bedrock_invoke.anthropic),
    ("amazon.nova", _nova),
    ("meta.llama", bedrock_invoke.llama),
    ("amazon.titan-text", bedrock_invoke.titan),
    ("mistral.", bedrock_invoke.mistral),
    ("cohere.command-r", bedrock_invoke.cohere),
)
