"""Amazon Bedrock Runtime: `POST /model/{modelId}/converse`, `/converse-stream`, `/invoke` and
`/invoke-with-response-stream` (docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
and the pages of the other three), after the request's SigV4 signature or API key is checked
(`bedrock_auth`).

Converse answers in JSON (`output.message`, `stopReason`, `usage`, `metrics`); ConverseStream in an
AWS event stream, one frame per event: messageStart, contentBlockStart (tool use only),
contentBlockDelta, contentBlockStop, messageStop, metadata (usage). Every event payload carries a
`p` field of padding letters, as Bedrock's do. InvokeModel answers with the model family's own body,
chosen by the model id (cross-region profile prefixes and ARNs allowed): Anthropic Claude (Messages,
`anthropic_version` required), Amazon Nova, Meta Llama, Amazon Titan Text, Mistral, Cohere Command R,
with Bedrock's `X-Amzn-Bedrock-*-Token-Count` headers. InvokeModelWithResponseStream sends each of
the family's stream events as a `chunk` frame (`{"bytes": "<base64>"}`); the last chunk carries
`amazon-bedrock-invocationMetrics` (docs.aws.amazon.com/bedrock/latest/userguide/model-parameters.html).

Errors are `{"message": ...}` with the exception's name in `x-amzn-ErrorType`, as Bedrock sends
them. Scenario `stream-error` sends three text events and then an exception frame
(`modelStreamErrorException`, or the one named by the `x-standin-stream-exception` header); a
non-streamed call gets 424 ModelErrorException. `cached` reports 2048 cache reads and 512 cache
writes beside the uncached input.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import orjson

from . import anthropic_api, bedrock_auth
from .eventstream import event, exception
from .wire import (
    CACHE_WRITE_TOKENS,
    CACHED_PREFIX_TOKENS,
    Ids,
    Plan,
    Reply,
    Request,
    UsageError,
    estimate_tokens,
    json_pieces,
    make_plan,
    obj,
    pick_scenario,
    prompt_tokens,
    seed_for,
    text_pieces,
)

JSON_TYPE = "application/json"
STREAM_TYPE = "application/vnd.amazon.eventstream"
OPERATIONS = frozenset({"converse", "converse-stream", "invoke", "invoke-with-response-stream"})
_ERROR_TYPE_NAMESPACE = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
FIELDS = ("messages", "system", "toolConfig", "inferenceConfig", "prompt", "inputText", "message", "max_tokens")
# Exceptions a stream may end with (ConverseStreamOutput and ResponseStream in the API reference).
STREAM_EXCEPTIONS = frozenset(
    {
        "internalServerException",
        "modelStreamErrorException",
        "validationException",
        "throttlingException",
        "serviceUnavailableException",
        "modelTimeoutException",
    }
)
_LATENCY_MS = 321
_FIRST_BYTE_MS = 123

EXCEPTIONS: dict[int, tuple[str, str]] = {
    400: ("ValidationException", "The stand-in was asked to reject this request (x-standin-fault status=400)."),
    403: ("AccessDeniedException", "You don't have access to the model with the specified model ID."),
    404: ("ResourceNotFoundException", "Model not found."),
    408: ("ModelTimeoutException", "Model has timed out in processing the request. Try your request again."),
    424: ("ModelErrorException", "The model encountered an error processing your request."),
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an error processing your request."),
    503: ("ServiceUnavailableException", "Bedrock is unable to process your request."),
}


def request_id(ids: Ids) -> str:
    h = ids.hex("rid", 32)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def error(status: int, message: str | None = None, *, name: str | None = None, ids: Ids | None = None) -> Reply:
    default_name, default_message = EXCEPTIONS.get(
        status,
        (
            "InternalServerException" if status >= 500 else "ValidationException",
            f"The stand-in answered with status {status}.",
        ),
    )
    headers = [
        ("content-type", JSON_TYPE),
        ("x-amzn-requestid", request_id(ids or Ids(b"error"))),
        ("x-amzn-errortype", (name or default_name) + _ERROR_TYPE_NAMESPACE),
    ]
    return Reply(status, headers, orjson.dumps({"message": message or default_message}))


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


def _bare_model(model: str) -> str:
    """The foundation model of a model id, a cross-region profile id or an ARN."""
    model = model.rsplit("/", 1)[-1]
    first, _, rest = model.partition(".")
    return rest if first in ("us", "eu", "apac", "global", "jp", "au", "ca", "us-gov", "in") and "." in rest else model


def _family(model: str) -> Callable[[Request, str, dict[str, Any], bool], Reply] | None:
    bare = _bare_model(model)
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
            "metrics": {"latencyMs": _LATENCY_MS},
            "output": {"message": {"content": self.blocks(), "role": "assistant"}},
            "stopReason": self.stop_reason(),
            "usage": self.usage(),
        }
        return Reply(200, [("content-type", JSON_TYPE), ("x-amzn-requestid", request_id(self.ids))], _dumps(payload))

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
        out.append(("metadata", {"metrics": {"latencyMs": _LATENCY_MS}, "usage": self.usage()}))
        return out

    def stream(self) -> Reply:
        frames = [
            event(name, _dumps({**payload, "p": _pad(self.ids, i)})) for i, (name, payload) in enumerate(self.events())
        ]
        if self.plan.stream_error:
            frames.append(_stream_exception(self.req))
        return Reply(200, _stream_headers(self.ids), events=frames, tail=0 if self.plan.stream_error else 2)

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
        return _chunks(
            req, talk.ids, events, talk.plan, _metrics(talk.input, talk.output, talk.read, talk.write), closing=2
        )
    if talk.plan.stream_error:
        return error(424, ids=talk.ids)
    payload = {
        "output": {"message": {"content": talk.blocks(), "role": "assistant"}},
        "stopReason": talk.stop_reason(),
        "usage": talk.usage(counts=True),
    }
    return _invoked(talk.ids, payload, talk.input, talk.output, talk.read, talk.write)


# -- InvokeModel of the other families -----------------------------------------------------------


def _anthropic(req: Request, model: str, body: dict[str, Any], stream: bool) -> Reply:
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
    bare = _bare_model(model)
    reported = bare.removeprefix("anthropic.").rsplit("-v", 1)[0]  # Claude's own name, without Bedrock's version
    msg = anthropic_api.message_for(req, body, model, reported)
    if not stream:
        if msg.plan.stream_error:
            return error(424, ids=msg.ids)
        return _invoked(msg.ids, msg.complete(), msg.input, msg.output, msg.read, msg.write)
    events = []
    for raw in msg.stream().events or []:
        name, _, data = raw.partition(b"\ndata: ")
        if name != b"event: ping":  # Bedrock does not relay Anthropic's keep-alive pings
            events.append(orjson.loads(data))
    if events and events[-1].get("type") == "error":
        events.pop()
    return _chunks(req, msg.ids, events, msg.plan, _metrics(msg.input, msg.output, msg.read, msg.write), closing=2)


def _text_plan(req: Request, model: str, body: dict[str, Any], limit: Any) -> tuple[Plan, Ids]:
    scenario = pick_scenario(req.header("x-standin-scenario"), model, "text")
    if scenario in ("tool", "parallel-tools"):
        raise UsageError(f"scenario {scenario!r} needs Converse or a model that calls tools")
    return make_plan(scenario, [], after_tool=False, reasoning_family=False, max_tokens=limit), seed_for(
        req.route, model, scenario, body, FIELDS
    )


def _llama(req: Request, model: str, body: dict[str, Any], stream: bool) -> Reply:
    plan, ids = _text_plan(req, model, body, body.get("max_gen_len"))
    prompt, output = max(1, estimate_tokens(body.get("prompt"))), plan.output_tokens()
    reason = "length" if plan.truncated else "stop"
    if not stream:
        return _non_stream(
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
    return _chunks(req, ids, events, plan, _metrics(prompt, output), closing=1)


def _titan(req: Request, model: str, body: dict[str, Any], stream: bool) -> Reply:
    plan, ids = _text_plan(req, model, body, obj(body.get("textGenerationConfig")).get("maxTokenCount"))
    prompt, output = max(1, estimate_tokens(body.get("inputText"))), plan.output_tokens()
    reason = "LENGTH" if plan.truncated else "FINISH"
    if not stream:
        return _non_stream(
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
    return _chunks(req, ids, events, plan, _metrics(prompt, output), closing=1)


def _mistral(req: Request, model: str, body: dict[str, Any], stream: bool) -> Reply:
    plan, ids = _text_plan(req, model, body, body.get("max_tokens"))
    prompt, output = max(1, estimate_tokens(body.get("prompt"))), plan.output_tokens()
    reason = "length" if plan.truncated else "stop"
    if not stream:
        return _non_stream(plan, ids, {"outputs": [{"text": _text(plan), "stop_reason": reason}]}, prompt, output)
    events: list[dict[str, Any]] = [{"outputs": [{"text": piece, "stop_reason": None}]} for piece in plan.pieces()]
    events.append({"outputs": [{"text": "", "stop_reason": reason}]})
    return _chunks(req, ids, events, plan, _metrics(prompt, output), closing=1)


def _cohere(req: Request, model: str, body: dict[str, Any], stream: bool) -> Reply:
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
        return _non_stream(plan, ids, response, prompt, output)
    events: list[dict[str, Any]] = [
        {"is_finished": False, "event_type": "stream-start", "generation_id": response["generation_id"]}
    ]
    events += [{"is_finished": False, "event_type": "text-generation", "text": piece} for piece in plan.pieces()]
    events.append({"is_finished": True, "event_type": "stream-end", "response": response, "finish_reason": reason})
    return _chunks(req, ids, events, plan, _metrics(prompt, output), closing=1)


_FAMILIES: tuple[tuple[str, Callable[[Request, str, dict[str, Any], bool], Reply]], ...] = (
    ("anthropic.", _anthropic),
    ("amazon.nova", _nova),
    ("meta.llama", _llama),
    ("amazon.titan-text", _titan),
    ("mistral.", _mistral),
    ("cohere.command-r", _cohere),
)


# -- shared pieces --------------------------------------------------------------------------------


def _text(plan: Plan) -> str:
    return (plan.refusal if plan.refusal is not None else plan.text) or ""


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _metrics(inp: int, out: int, read: int = 0, write: int = 0) -> dict[str, int]:
    metrics = {
        "inputTokenCount": inp,
        "outputTokenCount": out,
        "invocationLatency": _LATENCY_MS,
        "firstByteLatency": _FIRST_BYTE_MS,
    }
    if read or write:
        metrics |= {"cacheReadInputTokenCount": read, "cacheWriteInputTokenCount": write}
    return metrics


def _non_stream(plan: Plan, ids: Ids, payload: dict[str, Any], inp: int, out: int) -> Reply:
    if plan.stream_error:
        return error(424, ids=ids)
    return _invoked(ids, payload, inp, out)


def _invoked(ids: Ids, payload: dict[str, Any], inp: int, out: int, read: int = 0, write: int = 0) -> Reply:
    headers = [
        ("content-type", JSON_TYPE),
        ("x-amzn-requestid", request_id(ids)),
        ("x-amzn-bedrock-invocation-latency", str(_LATENCY_MS)),
        ("x-amzn-bedrock-output-token-count", str(out)),
        ("x-amzn-bedrock-input-token-count", str(inp)),
    ]
    if read or write:
        headers += [
            ("x-amzn-bedrock-cache-read-input-token-count", str(read)),
            ("x-amzn-bedrock-cache-write-input-token-count", str(write)),
        ]
    return Reply(200, headers, orjson.dumps(payload))


def _stream_headers(ids: Ids, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("content-type", STREAM_TYPE), ("x-amzn-requestid", request_id(ids)), *extra]


def _stream_exception(req: Request) -> bytes:
    name = req.header("x-standin-stream-exception") or "modelStreamErrorException"
    if name not in STREAM_EXCEPTIONS:
        raise UsageError(f"unknown x-standin-stream-exception {name!r}; known: {sorted(STREAM_EXCEPTIONS)}")
    payload: dict[str, Any] = {"message": "The stream was interrupted by the stand-in (scenario stream-error)."}
    if name == "modelStreamErrorException":
        payload |= {"originalStatusCode": 529, "originalMessage": "Overloaded"}
    return exception(name, orjson.dumps(payload))


def _chunks(
    req: Request, ids: Ids, events: list[dict[str, Any]], plan: Plan, metrics: dict[str, int], *, closing: int
) -> Reply:
    """InvokeModelWithResponseStream: one `chunk` frame per model event, the invocation metrics in
    the last one; scenario stream-error stops after three text events with an exception frame."""
    if plan.stream_error:
        frames = [_chunk(ids, i, e) for i, e in enumerate(events[: _first_text(events) + 3])]
        frames.append(_stream_exception(req))
        tail = 0
    else:
        events = [*events[:-1], {**events[-1], "amazon-bedrock-invocationMetrics": metrics}]
        frames = [_chunk(ids, i, e) for i, e in enumerate(events)]
        tail = closing
    return Reply(200, _stream_headers(ids, ("x-amzn-bedrock-content-type", JSON_TYPE)), events=frames, tail=tail)


def _first_text(events: list[dict[str, Any]]) -> int:
    """Index of the first event that carries answer text (after the opening events)."""
    for i, e in enumerate(events):
        if (
            any(key in e for key in ("generation", "outputText", "outputs", "text", "contentBlockDelta"))
            or e.get("type") == "content_block_delta"
        ):
            return i
    return 0


def _chunk(ids: Ids, index: int, model_event: dict[str, Any]) -> bytes:
    raw = orjson.dumps(model_event)
    return event("chunk", _dumps({"bytes": base64.b64encode(raw).decode(), "p": _pad(ids, index)}))


def _pad(ids: Ids, index: int) -> str:
    """Bedrock pads every event with a `p` field of letters, of varying length, so event sizes do
    not tell token lengths; ours is derived from the event, so the bytes stay the same."""
    return ids.token(f"p{index}", 1 + index * 7 % 40)
