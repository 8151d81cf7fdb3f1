"""OpenAI wire format: Chat Completions, Responses, embeddings, legacy completions, audio.

Most other providers (Groq, Mistral, Together, DeepSeek, OpenRouter, xAI, Fireworks, Perplexity,
Azure) speak this format too, with a few extra usage fields handled here.

This module only sees decoded objects and split SSE events; byte-level work (JSON loading, SSE
framing, sniffing the body) lives in `parsing.py` and `sse.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from relaylog.providers.fields import as_dict, count, text
from relaylog.usage import Observed, Usage, stream_observed

# Responses API stream events that carry the final `response` object with its usage.
_TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_TERMINAL_NAMES = frozenset(name.encode() for name in _TERMINAL_EVENTS)


def request_fields(obj: dict[str, Any], endpoint: str) -> tuple[str | None, bool, str | None]:
    """(model, stream, user) from a request body."""
    model = text(obj, "model")
    if model is None:
        model = _azure_deployment(endpoint)
    user = obj.get("user")
    if not isinstance(user, str) or not user:
        # `safety_identifier` replaces the deprecated `user` in newer OpenAI APIs.
        user = obj.get("safety_identifier")
        if not isinstance(user, str) or not user:
            user = None
    return model, obj.get("stream") is True, user


def _azure_deployment(endpoint: str) -> str | None:
    # Azure puts no model in the body: `/openai/deployments/{deployment}/chat/completions`.
    marker = "/deployments/"
    i = endpoint.find(marker)
    if i < 0:
        return None
    name = endpoint[i + len(marker) :].split("/", 1)[0].split("?", 1)[0]
    return name or None


def usage_from(u: dict[str, Any]) -> Usage | None:
    """Normalise an OpenAI-style usage object (either naming scheme) to record schema v1."""
    if "prompt_tokens" in u or "completion_tokens" in u:
        # Chat Completions, legacy completions, embeddings. prompt_tokens already includes cached
        # (and audio) tokens, and completion_tokens includes reasoning tokens: same as our schema.
        inp = count(u.get("prompt_tokens"))
        out = count(u.get("completion_tokens"))
        if out is None and inp is not None and "completion_tokens" not in u:
            out = 0  # embeddings produce no output tokens
        in_details = as_dict(u.get("prompt_tokens_details"))
        out_details = as_dict(u.get("completion_tokens_details"))
        cache_read = count(in_details.get("cached_tokens"))
        if cache_read is None:
            # DeepSeek's own field, and xAI's older one; both are part of prompt_tokens.
            cache_read = count(u.get("prompt_cache_hit_tokens"))
            if cache_read is None:
                cache_read = count(u.get("cached_prompt_text_tokens"))
    elif "input_tokens" in u or "output_tokens" in u:
        # Responses API, audio transcriptions (`input_token_details`), images.
        inp = count(u.get("input_tokens"))
        out = count(u.get("output_tokens"))
        in_details = as_dict(u.get("input_tokens_details") or u.get("input_token_details"))
        out_details = as_dict(u.get("output_tokens_details") or u.get("output_token_details"))
        cache_read = count(in_details.get("cached_tokens"))
    else:
        return None  # e.g. whisper's {"type": "duration", "seconds": 3}
    if inp is None and out is None:
        return None

    reasoning = count(out_details.get("reasoning_tokens"))
    # Perplexity reports reasoning and citation tokens at the top level, outside completion_tokens
    # (genai-prices' extractor adds them to output too).
    extra = 0
    top_reasoning = count(u.get("reasoning_tokens"))
    if top_reasoning is not None:
        reasoning = top_reasoning if reasoning is None else reasoning
        extra += top_reasoning
    citations = count(u.get("citation_tokens"))
    if citations is not None:
        extra += citations
    if out is not None:
        out += extra
        # xAI counts reasoning tokens outside completion_tokens; the provider's own total tells
        # which convention this response used, so nothing is assumed.
        total = count(u.get("total_tokens"))
        if reasoning and not extra and inp is not None and total == inp + out + reasoning:
            out += reasoning

    return Usage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cache_read,
        # OpenRouter reports cache writes here; they are part of prompt_tokens.
        cache_write_tokens=count(in_details.get("cache_write_tokens")),
        reasoning_tokens=reasoning,
        audio_input_tokens=count(in_details.get("audio_tokens")),
        audio_output_tokens=count(out_details.get("audio_tokens")),
    )


def _usage_of(obj: dict[str, Any]) -> Usage | None:
    u = obj.get("usage")
    if isinstance(u, dict):
        return usage_from(u)
    # Groq puts stream usage under `x_groq` when stream_options was not sent.
    u = as_dict(obj.get("x_groq")).get("usage")
    if isinstance(u, dict):
        return usage_from(u)
    return None


def from_json(obj: Any) -> Observed:
    """A complete (non-streamed) response body."""
    if not isinstance(obj, dict):
        return Observed(parse_error="not a JSON object")
    usage = _usage_of(obj)
    if usage is None and obj.get("error"):
        return Observed()  # an error body: no usage, nothing misunderstood
    return Observed(usage=usage, response_model=text(obj, "model"))


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _BAD


_BAD = object()


def from_sse(newest_first: Iterable[tuple[bytes, bytes]]) -> Observed:
    """A Chat Completions / completions / Responses event stream, possibly cut short.

    Takes (event name, data) pairs from the LAST event backwards: the usage is in the last events,
    so a long stream costs a few JSON parses, not one per token.
    """
    usage: Usage | None = None
    model: str | None = None
    done = finished = errored = bad = False
    last = True
    for name, data in newest_first:
        if data == b"[DONE]":
            done = True
            continue
        if name == b"error":
            errored = True
        # Cheap byte tests first: only events that can hold usage or the model are decoded, and
        # the last one, which says whether the stream ended normally or with an error.
        # (find, not `in`, which costs a discarded TypeError per test: relay/stream_usage.py)
        if not last and data.find(b"usage") < 0 and (model is not None or data.find(b'"model"') < 0):
            continue
        last = False
        obj = _loads(data)
        if obj is _BAD:
            bad = True
            continue
        if not isinstance(obj, dict):
            continue
        kind = obj.get("type")
        if isinstance(kind, str) and (kind.startswith("response.") or kind == "error"):
            # Responses API: usage only in the final response object.
            if kind == "error":
                errored = True
                continue
            response = as_dict(obj.get("response"))
            if model is None:
                model = text(response, "model")
            if kind in _TERMINAL_EVENTS:
                finished = True
                errored = errored or kind == "response.failed"
                u = response.get("usage")
                if isinstance(u, dict):
                    usage = usage_from(u)
                    break
            continue
        if obj.get("error") and "choices" not in obj:
            errored = True
            continue
        chunk_model = text(obj, "model")
        if model is None:
            model = chunk_model
        usage = _usage_of(obj)
        if usage is not None:
            # OpenAI's usage chunk (choices: []) is the last before [DONE]. Providers that repeat
            # cumulative usage in every chunk end with a finish_reason; anything else was cut.
            choices = obj.get("choices")
            if isinstance(choices, list) and choices:
                finished = any(isinstance(c, dict) and c.get("finish_reason") for c in choices)
            else:
                finished = True
            model = chunk_model or model
            break
    # Complete means the provider's end marker arrived: [DONE], the usage chunk (which is sent
    # last), a final Responses event, or an error. A finish_reason is not enough: the usage chunk
    # comes after it.
    return stream_observed(usage, model, ended=done or finished, errored=errored, bad_event=bad)


def terminal(name: bytes, data: bytes) -> bool:
    """Whether one stream event ends the stream: Chat Completions' `[DONE]` or error chunk, or a
    final Responses event (its `error` event is not one: `response.failed` follows it)."""
    if data == b"[DONE]" or name in _TERMINAL_NAMES:
        return True
    if b'"error"' not in data and b'"response.' not in data:
        return False  # most events: no JSON decoded
    obj = _loads(data)
    if not isinstance(obj, dict):
        return False
    return obj.get("type") in _TERMINAL_EVENTS or bool(obj.get("error") and "choices" not in obj)
