"""Amazon Bedrock Runtime's answers, shared by Converse (`bedrock_api`) and InvokeModel
(`bedrock_invoke`): error bodies, request ids, InvokeModel's token-count headers and invocation
metrics, the `chunk` frames of InvokeModelWithResponseStream and the padding of stream events.

Errors are `{"message": ...}` with the exception's name in `x-amzn-ErrorType`, as Bedrock sends
them. Scenario `stream-error` sends three text events and then an exception frame
(`modelStreamErrorException`, or the one named by the `x-standin-stream-exception` header); a
non-streamed call gets 424 ModelErrorException. Every event payload carries a `p` field of padding
letters, as Bedrock's do.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from .eventstream import event, exception
from .wire import JSON_TYPE, Ids, Plan, Reply, Request, UsageError

STREAM_TYPE = "application/vnd.amazon.eventstream"
_ERROR_TYPE_NAMESPACE = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
# The body fields whose content seeds the ids of an answer (Converse and every family).
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
LATENCY_MS = 321
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


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def invocation_metrics(inp: int, out: int, read: int = 0, write: int = 0) -> dict[str, int]:
    metrics = {
        "inputTokenCount": inp,
        "outputTokenCount": out,
        "invocationLatency": LATENCY_MS,
        "firstByteLatency": _FIRST_BYTE_MS,
    }
    if read or write:
        metrics |= {"cacheReadInputTokenCount": read, "cacheWriteInputTokenCount": write}
    return metrics


def non_stream(plan: Plan, ids: Ids, payload: dict[str, Any], inp: int, out: int) -> Reply:
    if plan.stream_error:
        return error(424, ids=ids)
    return invoked(ids, payload, inp, out)


def invoked(ids: Ids, payload: dict[str, Any], inp: int, out: int, read: int = 0, write: int = 0) -> Reply:
    headers = [
        ("content-type", JSON_TYPE),
        ("x-amzn-requestid", request_id(ids)),
        ("x-amzn-bedrock-invocation-latency", str(LATENCY_MS)),
        ("x-amzn-bedrock-output-token-count", str(out)),
        ("x-amzn-bedrock-input-token-count", str(inp)),
    ]
    if read or write:
        headers += [
            ("x-amzn-bedrock-cache-read-input-token-count", str(read)),
            ("x-amzn-bedrock-cache-write-input-token-count", str(write)),
        ]
    return Reply(200, headers, orjson.dumps(payload))


def stream_headers(ids: Ids, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("content-type", STREAM_TYPE), ("x-amzn-requestid", request_id(ids)), *extra]


def stream_exception(req: Request) -> bytes:
    name = req.header("x-standin-stream-exception") or "modelStreamErrorException"
    if name not in STREAM_EXCEPTIONS:
        raise UsageError(f"unknown x-standin-stream-exception {name!r}; known: {sorted(STREAM_EXCEPTIONS)}")
    payload: dict[str, Any] = {"message": "The stream was interrupted by the stand-in (scenario stream-error)."}
    if name == "modelStreamErrorException":
        payload |= {"originalStatusCode": 529, "originalMessage": "Overloaded"}
    return exception(name, orjson.dumps(payload))


def chunks(
    req: Request, ids: Ids, events: list[dict[str, Any]], plan: Plan, metrics: dict[str, int], *, closing: int
) -> Reply:
    """InvokeModelWithResponseStream: one `chunk` frame per model event, the invocation metrics in
    the last one; scenario stream-error stops after three text events with an exception frame."""
    if plan.stream_error:
        frames = [_chunk(ids, i, e) for i, e in enumerate(events[: _first_text(events) + 3])]
        frames.append(stream_exception(req))
        tail = 0
    else:
        events = [*events[:-1], {**events[-1], "amazon-bedrock-invocationMetrics": metrics}]
        frames = [_chunk(ids, i, e) for i, e in enumerate(events)]
        tail = closing
    return Reply(200, stream_headers(ids, ("x-amzn-bedrock-content-type", JSON_TYPE)), events=frames, tail=tail)


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
    return event("chunk", dumps({"bytes": base64.b64encode(raw).decode(), "p": pad(ids, index)}))


def pad(ids: Ids, index: int) -> str:
    """Bedrock pads every event with a `p` field of letters, of varying length, so event sizes do
    not tell token lengths; ours is derived from the event, so the bytes stay the same."""
    return ids.token(f"p{index}", 1 + index * 7 % 40)
