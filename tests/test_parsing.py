"""Request and response parsing against realistic wire payloads of OpenAI, Anthropic and Gemini."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
import pytest
from relaylog.providers.outcome import read_outcome
from relaylog.providers.parsing import RequestInfo, parse_request, parse_response, read_response
from relaylog.providers.registry import Family
from relaylog.usage import Observed, Usage

SSE = "text/event-stream"
JSON = "application/json"


def sse(*events: Any, sep: bytes = b"\n\n") -> bytes:
    """Events as on the wire: dicts become `data: <json>`, (name, dict) pairs get `event:` too."""
    out = []
    for event in events:
        if isinstance(event, tuple):
            name, data = event
            out.append(b"event: " + name.encode() + sep[: len(sep) // 2] + b"data: " + orjson.dumps(data) + sep)
        elif isinstance(event, bytes):
            out.append(b"data: " + event + sep)
        else:
            out.append(b"data: " + orjson.dumps(event) + sep)
    return b"".join(out)


# =============================================================================================
# Requests


def test_openai_chat_request() -> None:
    body = orjson.dumps(
        {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": "user-123",
        }
    )
    info = parse_request("openai", "/v1/chat/completions", body)
    assert info == RequestInfo("gpt-4o", True, "user-123", orjson.loads(body), None)


def test_openai_safety_identifier_when_no_user() -> None:
    body = b'{"model":"gpt-5","input":"Hi","safety_identifier":"hashed-42"}'
    info = parse_request("openai", "/v1/responses", body)
    assert (info.model, info.stream, info.user) == ("gpt-5", False, "hashed-42")


def test_openai_field_types_are_checked() -> None:
    info = parse_request("openai", "/v1/chat/completions", b'{"model":123,"stream":"true","user":["x"]}')
    assert (info.model, info.stream, info.user, info.parse_error) == (None, False, None, None)


def test_azure_deployment_names_the_model() -> None:
    info = parse_request(
        "openai",
        "/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21",
        b'{"messages":[{"role":"user","content":"Hi"}]}',
    )
    assert info.model == "prod-gpt4o"


def test_anthropic_request() -> None:
    body = orjson.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "stream": True,
            "metadata": {"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"},
            "thinking": {"type": "enabled", "budget_tokens": 10000},
            "messages": [{"role": "user", "content": "Hello"}],
        }
    )
    info = parse_request("anthropic", "/v1/messages", body)
    assert (info.model, info.stream, info.user) == (
        "claude-sonnet-4-5",
        True,
        "13803d75-b4b5-4c3e-b2a2-6f21399b021b",
    )
    assert info.parsed is not None and info.parsed["max_tokens"] == 1024


@pytest.mark.parametrize(
    ("endpoint", "model", "stream"),
    [
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "gemini-2.5-flash", True),
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "gemini-2.5-flash", True),
        ("/v1beta/models/gemini-2.5-pro:generateContent", "gemini-2.5-pro", False),
        ("/v1/models/gemini-2.0-flash:generateContent", "gemini-2.0-flash", False),
        ("/v1beta/models/text-embedding-004:embedContent", "text-embedding-004", False),
        (
            "/v1beta/tunedModels/my-tuned-model-7:generateContent",
            "tunedModels/my-tuned-model-7",
            False,
        ),
        (
            "/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-flash:streamGenerateContent",
            "gemini-2.5-flash",
            True,
        ),
        ("/v1beta/models/gemini-2.5-flash%3AstreamGenerateContent", "gemini-2.5-flash", True),
        ("/v1beta/files", None, False),
    ],
)
def test_gemini_model_and_stream_from_path(endpoint: str, model: str | None, stream: bool) -> None:
    info = parse_request("gemini", endpoint, b'{"contents":[{"role":"user","parts":[{"text":"Hi"}]}]}')
    assert (info.model, info.stream, info.parse_error) == (model, stream, None)
    assert info.parsed == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


def test_gemini_broken_body_keeps_path_facts() -> None:
    info = parse_request("gemini", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", b"{nope")
    assert (info.model, info.stream, info.parse_error) == ("gemini-2.5-flash", True, "invalid JSON")


SECRET = b"sk-proj-SECRETSECRETSECRET"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "empty body"),
        (b"   \n", "empty body"),
        (b"model=gpt-4o&" + SECRET, "invalid JSON"),
        (b'["gpt-4o"]', "not a JSON object"),
        (b'"just a string"', "not a JSON object"),
        (b"null", "not a JSON object"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"' + SECRET, "truncated JSON"),
        (b'{"model":"gpt-4o","temperature":NaN}', "invalid JSON"),
        (b'{"model":"gpt-4o","max_tokens":1e999}', "number out of range"),
        (b'{"model":"gpt-4o","seed":' + b"9" * 500 + b"}", "number out of range"),
        (b'{"model":"gpt-4o","messages":"\xff\xfe' + SECRET + b'"}', "invalid UTF-8"),
        (b'{"model":"gpt-4o","x":"\\ud800"}', "invalid JSON"),
        (b'{"model":"gpt-4o"} trailing', "invalid JSON"),
    ],
)
def test_bad_request_bodies_never_raise(body: bytes, error: str) -> None:
    info = parse_request("openai", "/v1/chat/completions", body)
    assert info.parse_error == error
    assert info.parsed is None
    assert b"SECRET" not in info.parse_error.encode()


def test_broken_body_still_names_model_and_stream() -> None:
    body = b'{"model": "gpt-4o-mini", "stream": true, "max_tokens": 1e999, "messages": []}'
    info = parse_request("openai", "/v1/chat/completions", body)
    assert (info.model, info.stream, info.parse_error) == (
        "gpt-4o-mini",
        True,
        "number out of range",
    )


@pytest.mark.parametrize(
    "bomb",
    [
        b"[" * 200_000,
        b'{"a":' * 200_000,
        b'{"model":"gpt-4o","messages":' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    ],
)
def test_deep_nesting_bombs_are_cheap(bomb: bytes) -> None:
    start = time.perf_counter()
    info = parse_request("openai", "/v1/chat/completions", bomb)
    assert time.perf_counter() - start < 0.2
    assert info.parse_error == "JSON too deeply nested"
    assert info.parsed is None


def test_multipart_transcription_request() -> None:
    body = (
        b"--boundary123\r\n"
        b'Content-Disposition: form-data; name="file"; filename="speech.mp3"\r\n'
        b"Content-Type: audio/mpeg\r\n\r\n"
        b"ID3\x04\x00\x00\x00\x00\x00\xff\xfb\x90\x00" * 50 + b"\r\n"
        b"--boundary123\r\n"
        b'Content-Disposition: form-data; name="model"\r\n\r\n'
        b"gpt-4o-transcribe\r\n"
        b"--boundary123\r\n"
        b'Content-Disposition: form-data; name="stream"\r\n\r\n'
        b"true\r\n"
        b"--boundary123--\r\n"
    )
    info = parse_request("openai", "/v1/audio/transcriptions", body)
    assert (info.model, info.stream, info.parsed, info.parse_error) == (
        "gpt-4o-transcribe",
        True,
        None,
        "multipart body",
    )


def test_request_is_fast() -> None:
    body = orjson.dumps(
        {
            "model": "gpt-4o",
            "stream": True,
            "messages": [{"role": "user", "content": "word " * 20_000}],
        }
    )
    parse_request("openai", "/v1/chat/completions", body)
    start = time.perf_counter()
    for _ in range(100):
        parse_request("openai", "/v1/chat/completions", body)
    assert (time.perf_counter() - start) / 100 < 0.005  # ~100 KB body: well under 5 ms


# =============================================================================================
# OpenAI responses

CHAT_TOOL_CALLS = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_12345xyz",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location":"Paris, France"}',
                        },
                    },
                    {
                        "id": "call_67890abc",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"location":"Bogot\\u00e1, Colombia"}',
                        },
                    },
                ],
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}


def test_openai_chat_json_with_parallel_tool_calls_and_cache() -> None:
    obs = parse_response("openai", "/v1/chat/completions", orjson.dumps(CHAT_TOOL_CALLS), JSON)
    assert obs == Observed(
        Usage(
            input_tokens=1117,
            output_tokens=46,
            cache_read_tokens=1024,
            reasoning_tokens=0,
            audio_input_tokens=0,
            audio_output_tokens=0,
        ),
        "gpt-4o-2024-08-06",
        None,
    )


def test_openai_refusal_and_reasoning_tokens() -> None:
    body = {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "created": 1741570300,
        "model": "o3-mini-2025-01-31",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": "I'm sorry, I can't help with that.",
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 25,
            "completion_tokens": 1212,
            "total_tokens": 1237,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 1152, "audio_tokens": 0},
        },
    }
    obs = parse_response("openai", "/v1/chat/completions", orjson.dumps(body), JSON)
    assert obs.usage == Usage(25, 1212, 0, None, 1152, None, 0)  # reasoning already inside output
    assert obs.response_model == "o3-mini-2025-01-31"


def test_openai_audio_tokens() -> None:
    body = {
        "id": "chatcmpl-3",
        "object": "chat.completion",
        "model": "gpt-4o-audio-preview-2025-06-03",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "audio": {
                        "id": "audio_abc",
                        "data": "UklGRg==",
                        "expires_at": 1,
                        "transcript": "Hi",
                    },
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 97,
            "completion_tokens": 61,
            "total_tokens": 158,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 45, "text_tokens": 52},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 48,
                "text_tokens": 13,
            },
        },
    }
    obs = parse_response("openai", "/v1/chat/completions", orjson.dumps(body), JSON)
    assert obs.usage == Usage(97, 61, 0, None, 0, 45, 48)


def test_xai_reasoning_outside_completion_tokens_is_detected_from_total() -> None:
    body = {
        "id": "x1",
        "object": "chat.completion",
        "model": "grok-3-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 32,
            "completion_tokens": 9,
            "total_tokens": 135,
            "prompt_tokens_details": {
                "text_tokens": 32,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens": 6,
            },
            "completion_tokens_details": {"reasoning_tokens": 94, "audio_tokens": 0},
        },
    }
    obs = parse_response("openai", "/xai/v1/chat/completions", orjson.dumps(body), JSON)
    assert obs.usage == Usage(32, 103, 6, None, 94, 0, 0)


def test_deepseek_cache_hit_field() -> None:
    body = {
        "id": "d1",
        "object": "chat.completion",
        "model": "deepseek-chat",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 20,
            "total_tokens": 1220,
            "prompt_cache_hit_tokens": 1152,
            "prompt_cache_miss_tokens": 48,
        },
    }
    obs = parse_response("openai", "/deepseek/chat/completions", orjson.dumps(body), JSON)
    assert obs.usage == Usage(1200, 20, 1152)


def test_openai_embeddings() -> None:
    body = {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": 0,
                "embedding": [0.0023064255, -0.009327292, -0.0028842222],
            }
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    obs = parse_response("openai", "/v1/embeddings", orjson.dumps(body), JSON)
    assert obs == Observed(Usage(8, 0), "text-embedding-3-small")


def test_openai_legacy_completions() -> None:
    body = {
        "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
        "object": "text_completion",
        "created": 1589478378,
        "model": "gpt-3.5-turbo-instruct",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [
            {
                "text": "\n\nThis is indeed a test",
                "index": 0,
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }
    obs = parse_response("openai", "/v1/completions", orjson.dumps(body), JSON)
    assert obs == Observed(Usage(5, 7), "gpt-3.5-turbo-instruct")


RESPONSES_JSON = {
    "id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
    "object": "response",
    "created_at": 1741476777,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "max_output_tokens": None,
    "model": "o4-mini-2025-04-16",
    "output": [
        {"type": "reasoning", "id": "rs_6820f383d7c08191846711c5df8233bc", "summary": []},
        {
            "type": "message",
            "id": "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "The image depicts a boardwalk.", "annotations": []}],
        },
    ],
    "parallel_tool_calls": True,
    "reasoning": {"effort": "medium", "summary": None},
    "store": True,
    "temperature": 1.0,
    "tool_choice": "auto",
    "tools": [],
    "usage": {
        "input_tokens": 328,
        "input_tokens_details": {"cached_tokens": 128},
        "output_tokens": 552,
        "output_tokens_details": {"reasoning_tokens": 512},
        "total_tokens": 880,
    },
    "user": None,
    "metadata": {},
}


def test_openai_responses_json() -> None:
    obs = parse_response("openai", "/v1/responses", orjson.dumps(RESPONSES_JSON), JSON)
    assert obs == Observed(Usage(328, 552, 128, None, 512), "o4-mini-2025-04-16")


def test_openai_transcription_usage() -> None:
    body = {
        "text": "Imagine the wildest idea that you've ever had.",
        "usage": {
            "type": "tokens",
            "input_tokens": 14,
            "input_token_details": {"text_tokens": 0, "audio_tokens": 14},
            "output_tokens": 45,
            "total_tokens": 59,
        },
    }
    obs = parse_response("openai", "/v1/audio/transcriptions", orjson.dumps(body), JSON)
    assert obs.usage == Usage(14, 45, audio_input_tokens=14)


def chat_stream(
    n: int = 30,
    model: str = "gpt-4o-mini-2024-07-18",
    usage: dict[str, Any] | None = None,
    tools: bool = False,
) -> bytes:
    base = {
        "id": "chatcmpl-AbC123",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_06737a9306",
    }
    chunks: list[Any] = [
        dict(
            base,
            choices=[
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "", "refusal": None},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
            usage=None,
        )
    ]
    if tools:
        for index, (call_id, args) in enumerate(
            (
                ("call_a", ['{"loc', 'ation":', ' "Paris"}']),
                ("call_b", ['{"location"', ': "Tokyo"}']),
            )
        ):
            chunks.append(
                dict(
                    base,
                    choices=[
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "index": index,
                                        "id": call_id,
                                        "type": "function",
                                        "function": {"name": "get_weather", "arguments": ""},
                                    }
                                ]
                            },
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                    usage=None,
                )
            )
            for part in args:
                chunks.append(
                    dict(
                        base,
                        choices=[
                            {
                                "index": 0,
                                "delta": {"tool_calls": [{"index": index, "function": {"arguments": part}}]},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ],
                        usage=None,
                    )
                )
        finish = "tool_calls"
    else:
        for i in range(n - 3):
            chunks.append(
                dict(
                    base,
                    choices=[
                        {
                            "index": 0,
                            "delta": {"content": f" token{i}"},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                    usage=None,
                )
            )
        finish = "stop"
    chunks.append(
        dict(
            base,
            choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}],
            usage=None,
        )
    )
    if usage is not None:
        chunks.append(dict(base, choices=[], usage=usage))
    return sse(*chunks) + b"data: [DONE]\n\n"


CHAT_USAGE = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
CHAT_USAGE_PARSED = Usage(2006, 300, 1920, None, 0, 0, 0)


def test_openai_chat_stream_with_usage_chunk() -> None:
    obs = parse_response("openai", "/v1/chat/completions", chat_stream(usage=CHAT_USAGE), SSE)
    assert obs == Observed(CHAT_USAGE_PARSED, "gpt-4o-mini-2024-07-18", None)


def test_openai_chat_stream_parallel_tool_calls() -> None:
    obs = parse_response("openai", "/v1/chat/completions", chat_stream(usage=CHAT_USAGE, tools=True), SSE)
    assert obs == Observed(CHAT_USAGE_PARSED, "gpt-4o-mini-2024-07-18", None)


def test_openai_chat_stream_without_usage() -> None:
    obs = parse_response("openai", "/v1/chat/completions", chat_stream(usage=None), SSE)
    assert obs == Observed(None, "gpt-4o-mini-2024-07-18", None)


def test_usage_in_every_chunk_takes_the_last() -> None:
    # Perplexity / some gateways repeat cumulative usage in every chunk.
    chunks: list[dict[str, Any]] = [
        {
            "id": "p",
            "model": "sonar",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
            "usage": {"prompt_tokens": 10, "completion_tokens": i, "total_tokens": 10 + i},
        }
        for i in range(1, 6)
    ]
    chunks[-1]["choices"][0]["finish_reason"] = "stop"
    obs = parse_response("openai", "/perplexity/chat/completions", sse(*chunks) + b"data: [DONE]\n\n", SSE)
    assert obs == Observed(Usage(10, 5), "sonar")


def test_usage_in_every_chunk_cut_before_the_end() -> None:
    chunks = [
        {
            "id": "p",
            "model": "sonar",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
            "usage": {"prompt_tokens": 10, "completion_tokens": i, "total_tokens": 10 + i},
        }
        for i in range(1, 6)
    ]
    obs = parse_response("openai", "/perplexity/chat/completions", sse(*chunks[:3]), SSE)
    assert obs == Observed(Usage(10, 3), "sonar", "truncated stream")


def test_groq_x_groq_usage() -> None:
    last = {
        "id": "chatcmpl-g",
        "object": "chat.completion.chunk",
        "model": "llama-3.3-70b-versatile",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "x_groq": {
            "id": "req_01",
            "usage": {
                "queue_time": 0.02,
                "prompt_tokens": 24,
                "prompt_time": 0.001,
                "completion_tokens": 377,
                "completion_time": 0.3,
                "total_tokens": 401,
                "total_time": 0.31,
            },
        },
    }
    body = sse(
        {
            "id": "chatcmpl-g",
            "object": "chat.completion.chunk",
            "model": "llama-3.3-70b-versatile",
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
        },
        last,
    )
    obs = parse_response("openai", "/groq/openai/v1/chat/completions", body + b"data: [DONE]\n\n", SSE)
    assert obs == Observed(Usage(24, 377), "llama-3.3-70b-versatile")


def test_azure_content_filter_chunk_has_empty_model() -> None:
    first = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
    body = sse(first) + chat_stream(usage=CHAT_USAGE, model="gpt-4o-2024-11-20")
    obs = parse_response("openai", "/openai/deployments/x/chat/completions", body, SSE)
    assert obs == Observed(CHAT_USAGE_PARSED, "gpt-4o-2024-11-20", None)


def test_openai_stream_error_event() -> None:
    body = sse(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}],
        },
        {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
            }
        },
    )
    assert parse_response("openai", "/v1/chat/completions", body, SSE) == Observed(
        None, "gpt-4o", None, stream_error=True
    )


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n", b"\r\r"])
def test_openai_stream_any_line_ends(sep: bytes) -> None:
    body = chat_stream(usage=CHAT_USAGE).replace(b"\n\n", sep)
    obs = parse_response("openai", "/v1/chat/completions", body, SSE)
    assert obs == Observed(CHAT_USAGE_PARSED, "gpt-4o-mini-2024-07-18", None)


def test_openai_stream_cut_at_every_offset() -> None:
    body = chat_stream(n=8, usage=CHAT_USAGE)
    usage_end = body.index(b"data: [DONE]")
    usage_start = body.rindex(b"data: {", 0, usage_end)
    for i in range(len(body) + 1):
        obs = parse_response("openai", "/v1/chat/completions", body[:i], SSE)
        if i < usage_end - 2:  # the usage chunk is not complete yet
            assert obs.usage is None, i
        if i >= usage_end - 1:
            assert obs.usage == CHAT_USAGE_PARSED, i
            assert obs.parse_error is None, i
        if 0 < i < usage_start:
            assert obs.parse_error == "truncated stream", i


def test_openai_stream_with_invalid_utf8_chunk() -> None:
    body = chat_stream(n=5, usage=CHAT_USAGE).replace(b" token1", b" tok\xff\xfeen1")
    obs = parse_response("openai", "/v1/chat/completions", body, SSE)
    assert obs.usage == CHAT_USAGE_PARSED
    # Broken last chunk: the usage chunk is unreadable, which is reported.
    broken = chat_stream(n=5, usage=CHAT_USAGE).replace(b'"prompt_tokens":2006', b'"prompt_tokens":\xff')
    obs = parse_response("openai", "/v1/chat/completions", broken, SSE)
    assert obs.usage is None
    assert obs.parse_error == "invalid JSON in stream event"


def responses_stream(terminal: str = "response.completed") -> bytes:
    response = {k: v for k, v in RESPONSES_JSON.items() if k not in ("output", "usage")}
    created = dict(response, status="in_progress", output=[], usage=None)
    events = [
        (
            "response.created",
            {"type": "response.created", "sequence_number": 0, "response": created},
        ),
        (
            "response.in_progress",
            {"type": "response.in_progress", "sequence_number": 1, "response": created},
        ),
        (
            "response.output_item.added",
            {
                "type": "response.output_item.added",
                "sequence_number": 2,
                "output_index": 0,
                "item": {
                    "id": "msg_1",
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            },
        ),
        (
            "response.content_part.added",
            {
                "type": "response.content_part.added",
                "sequence_number": 3,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": []},
            },
        ),
    ]
    for i, word in enumerate(["The", " image", " depicts", " a", " boardwalk."]):
        events.append(
            (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "sequence_number": 4 + i,
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": word,
                },
            )
        )
    events.append(
        (
            "response.output_text.done",
            {
                "type": "response.output_text.done",
                "sequence_number": 9,
                "item_id": "msg_1",
                "output_index": 0,
                "content_index": 0,
                "text": "The image depicts a boardwalk.",
            },
        )
    )
    final = dict(RESPONSES_JSON, status=terminal.removeprefix("response."))
    events.append((terminal, {"type": terminal, "sequence_number": 10, "response": final}))
    return sse(*events)


@pytest.mark.parametrize("terminal", ["response.completed", "response.incomplete", "response.failed"])
def test_openai_responses_stream(terminal: str) -> None:
    obs = parse_response("openai", "/v1/responses", responses_stream(terminal), SSE)
    failed = terminal == "response.failed"
    assert obs == Observed(Usage(328, 552, 128, None, 512), "o4-mini-2025-04-16", None, failed)


def test_openai_responses_stream_cut() -> None:
    body = responses_stream()
    cut = body[: body.index(b"event: response.completed")]
    assert parse_response("openai", "/v1/responses", cut, SSE) == Observed(
        None, "o4-mini-2025-04-16", "truncated stream"
    )


def test_openai_responses_stream_error_event() -> None:
    body = responses_stream()
    body = body[: body.index(b"event: response.output_item.added")] + sse(
        (
            "error",
            {
                "type": "error",
                "code": "server_error",
                "message": "oops",
                "param": None,
                "sequence_number": 2,
            },
        )
    )
    assert parse_response("openai", "/v1/responses", body, SSE) == Observed(
        None, "o4-mini-2025-04-16", None, stream_error=True
    )


def test_truncated_json_response() -> None:
    body = orjson.dumps(CHAT_TOOL_CALLS)
    obs = parse_response("openai", "/v1/chat/completions", body[: len(body) // 2], JSON)
    assert obs == Observed(None, "gpt-4o-2024-08-06", "truncated JSON")


# =============================================================================================
# Anthropic

ANTHROPIC_JSON = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {
            "type": "thinking",
            "thinking": "The user wants the weather...",
            "signature": "EqQBCgIYAhIM1gbcDa9GJwZA",
        },
        {"type": "text", "text": "I'll check the weather."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"location": "San Francisco, CA"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 100,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 5000,
        "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 503,
        "service_tier": "standard",
    },
}


def test_anthropic_json_sums_disjoint_input_counts() -> None:
    obs = parse_response("anthropic", "/v1/messages", orjson.dumps(ANTHROPIC_JSON), JSON)
    assert obs == Observed(
        Usage(
            input_tokens=7100,
            output_tokens=503,
            cache_read_tokens=5000,
            cache_write_tokens=2000,
            cache_write_1h_tokens=0,
        ),
        "claude-sonnet-4-5-20250929",
        None,
    )


def anthropic_stream(deltas: int = 2) -> bytes:
    events: list[Any] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-sonnet-4-5-20250929",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 472,
                        "cache_creation_input_tokens": 1500,
                        "cache_read_input_tokens": 3000,
                        "cache_creation": {
                            "ephemeral_5m_input_tokens": 1500,
                            "ephemeral_1h_input_tokens": 0,
                        },
                        "output_tokens": 2,
                        "service_tier": "standard",
                    },
                },
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
        ),
        ("ping", {"type": "ping"}),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "I need to find the GCD..."},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "name": "get_weather",
                    "input": {},
                },
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": ""},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"location": "San Fra'},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": 'ncisco, CA"}'},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ]
    # message_delta usage is cumulative: 40 then 89 means 89 in total, not 129.
    for output in (40, 89)[-deltas:]:
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                    "usage": {"output_tokens": output},
                },
            )
        )
    events.append(("message_stop", {"type": "message_stop"}))
    return sse(*events)


ANTHROPIC_STREAM_USAGE = Usage(
    input_tokens=4972,
    output_tokens=89,
    cache_read_tokens=3000,
    cache_write_tokens=1500,
    cache_write_1h_tokens=0,
)


def test_anthropic_stream_cumulative_delta_is_not_added() -> None:
    obs = parse_response("anthropic", "/v1/messages", anthropic_stream(), SSE)
    assert obs == Observed(ANTHROPIC_STREAM_USAGE, "claude-sonnet-4-5-20250929", None)
    assert obs.usage is not None and obs.usage.reasoning_tokens is None


def test_anthropic_delta_with_input_fields_overrides_start() -> None:
    body = anthropic_stream(deltas=1).replace(
        b'"usage":{"output_tokens":89}',
        b'"usage":{"input_tokens":472,"cache_creation_input_tokens":1500,"cache_read_input_tokens":3100,'
        b'"output_tokens":89,"server_tool_use":null}',
    )
    obs = parse_response("anthropic", "/v1/messages", body, SSE)
    assert obs.usage == Usage(5072, 89, 3100, 1500, cache_write_1h_tokens=0)


def test_anthropic_stream_without_event_lines() -> None:
    body = b"".join(line + b"\n" for line in anthropic_stream().split(b"\n") if not line.startswith(b"event:"))
    obs = parse_response("anthropic", "/v1/messages", body, SSE)
    assert obs == Observed(ANTHROPIC_STREAM_USAGE, "claude-sonnet-4-5-20250929", None)


def test_anthropic_stream_cut_at_every_offset() -> None:
    body = anthropic_stream()
    start_end = body.index(b"event: content_block_start")
    stop_at = body.index(b"event: message_stop")
    for i in range(len(body) + 1):
        obs = parse_response("anthropic", "/v1/messages", body[:i], SSE)
        if i < start_end - 1:
            assert obs.usage is None, i
        elif i < stop_at:
            # Usage seen so far: all the input side, output so far.
            assert obs.usage is not None and obs.usage.input_tokens == 4972, i
            assert obs.usage.output_tokens in (2, 40, 89), i
            assert obs.parse_error == "truncated stream", i
        assert obs.response_model in (None, "claude-sonnet-4-5-20250929")
    assert parse_response("anthropic", "/v1/messages", body, SSE).parse_error is None


def test_anthropic_overloaded_mid_stream() -> None:
    body = anthropic_stream()
    body = body[: body.index(b"event: content_block_stop")] + sse(
        ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    )
    obs = parse_response("anthropic", "/v1/messages", body, SSE)
    assert obs == Observed(
        Usage(4972, 2, 3000, 1500, cache_write_1h_tokens=0), "claude-sonnet-4-5-20250929", None, stream_error=True
    )


def test_anthropic_thinking_breakdown_if_sent() -> None:
    body = dict(
        ANTHROPIC_JSON,
        usage={
            "input_tokens": 10,
            "output_tokens": 300,
            "output_tokens_details": {"thinking_tokens": 250},
        },
    )
    obs = parse_response("anthropic", "/v1/messages", orjson.dumps(body), JSON)
    assert obs.usage == Usage(10, 300, None, None, 250)


# =============================================================================================
# Gemini

GEMINI_JSON = {
    "candidates": [
        {
            "content": {
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "CiQB0e2Kb6Lr0Zs1",
                    },
                    {"functionCall": {"name": "get_weather", "args": {"city": "London"}}},
                ],
                "role": "model",
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 1204,
        "candidatesTokenCount": 211,
        "totalTokenCount": 2315,
        "cachedContentTokenCount": 1024,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1204}],
        "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 1024}],
        "thoughtsTokenCount": 900,
    },
    "modelVersion": "gemini-2.5-flash",
    "responseId": "mKdoaPmJLqCxqtsP2K_H8Ac",
}
GEMINI_USAGE = Usage(input_tokens=1204, output_tokens=1111, cache_read_tokens=1024, reasoning_tokens=900)


def test_gemini_json_thoughts_count_as_output() -> None:
    obs = parse_response("gemini", "/v1beta/models/gemini-2.5-flash:generateContent", orjson.dumps(GEMINI_JSON), JSON)
    assert obs == Observed(GEMINI_USAGE, "gemini-2.5-flash", None)


def test_gemini_tool_use_prompt_and_audio() -> None:
    body = {
        "candidates": [{"content": {"parts": [{"text": "ok"}], "role": "model"}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": 700,
            "candidatesTokenCount": 20,
            "toolUsePromptTokenCount": 50,
            "totalTokenCount": 770,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 100},
                {"modality": "AUDIO", "tokenCount": 600},
            ],
            "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 20}],
        },
        "modelVersion": "gemini-2.5-flash",
    }
    obs = parse_response("gemini", "/v1beta/models/gemini-2.5-flash:generateContent", orjson.dumps(body), JSON)
    assert obs.usage == Usage(750, 20, 0, None, 0, 600, None)


def test_gemini_blocked_prompt_omits_zero_counts() -> None:
    body = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
        "modelVersion": "gemini-2.5-flash",
    }
    obs = parse_response("gemini", "/v1beta/models/gemini-2.5-flash:generateContent", orjson.dumps(body), JSON)
    assert obs.usage == Usage(8, 0, 0, None, 0)


def gemini_chunks() -> list[dict[str, Any]]:
    words = ["The", " sky", " is", " blue", " because", " of Rayleigh scattering."]
    chunks = []
    for i, word in enumerate(words):
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": word}], "role": "model"},
            "index": 0,
        }
        usage: dict[str, Any] = {
            "promptTokenCount": 1204,
            "totalTokenCount": 1204 + i,
            "cachedContentTokenCount": 1024,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 1204}],
        }
        if i:
            usage["candidatesTokenCount"] = 35 * i
            usage["thoughtsTokenCount"] = 900
        if i == len(words) - 1:
            candidate["finishReason"] = "STOP"
            usage["candidatesTokenCount"] = 211
        chunks.append(
            {
                "candidates": [candidate],
                "usageMetadata": usage,
                "modelVersion": "gemini-2.5-flash",
                "responseId": "mKdoaPmJLqCxqtsP2K_H8Ac",
            }
        )
    return chunks


GEMINI_STREAM = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in gemini_chunks())
GEMINI_ARRAY = b"[" + b"\n,\r\n".join(json.dumps(c, indent=2).encode() for c in gemini_chunks()) + b"\n]"
STREAM_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"


def test_gemini_sse_takes_last_usage() -> None:
    obs = parse_response("gemini", STREAM_PATH + "?alt=sse", GEMINI_STREAM, SSE)
    assert obs == Observed(GEMINI_USAGE, "gemini-2.5-flash", None)


def test_gemini_json_array_stream() -> None:
    obs = parse_response("gemini", STREAM_PATH, GEMINI_ARRAY, JSON)
    assert obs == Observed(GEMINI_USAGE, "gemini-2.5-flash", None)


def test_gemini_sse_cut_at_every_offset() -> None:
    body = GEMINI_STREAM
    last = body.rindex(b"data: ")
    for i in range(len(body) + 1):
        obs = parse_response("gemini", STREAM_PATH + "?alt=sse", body[:i], SSE)
        if 0 < i < last:
            assert obs.parse_error == "truncated stream", i
            if obs.usage is not None:
                assert obs.usage.input_tokens == 1204 and obs.usage.cache_read_tokens == 1024
        if i >= len(body) - 2:
            assert obs == Observed(GEMINI_USAGE, "gemini-2.5-flash", None), i


def test_gemini_json_array_cut_at_every_offset() -> None:
    body = GEMINI_ARRAY
    second = body.index(b"\n,\r\n")
    assert parse_response("gemini", STREAM_PATH, b"", JSON).parse_error == "empty body"
    for i in range(1, len(body)):
        obs = parse_response("gemini", STREAM_PATH, body[:i], JSON)
        assert obs.parse_error == "truncated stream", i
        if i > second:
            assert obs.usage is not None and obs.usage.input_tokens == 1204, i
            assert obs.response_model == "gemini-2.5-flash"


def test_gemini_sse_error_chunk() -> None:
    body = GEMINI_STREAM[: GEMINI_STREAM.index(b"data: ", 10)] + (
        b'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}\r\n\r\n'
    )
    obs = parse_response("gemini", STREAM_PATH + "?alt=sse", body, SSE)
    assert obs.usage == Usage(1204, 0, 1024, None, 0)
    assert obs.parse_error is None and obs.stream_error


# =============================================================================================
# OpenAI-compatible endpoints of other families


def test_gemini_and_anthropic_openai_compatible_endpoints() -> None:
    body = b'{"model":"gemini-2.5-flash","stream":true,"user":"u7","messages":[]}'
    info = parse_request("gemini", "/v1beta/openai/chat/completions", body)
    assert (info.model, info.stream, info.user) == ("gemini-2.5-flash", True, "u7")
    info = parse_request("anthropic", "/v1/chat/completions", b'{"model":"claude-sonnet-4-5"}')
    assert info.model == "claude-sonnet-4-5"
    stream = chat_stream(model="gemini-2.5-flash", usage=CHAT_USAGE)
    obs = parse_response("gemini", "/v1beta/openai/chat/completions", stream, SSE)
    assert obs == Observed(CHAT_USAGE_PARSED, "gemini-2.5-flash", None)


# =============================================================================================
# Robustness


# =============================================================================================
# Bodies without usage: error bodies as each provider sends them, media, proxies' HTML, nothing.
# (id, family, path, body, content type, what is observed)

CHAT = "/v1/chat/completions"
NO_USAGE: list[tuple[str, Family, str, bytes, str, Observed]] = [
    (
        "openai error",
        "openai",
        CHAT,
        b'{\n  "error": {\n    "message": "Incorrect API key provided: sk-proj-****abcd.",\n'
        b'    "type": "invalid_request_error",\n    "param": null,\n    "code": "invalid_api_key"\n  }\n}\n',
        JSON,
        Observed(),
    ),
    (
        "anthropic error",
        "anthropic",
        "/v1/messages",
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}',
        JSON,
        Observed(),
    ),
    (
        "gemini error",
        "gemini",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        b'{\n  "error": {\n    "code": 400,\n    "message": "API key not valid. Please pass a valid API key.",\n'
        b'    "status": "INVALID_ARGUMENT"\n  }\n}\n',
        JSON,
        Observed(),
    ),
    (
        "whisper duration usage",
        "openai",
        "/v1/audio/transcriptions",
        b'{"text":"Hello","usage":{"type":"duration","seconds":3}}',
        JSON,
        Observed(),
    ),
    (
        "speech audio",
        "openai",
        "/v1/audio/speech",
        b"ID3\x04\x00\x00\x00\x00\x00\x23TSSE\x00\x00\x00\x0f\x00\x00\x03Lavf58\xff\xfb\x90",
        "audio/mpeg",
        Observed(),
    ),
    (
        "html from a proxy",
        "openai",
        CHAT,
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        "text/html",
        Observed(parse_error="not JSON"),
    ),
    ("empty", "openai", CHAT, b"", JSON, Observed(parse_error="empty body")),
]


@pytest.mark.parametrize(
    ("family", "path", "body", "content_type", "observed"),
    [case[1:] for case in NO_USAGE],
    ids=[c[0] for c in NO_USAGE],
)
def test_bodies_without_usage(family: Family, path: str, body: bytes, content_type: str, observed: Observed) -> None:
    assert parse_response(family, path, body, content_type) == observed


@pytest.mark.parametrize("family", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"a":' * 100_000,
        b"data: " + b"[" * 100_000 + b"\n\n",
        b"\xff\xfe\x00garbage",
        b"data: \xff\n\ndata: [DONE]\n\n",
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":-5}}\n\n',
        b'{"usage": {"prompt_tokens": true, "completion_tokens": 1e400}}',
        b'{"usage": "lots", "usageMetadata": [1, 2], "model": 5}',
        b"[1, 2, 3]",
        b": just a comment\n\n",
        b"\n\n\n",
    ],
)
def test_response_garbage_never_raises(family: Family, body: bytes) -> None:
    start = time.perf_counter()
    obs = parse_response(family, "/v1/chat/completions", body, SSE)  # type: ignore[arg-type]
    assert time.perf_counter() - start < 0.2
    assert isinstance(obs, Observed)
    if obs.usage is not None:
        assert all(v is None or (type(v) is int and v >= 0) for v in obs.usage.as_fields().values())


def test_request_accepts_bytearray_and_memoryview() -> None:
    body = b'{"model":"gpt-4o","stream":true}'
    for wrapped in (bytearray(body), memoryview(body)):
        info = parse_request("openai", "/v1/chat/completions", wrapped)  # type: ignore[arg-type]
        assert (info.model, info.stream, info.parse_error) == ("gpt-4o", True, None)


def test_response_accepts_bytearray() -> None:
    body = bytearray(chat_stream(usage=CHAT_USAGE))
    assert parse_response("openai", "/v1/chat/completions", body, SSE).usage == CHAT_USAGE_PARSED  # type: ignore[arg-type]


def test_long_stream_is_cheap() -> None:
    body = chat_stream(n=5_000, usage=CHAT_USAGE)
    parse_response("openai", "/v1/chat/completions", body, SSE)
    start = time.perf_counter()
    for _ in range(20):
        obs = parse_response("openai", "/v1/chat/completions", body, SSE)
    assert obs.usage == CHAT_USAGE_PARSED
    assert (time.perf_counter() - start) / 20 < 0.005  # walks from the end: not per token


def test_anthropic_one_hour_cache_writes_are_read_for_pricing() -> None:
    body = dict(ANTHROPIC_JSON)
    body["usage"] = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 900,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 600},
        "output_tokens": 7,
    }
    usage = parse_response("anthropic", "/v1/messages", orjson.dumps(body), JSON).usage
    assert usage is not None and (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (900, 600)
    assert "cache_write_1h_tokens" not in usage.as_fields()  # priced, not a record column


# =============================================================================================
# Completeness: has the terminal event been sent?

from relaylog.providers.parsing import stream_ended  # noqa: E402
from relaylog.standin.app import App  # noqa: E402
from relaylog.standin.wire import Request  # noqa: E402

_MSGS = [{"role": "user", "content": "Say hello"}]
# (family, endpoint, body, extra headers): one stream of each format the stand-in speaks.
STREAMS: dict[str, tuple[Family, str, dict[str, Any], dict[str, str]]] = {
    "chat": ("openai", "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": _MSGS, "stream": True}, {}),
    "chat+usage": (
        "openai",
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": _MSGS, "stream": True, "stream_options": {"include_usage": True}},
        {},
    ),
    "chat-error": (
        "openai",
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": _MSGS, "stream": True},
        {"x-standin-scenario": "stream-error"},
    ),
    "responses": ("openai", "/v1/responses", {"model": "gpt-4o-mini", "input": "Say hello", "stream": True}, {}),
    "responses-cut-short": (
        "openai",
        "/v1/responses",
        {"model": "gpt-4o-mini", "input": "Say hello", "stream": True, "max_output_tokens": 2},
        {},
    ),
    "responses-failed": (
        "openai",
        "/v1/responses",
        {"model": "gpt-4o-mini", "input": "Say hello", "stream": True},
        {"x-standin-scenario": "stream-error"},
    ),
    "anthropic": (
        "anthropic",
        "/v1/messages",
        {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": _MSGS, "stream": True},
        {},
    ),
    "anthropic-error": (
        "anthropic",
        "/v1/messages",
        {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": _MSGS, "stream": True},
        {"x-standin-scenario": "stream-error"},
    ),
    "anthropic-openai-compatible": (
        "anthropic",
        "/v1/chat/completions",
        {"model": "claude-haiku-4-5", "messages": _MSGS, "stream": True},
        {},
    ),
    "gemini": (
        "gemini",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
        {},
    ),
    "gemini-refusal": (
        "gemini",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
        {"x-standin-scenario": "refusal"},
    ),
    "gemini-error": (
        "gemini",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
        {"x-standin-scenario": "stream-error"},
    ),
    "gemini-array": (
        "gemini",
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
        {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]},
        {},
    ),
}


def _events(name: str) -> tuple[Family, str, list[bytes]]:
    """The stand-in's events for that stream: its last one is the terminal event (or, for a JSON
    array, the closing bracket)."""
    family, endpoint, body, headers = STREAMS[name]
    request = Request("POST", endpoint, [("content-type", "application/json"), *headers.items()], orjson.dumps(body))
    reply, _ = App(gzip=False).handle(request)
    assert reply.status == 200 and reply.events, name
    return family, endpoint, reply.events


@pytest.mark.parametrize("name", list(STREAMS))
def test_a_stream_has_ended_exactly_once_its_terminal_event_is_whole(name: str) -> None:
    family, endpoint, events = _events(name)
    whole = b"".join(events)
    assert stream_ended(family, endpoint, whole)
    last = events[-1]
    for kept in range(len(events)):  # every event boundary before the terminal event
        assert not stream_ended(family, endpoint, b"".join(events[:kept])), kept
    for cut in range(1, len(last)):  # inside the terminal event, its blank line not yet sent
        assert not stream_ended(family, endpoint, whole[: len(whole) - cut]), cut


@pytest.mark.parametrize("name", ["chat", "responses", "anthropic", "gemini"])
def test_a_stream_has_ended_with_a_little_after_its_terminal_event(name: str) -> None:
    family, endpoint, events = _events(name)
    crlf = family == "gemini"
    comment = b": keep-alive\r\n\r\n" if crlf else b": keep-alive\n\n"
    late_usage = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n'
    assert stream_ended(family, endpoint, b"".join(events) + comment)
    assert stream_ended(family, endpoint, b"".join(events) + late_usage + late_usage[:10])


def test_stream_ended_never_raises_and_is_false_for_what_is_not_a_stream() -> None:
    for family in ("openai", "anthropic", "gemini"):
        for body in (b"", b"{", b'{"id": "x"}', b"data: [DON", b"\xff\xfe\n\n", b"[1, 2", b"data: {\n\n" * 3):
            assert stream_ended(family, "/v1/chat/completions", body) is False  # type: ignore[arg-type]
    assert stream_ended("openai", "/v1/chat/completions", b"data: [DONE]\r\n\r\n")
    assert stream_ended("anthropic", "/v1/messages", b'data: {"type":"message_stop"}\n\n')  # no `event:` lines


def test_read_response_answers_as_the_two_readers_do() -> None:
    """The record's one call (a JSON body decoded once) against parse_response and read_outcome."""
    gemini_path = "/v1beta/models/gemini-2.5-flash:generateContent"
    cases: list[tuple[Family, str, bytes]] = [
        ("openai", CHAT, orjson.dumps(CHAT_TOOL_CALLS)),
        ("openai", "/v1/responses", orjson.dumps(RESPONSES_JSON)),
        ("openai", CHAT, chat_stream()),
        ("openai", "/v1/responses", responses_stream()),
        ("anthropic", "/v1/messages", orjson.dumps(ANTHROPIC_JSON)),
        ("anthropic", "/v1/messages", anthropic_stream()),
        ("anthropic", CHAT, orjson.dumps(CHAT_TOOL_CALLS)),  # Anthropic's OpenAI-compatible endpoint
        ("gemini", gemini_path, orjson.dumps(GEMINI_JSON)),
        ("gemini", STREAM_PATH, GEMINI_STREAM),
        ("gemini", STREAM_PATH, GEMINI_ARRAY),
        ("openai", CHAT, b'{"choices": 5, "usage": {"prompt_tokens": "x"}}'),  # wrong types
        ("openai", CHAT, b'{"id": "chatcmpl-1", "choices": [{"finish_reason": "stop"'),  # cut
        ("openai", CHAT, b' \n{"id": "chatcmpl-1", "choices": [{"finish_reason": "stop", "index": 0}]}'),
    ]
    cases += [(family, path, body) for _, family, path, body, _, _ in NO_USAGE]
    for family, path, body in cases:
        for content_type in (JSON, SSE):
            expected = (parse_response(family, path, body, content_type), read_outcome(family, path, body))
            assert read_response(family, path, body, content_type) == expected, (family, path, body[:60])
            # The end withheld from the client (the usage chunk relaylog asked for, or what came
            # after the client left): usage from all of it, the outcome from what the client saw.
            for cut in {0, 1, len(body) // 2, body.rfind(b"\n\n") + 2, len(body) - 1}:
                seen, rest = body[:cut], body[cut:]
                expected = (parse_response(family, path, body, content_type), read_outcome(family, path, seen))
                assert read_response(family, path, seen, content_type, rest) == expected, (family, path, cut)
