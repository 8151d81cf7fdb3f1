"""Bedrock's streamed answers: AWS event streams turned into SSE text for the record, and read for
usage, the end of the stream and why it stopped.

ConverseStream sends one frame per event (`messageStart`, `contentBlockDelta`, ..., `messageStop`,
then `metadata` with the usage), its JSON as the payload. InvokeModelWithResponseStream sends
`chunk` frames whose payload `{"bytes": "<base64>"}` holds the model's own event (Anthropic's
`content_block_delta`, Llama's `{"generation": ...}`, ...); the last chunk also carries
`amazon-bedrock-invocationMetrics` with Bedrock's token counts. An exception mid-stream is a frame
with `:message-type` `exception` and a `{"message"}` payload (docs.aws.amazon.com/bedrock/latest/
APIReference/API_runtime_ConverseStreamOutput.html, API_runtime_ResponseStream.html).

The record keeps a stream as SSE text, one event per frame: `event:` is the frame's event or
exception type, `data:` its JSON payload, with a chunk's bytes decoded. The client received the
binary frames unchanged; the text is what the dashboard, `relaylog show` and the parsers read.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

import orjson

from relaylog.providers import anthropic
from relaylog.providers.bedrock import converse_usage, finish_reasons, invocation_metrics_usage
from relaylog.providers.eventstream import Frame, decode, looks_like_event_stream
from relaylog.providers.fields import as_dict, count, text
from relaylog.usage import Observed, Usage, stream_observed

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_METRICS = "amazon-bedrock-invocationMetrics"
_METRICS_KEY = _METRICS.encode()


def transcript(body: bytes) -> tuple[bytes, str | None]:
    """The SSE text of an event stream body, and why it could not all be read (a cut or damaged
    frame), for the record's parse_error."""
    decoded = decode(body)
    return b"".join(_event(frame) for frame in decoded.frames), decoded.problem


def as_recorded(body: bytes, withheld: list[bytes]) -> tuple[bytes, bytes, str | None]:
    """An event stream as the record keeps it: (the SSE text of what the client received, the SSE
    text read for usage, which includes what the client never saw, why not all could be read)."""
    text, problem = transcript(body)
    if withheld:
        return text, transcript(body + b"".join(withheld))[0], problem
    return text, text, problem


def _event(frame: Frame) -> bytes:
    data = frame.payload
    if frame.message_type == "error":  # a frame-level error: its code and message are headers
        data = orjson.dumps({"code": frame.headers.get(":error-code"), "message": frame.headers.get(":error-message")})
    elif frame.name == "chunk":
        data = _chunk_bytes(data) or data
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return b"event: " + frame.name.encode() + b"\n" + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def _chunk_bytes(payload: bytes) -> bytes | None:
    obj = _loads(payload)
    encoded = obj.get("bytes") if isinstance(obj, dict) else None
    if not isinstance(encoded, str):
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _is_exception(name: bytes) -> bool:
    return name.endswith(b"Exception") or name == b"error"


def from_sse(newest_first: Iterable[tuple[bytes, bytes]], oldest_first: Iterable[tuple[bytes, bytes]]) -> Observed:
    """A stream's transcript, possibly cut short, as (event name, data) pairs in both orders."""
    ended = errored = bad = False
    usage: Usage | None = None
    for name, data in newest_first:
        if _is_exception(name):
            errored = True
        elif name == b"metadata":  # ConverseStream's last event
            obj = _loads(data)
            u = as_dict(obj).get("usage") if isinstance(obj, dict) else None
            usage = converse_usage(u) if isinstance(u, dict) else None
            bad = obj is None
            ended = True
            break
        elif name == b"chunk":
            if _METRICS_KEY in data:
                obj = _loads(data)
                bad = obj is None
                metrics = as_dict(obj).get(_METRICS) if isinstance(obj, dict) else None
                usage = invocation_metrics_usage(metrics) if isinstance(metrics, dict) else None
                ended = True
                if usage is not None:
                    break
        elif name in (b"messageStop", b"contentBlockStop", b"contentBlockDelta", b"contentBlockStart", b"messageStart"):
            break  # a ConverseStream cut before its metadata: no usage was sent
    if usage is None and not ended:
        usage = _partial_invoke_usage(oldest_first)
    return stream_observed(usage, None, ended=ended, errored=errored, bad_event=bad)


def _partial_invoke_usage(oldest_first: Iterable[tuple[bytes, bytes]]) -> Usage | None:
    """What an InvokeModel stream cut before its last chunk said about usage so far: Anthropic's
    message_start and message_delta, Nova's metadata, or Llama's and Titan's running counts (the
    input in the first chunk, the output so far in each)."""
    chunks = [(b"", data) for name, data in oldest_first if name == b"chunk"]
    if chunks and b"message_start" in chunks[0][1]:
        return anthropic.from_sse(reversed(chunks), chunks).usage
    inp = out = None
    for _, data in chunks:
        obj = _loads(data)
        if not isinstance(obj, dict):
            continue
        nova = as_dict(as_dict(obj.get("metadata")).get("usage"))
        if nova:
            return converse_usage(nova)
        if inp is None:
            inp = count(obj.get("prompt_token_count", obj.get("inputTextTokenCount")))
        latest = count(obj.get("generation_token_count", obj.get("totalOutputTextTokenCount")))
        out = out if latest is None else latest
    return None if inp is None and out is None else Usage(input_tokens=inp, output_tokens=out)


def ended(body: bytes) -> bool:
    """Whether a streamed answer as far as it reached the client holds its last event (ConverseStream's
    `metadata`, the chunk with the invocation metrics) or an exception frame."""
    if not looks_like_event_stream(body):
        return False
    for frame in reversed(decode(body).frames[-4:]):
        if frame.message_type in ("exception", "error") or frame.name == "metadata":
            return True
        if frame.name == "chunk" and _METRICS_KEY in (_chunk_bytes(frame.payload) or b""):
            return True
    return False


def outcome(oldest_first: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, tuple[str, ...] | None]:
    """(response id, finish reasons) of a transcript: Anthropic's message id, and the stop reason of
    `messageStop`, Anthropic's `message_delta` or the family's last chunk."""
    response_id: str | None = None
    reasons: tuple[str, ...] | None = None
    for name, data in oldest_first:
        if name not in (b"messageStop", b"chunk"):
            continue
        obj = _loads(data)
        if not isinstance(obj, dict):
            continue
        if obj.get("type") == "message_start":
            response_id = text(as_dict(obj.get("message")), "id")
            continue
        found = finish_reasons(as_dict(obj.get("delta")) if obj.get("type") == "message_delta" else obj)
        nested = as_dict(obj.get("messageStop"))  # Nova's InvokeModel stream
        reasons = found or (finish_reasons(nested) if nested else None) or reasons
    return response_id, reasons
