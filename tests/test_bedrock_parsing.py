"""Bedrock's wire format as relaylog reads it: models and operations from paths, Converse and
InvokeModel bodies of each model family, AWS event streams (whole, cut, damaged, with exceptions),
the SSE transcript the record keeps, completeness, finish reasons and cost.

Bodies are written out here as the API reference and the model parameter pages show them; the
expected numbers are worked out by hand. Frames come from the stand-in's encoder, which
tests/test_bedrock_standin.py checks against botocore's decoder.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import orjson
import pytest
from relaylog.cost import COST_SOURCE, UNKNOWN_MODEL, price
from relaylog.providers import bedrock
from relaylog.providers.bedrock_stream import transcript
from relaylog.providers.eventstream import DAMAGED, TRUNCATED, decode
from relaylog.providers.outcome import read_outcome
from relaylog.providers.parsing import parse_request, parse_response, stream_ended
from relaylog.providers.registry import PROVIDERS
from relaylog.standin.eventstream import event, exception, frame
from relaylog.usage import Observed, Usage

STREAM = "application/vnd.amazon.eventstream"
JSON = "application/json"
CONVERSE = "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
CONVERSE_STREAM = "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse-stream"
INVOKE = "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/invoke"
INVOKE_STREAM = "/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/invoke-with-response-stream"


def converse_events(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(event(name, orjson.dumps({**payload, "p": "abcdef"})) for name, payload in events)


def chunks(*model_events: dict[str, Any]) -> bytes:
    return b"".join(
        event("chunk", orjson.dumps({"bytes": base64.b64encode(orjson.dumps(e)).decode(), "p": "xyz"}))
        for e in model_events
    )


HELLO_STREAM = converse_events(
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("messageStop", {"stopReason": "end_turn"}),
    (
        "metadata",
        {
            "usage": {
                "inputTokens": 11,
                "outputTokens": 2,
                "totalTokens": 2573,
                "cacheReadInputTokens": 2048,
                "cacheWriteInputTokens": 512,
            },
            "metrics": {"latencyMs": 300},
        },
    ),
)
METRICS = {
    "inputTokenCount": 9,
    "outputTokenCount": 4,
    "invocationLatency": 321,
    "firstByteLatency": 123,
    "cacheReadInputTokenCount": 100,
    "cacheWriteInputTokenCount": 20,
}
CLAUDE_STREAM = chunks(
    {
        "type": "message_start",
        "message": {
            "id": "msg_bdrk_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-3-5-sonnet-20241022",
            "content": [],
            "usage": {
                "input_tokens": 9,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
                "output_tokens": 1,
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 4},
    },
    {"type": "message_stop", "amazon-bedrock-invocationMetrics": METRICS},
)


# -- paths and requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "model", "operation"),
    [
        ("/model/amazon.nova-pro-v1%3A0/converse", "amazon.nova-pro-v1:0", "converse"),
        ("/model/amazon.nova-pro-v1:0/converse-stream", "amazon.nova-pro-v1:0", "converse-stream"),
        (
            "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/invoke",
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            "invoke",
        ),
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fmeta.llama3-8b-instruct-v1%3A0/invoke-with-response-stream",
            "meta.llama3-8b-instruct-v1:0",
            "invoke-with-response-stream",
        ),
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fglobal.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse",
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "converse",
        ),
        # An application inference profile names no model: the ARN is all there is to record.
        (
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fa1b2c3d4e5f6/converse",
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
            "converse",
        ),
        ("/model/amazon.nova-pro-v1%3A0/count-tokens", "amazon.nova-pro-v1:0", "other"),
        ("/openai/v1/chat/completions", None, "openai"),
        ("/guardrail/abc/version/1/apply", None, "other"),
    ],
)
def test_model_and_operation_from_the_path(endpoint: str, model: str | None, operation: str) -> None:
    assert bedrock.model_from_path(endpoint) == model
    assert bedrock.operation(endpoint) == operation


def test_requests_take_model_and_stream_from_the_path() -> None:
    body = orjson.dumps(
        {"messages": [{"role": "user", "content": [{"text": "Hi"}]}], "inferenceConfig": {"maxTokens": 10}}
    )
    info = parse_request("bedrock", CONVERSE_STREAM, body)
    assert (info.model, info.stream, info.user, info.parse_error) == (
        "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
        True,
        None,
        None,
    )
    assert parse_request("bedrock", CONVERSE, body).stream is False
    claude = orjson.dumps(
        {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": [], "metadata": {"user_id": "u-7"}}
    )
    info = parse_request("bedrock", INVOKE_STREAM, claude)
    assert (info.model, info.stream, info.user) == ("anthropic.claude-3-5-sonnet-20241022-v2:0", True, "u-7")
    broken = parse_request("bedrock", INVOKE, b'{"prompt": "cut')
    assert (broken.model, broken.stream, broken.parse_error) == (
        "anthropic.claude-3-5-sonnet-20241022-v2:0",
        False,
        "truncated JSON",
    )


def test_openai_compatible_endpoint_reads_openai_bodies() -> None:
    body = b'{"model":"openai.gpt-oss-20b-1:0","messages":[],"stream":true}'
    info = parse_request("bedrock", "/openai/v1/chat/completions", body)
    assert (info.model, info.stream) == ("openai.gpt-oss-20b-1:0", True)
    answer = b'{"id":"chatcmpl-1","object":"chat.completion","model":"openai.gpt-oss-20b-1:0","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}'
    observed = parse_response("bedrock", "/openai/v1/chat/completions", answer, JSON)
    assert observed.usage == Usage(input_tokens=7, output_tokens=3)
    assert read_outcome("bedrock", "/openai/v1/chat/completions", answer) == ("chatcmpl-1", ("stop",))


# -- whole answers -----------------------------------------------------------------------------


def test_converse_usage_adds_cache_reads_and_writes_to_the_input() -> None:
    body = orjson.dumps(
        {
            "metrics": {"latencyMs": 385},
            "output": {"message": {"content": [{"text": "Hi"}], "role": "assistant"}},
            "stopReason": "end_turn",
            "usage": {
                "inputTokens": 10,
                "outputTokens": 5,
                "totalTokens": 2575,
                "cacheReadInputTokens": 2048,
                "cacheWriteInputTokens": 512,
                "cacheDetails": [{"ttl": "1h", "inputTokens": 500}, {"ttl": "5m", "inputTokens": 12}],
            },
        }
    )
    observed = parse_response("bedrock", CONVERSE, body, JSON)
    # 10 uncached + 2048 read + 512 written = 2570, which with the 5 output is the reported total.
    assert observed == Observed(Usage(2570, 5, 2048, 512, cache_write_1h_tokens=500))
    assert read_outcome("bedrock", CONVERSE, body) == (None, ("end_turn",))


@pytest.mark.parametrize(
    ("body", "usage", "reasons"),
    [
        # Anthropic Claude (Messages), its three input numbers summed: 9 + 100 + 20.
        (
            {
                "id": "msg_bdrk_01",
                "type": "message",
                "role": "assistant",
                "model": "claude-3-5-sonnet-20241022",
                "content": [{"type": "text", "text": "Hi"}],
                "stop_reason": "end_turn",
                "usage": {
                    "input_tokens": 9,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 20,
                    "output_tokens": 4,
                },
            },
            Usage(129, 4, 100, 20),
            ("end_turn",),
        ),
        # Amazon Nova: Converse's shape, cache fields spelled with `Count`.
        (
            {
                "output": {"message": {"content": [{"text": "Hi"}], "role": "assistant"}},
                "stopReason": "max_tokens",
                "usage": {
                    "inputTokens": 7,
                    "outputTokens": 3,
                    "totalTokens": 40,
                    "cacheReadInputTokenCount": 30,
                    "cacheWriteInputTokenCount": 0,
                },
            },
            Usage(37, 3, 30, 0),
            ("max_tokens",),
        ),
        (
            {"generation": "Hi", "prompt_token_count": 12, "generation_token_count": 2, "stop_reason": "stop"},
            Usage(12, 2),
            ("stop",),
        ),
        (
            {
                "inputTextTokenCount": 5,
                "results": [{"tokenCount": 8, "outputText": "Hi", "completionReason": "FINISH"}],
            },
            Usage(5, 8),
            ("FINISH",),
        ),
        ({"embedding": [0.1, 0.2], "inputTextTokenCount": 6}, Usage(6, 0), None),
        # AI21 Jamba: OpenAI's shape.
        (
            {
                "id": "chat-1",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
            },
            Usage(4, 2),
            ("stop",),
        ),
        # Mistral and Cohere bodies carry no token counts: usage is absent, not zero.
        ({"outputs": [{"text": "Hi", "stop_reason": "length"}]}, None, ("length",)),
        (
            {"response_id": "r", "text": "Hi", "generation_id": "g", "chat_history": [], "finish_reason": "COMPLETE"},
            None,
            ("COMPLETE",),
        ),
        ({"generations": [{"id": "g", "text": "Hi", "finish_reason": "COMPLETE"}]}, None, ("COMPLETE",)),
        # Bedrock's own error body.
        ({"message": "Too many requests, please wait before trying again."}, None, None),
    ],
)
def test_invoke_model_bodies_by_shape(
    body: dict[str, Any], usage: Usage | None, reasons: tuple[str, ...] | None
) -> None:
    raw = orjson.dumps(body)
    observed = parse_response("bedrock", INVOKE, raw, JSON)
    assert (observed.usage, observed.response_model, observed.parse_error) == (usage, None, None)
    assert read_outcome("bedrock", INVOKE, raw)[1] == reasons


# -- event streams ---------------------------------------------------------------------------------


def test_converse_stream_usage_from_its_metadata_event() -> None:
    observed = parse_response("bedrock", CONVERSE_STREAM, HELLO_STREAM, STREAM)
    assert observed == Observed(Usage(2571, 2, 2048, 512))
    assert stream_ended("bedrock", CONVERSE_STREAM, HELLO_STREAM)
    assert read_outcome("bedrock", CONVERSE_STREAM, HELLO_STREAM) == (None, ("end_turn",))


def test_a_stream_cut_before_its_last_event() -> None:
    frames = decode(HELLO_STREAM).frames
    assert len(frames) == 6
    cut_at = len(HELLO_STREAM) - len(frame(list(frames[-1].headers.items()), frames[-1].payload))
    whole_frames = HELLO_STREAM[:cut_at]  # everything up to messageStop: no usage was sent yet
    assert parse_response("bedrock", CONVERSE_STREAM, whole_frames, STREAM) == Observed(parse_error=TRUNCATED)
    assert not stream_ended("bedrock", CONVERSE_STREAM, whole_frames)
    mid_frame = HELLO_STREAM[: cut_at + 20]
    assert parse_response("bedrock", CONVERSE_STREAM, mid_frame, STREAM).parse_error == TRUNCATED
    assert not stream_ended("bedrock", CONVERSE_STREAM, mid_frame)


def test_an_exception_frame_ends_the_stream_as_an_error() -> None:
    body = HELLO_STREAM[: len(converse_events(("messageStart", {"role": "assistant"})))] + exception(
        "throttlingException", b'{"message":"Too many tokens, please wait before trying again."}'
    )
    observed = parse_response("bedrock", CONVERSE_STREAM, body, STREAM)
    assert (observed.usage, observed.stream_error, observed.parse_error) == (None, True, None)
    assert stream_ended("bedrock", CONVERSE_STREAM, body)
    text, problem = transcript(body)
    assert problem is None
    assert text.endswith(
        b'event: throttlingException\ndata: {"message":"Too many tokens, please wait before trying again."}\n\n'
    )


def test_a_damaged_frame_is_reported_not_raised() -> None:
    damaged = bytearray(HELLO_STREAM)
    damaged[-1] ^= 0xFF  # the last frame's message CRC no longer matches
    observed = parse_response("bedrock", CONVERSE_STREAM, bytes(damaged), STREAM)
    assert (observed.usage, observed.parse_error) == (None, DAMAGED)
    damaged_prelude = bytearray(HELLO_STREAM)
    damaged_prelude[2] ^= 0x01  # the first frame's length: its prelude CRC catches it
    assert decode(bytes(damaged_prelude)).problem == DAMAGED
    assert decode(bytes(damaged_prelude)).frames == []


def test_transcript_is_one_sse_event_per_frame_with_chunk_bytes_decoded() -> None:
    body = chunks({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}) + event(
        "messageStop", b'{"stopReason":"end_turn"}'
    )
    text, problem = transcript(body)
    assert problem is None
    assert text == (
        b'event: chunk\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
        b'event: messageStop\ndata: {"stopReason":"end_turn"}\n\n'
    )
    error_frame = frame(
        [(":message-type", "error"), (":error-code", "InternalFailure"), (":error-message", "boom")], b""
    )
    assert transcript(error_frame)[0] == b'event: error\ndata: {"code":"InternalFailure","message":"boom"}\n\n'


def test_invoke_stream_usage_from_the_invocation_metrics() -> None:
    observed = parse_response("bedrock", INVOKE_STREAM, CLAUDE_STREAM, STREAM)
    # Bedrock's counts: 9 uncached + 100 read + 20 written.
    assert observed == Observed(Usage(129, 4, 100, 20))
    assert stream_ended("bedrock", INVOKE_STREAM, CLAUDE_STREAM)
    assert read_outcome("bedrock", INVOKE_STREAM, CLAUDE_STREAM) == ("msg_bdrk_01", ("end_turn",))


def test_invoke_stream_cut_before_its_last_chunk_keeps_what_was_said() -> None:
    last = decode(CLAUDE_STREAM).frames[-1]
    cut = CLAUDE_STREAM[: len(CLAUDE_STREAM) - len(frame(list(last.headers.items()), last.payload))]
    observed = parse_response("bedrock", INVOKE_STREAM, cut, STREAM)
    # Anthropic's own numbers so far: message_start's input side, message_delta's output.
    assert (observed.usage, observed.parse_error) == (Usage(129, 4, 100, 20, cache_write_1h_tokens=None), TRUNCATED)
    assert not stream_ended("bedrock", INVOKE_STREAM, cut)
    llama = chunks(
        {"generation": "Hel", "prompt_token_count": 12, "generation_token_count": 1, "stop_reason": None},
        {"generation": "lo", "prompt_token_count": None, "generation_token_count": 2, "stop_reason": None},
    )
    observed = parse_response(
        "bedrock", "/model/meta.llama3-8b-instruct-v1%3A0/invoke-with-response-stream", llama, STREAM
    )
    assert (observed.usage, observed.parse_error) == (Usage(12, 2), TRUNCATED)


def test_invoke_stream_of_other_families() -> None:
    metrics = {"inputTokenCount": 12, "outputTokenCount": 2, "invocationLatency": 5, "firstByteLatency": 2}
    llama = chunks(
        {"generation": "Hi", "prompt_token_count": 12, "generation_token_count": 1, "stop_reason": None},
        {
            "generation": "",
            "prompt_token_count": None,
            "generation_token_count": 2,
            "stop_reason": "stop",
            "amazon-bedrock-invocationMetrics": metrics,
        },
    )
    endpoint = "/model/meta.llama3-8b-instruct-v1%3A0/invoke-with-response-stream"
    assert parse_response("bedrock", endpoint, llama, STREAM) == Observed(Usage(12, 2))
    assert read_outcome("bedrock", endpoint, llama) == (None, ("stop",))
    nova = chunks(
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "Hi"}, "contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
        {"metadata": {"usage": {"inputTokens": 12, "outputTokens": 2}}, "amazon-bedrock-invocationMetrics": metrics},
    )
    assert parse_response(
        "bedrock", "/model/us.amazon.nova-lite-v1%3A0/invoke-with-response-stream", nova, STREAM
    ) == Observed(Usage(12, 2))
    assert read_outcome("bedrock", "/model/us.amazon.nova-lite-v1%3A0/invoke-with-response-stream", nova)[1] == (
        "end_turn",
    )


def test_the_recorded_transcript_parses_like_the_frames() -> None:
    for endpoint, body in ((CONVERSE_STREAM, HELLO_STREAM), (INVOKE_STREAM, CLAUDE_STREAM)):
        text, _ = transcript(body)
        assert parse_response("bedrock", endpoint, text, "text/event-stream") == parse_response(
            "bedrock", endpoint, body, STREAM
        )
        assert read_outcome("bedrock", endpoint, text) == read_outcome("bedrock", endpoint, body)


@pytest.mark.parametrize(
    "body", [b"", b"{", b"\x00\x00\x00\x10" + b"\x00" * 12, b"event: chunk\ndata: {\n\n", zlib.compress(b"x" * 100)]
)
def test_garbage_never_raises(body: bytes) -> None:
    for endpoint in (CONVERSE, CONVERSE_STREAM, INVOKE, INVOKE_STREAM):
        observed = parse_response("bedrock", endpoint, body, STREAM)
        assert observed.parse_error is None or not observed.parse_error.startswith("parser error")
        assert stream_ended("bedrock", endpoint, body) is False
        read_outcome("bedrock", endpoint, body)


# -- cost ------------------------------------------------------------------------------------------


def test_cost_for_bedrock_models_and_inference_profiles() -> None:
    provider = PROVIDERS["bedrock"]
    usage = Usage(1_000_000, 100_000)
    # Claude 3.5 Sonnet v2 on Bedrock: $3 per million input tokens, $15 per million output tokens,
    # the same through the `us.` cross-region profile.
    for model in ("anthropic.claude-3-5-sonnet-20241022-v2:0", "us.anthropic.claude-3-5-sonnet-20241022-v2:0"):
        assert price(usage, model, provider) == (pytest.approx(3.0 + 1.5), COST_SOURCE)
    # Claude Sonnet 4.5: the `global.` profile at $3 / $15, a regional one 10% above ($3.30 / $16.50).
    assert price(usage, "global.anthropic.claude-sonnet-4-5-20250929-v1:0", provider)[0] == pytest.approx(3.0 + 1.5)
    assert price(usage, "eu.anthropic.claude-sonnet-4-5-20250929-v1:0", provider)[0] == pytest.approx(3.3 + 1.65)
    # Meta Llama 3.1 8B: $0.22 per million tokens in and out.
    assert price(usage, "us.meta.llama3-1-8b-instruct-v1:0", provider) == (pytest.approx(0.22 + 0.022), COST_SOURCE)
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
    assert price(usage, arn, provider) == (None, UNKNOWN_MODEL)
