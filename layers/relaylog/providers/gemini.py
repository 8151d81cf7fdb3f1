"""Gemini (Generative Language API, also Vertex paths) wire format.

Gemini reports thinking tokens (`thoughtsTokenCount`) and tool-use prompt tokens
(`toolUsePromptTokenCount`) outside `candidatesTokenCount` / `promptTokenCount`; the record schema
counts them in output and input. Zero counts are often omitted (proto3 JSON), so inside a present
`usageMetadata` a missing count is 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

import orjson

from relaylog.providers.fields import count, text
from relaylog.usage import Observed, Usage, stream_observed


def model_from_path(endpoint: str) -> tuple[str | None, str | None]:
    """(model, action) from `/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`.

    Base models drop the `models/` prefix; tuned models keep `tunedModels/<id>` so they cannot be
    mistaken for a base model. Vertex paths (`.../publishers/google/models/<id>:<action>`) work too.
    """
    path = endpoint.split("?", 1)[0]
    base = path.rfind("/models/")
    tuned = path.rfind("/tunedModels/")
    if tuned > base:
        prefix, rest = "tunedModels/", path[tuned + len("/tunedModels/") :]
    elif base >= 0:
        prefix, rest = "", path[base + len("/models/") :]
    else:
        return None, None
    if "%" in rest:
        rest = unquote(rest)  # some clients escape the ':' before the action
    rest = rest.split("/", 1)[0]
    name, _, action = rest.partition(":")
    return (prefix + name if name else None), (action or None)


def usage_from(um: dict[str, Any]) -> Usage | None:
    prompt = count(um.get("promptTokenCount"))
    candidates = count(um.get("candidatesTokenCount"))
    thoughts = count(um.get("thoughtsTokenCount"))
    tool_prompt = count(um.get("toolUsePromptTokenCount"))
    if prompt is None and candidates is None and thoughts is None and tool_prompt is None:
        return None
    return Usage(
        input_tokens=(prompt or 0) + (tool_prompt or 0),
        output_tokens=(candidates or 0) + (thoughts or 0),
        # cachedContentTokenCount is part of promptTokenCount, as our schema wants. Gemini leaves
        # out counts that are zero, so inside a usageMetadata a missing count is 0, not unknown.
        cache_read_tokens=count(um.get("cachedContentTokenCount")) or 0,
        reasoning_tokens=thoughts or 0,
        audio_input_tokens=_modality(um, ("promptTokensDetails", "toolUsePromptTokensDetails")),
        audio_output_tokens=_modality(um, ("candidatesTokensDetails",)),
    )


def _modality(um: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    total: int | None = None
    for key in keys:
        details = um.get(key)
        if not isinstance(details, list):
            continue
        for item in details:
            if isinstance(item, dict) and item.get("modality") == "AUDIO":
                n = count(item.get("tokenCount"))
                if n is not None:
                    total = (total or 0) + n
    return total


def _observe(chunks: list[Any]) -> tuple[Usage | None, str | None, bool]:
    """(usage, model, errored) from response objects; the last usageMetadata wins (cumulative)."""
    usage: Usage | None = None
    model: str | None = None
    errored = False
    for obj in chunks:
        if not isinstance(obj, dict):
            continue
        if obj.get("error"):
            errored = True
            continue
        model = text(obj, "modelVersion") or model
        um = obj.get("usageMetadata")
        if isinstance(um, dict):
            usage = usage_from(um) or usage
    return usage, model, errored


def from_json(obj: Any) -> Observed:
    """generateContent (an object) or a complete streamGenerateContent JSON array."""
    if isinstance(obj, dict):
        if obj.get("error"):
            return Observed()
        usage, model, _ = _observe([obj])
        return Observed(usage=usage, response_model=model)
    if isinstance(obj, list):
        usage, model, errored = _observe(obj)
        return Observed(usage=usage, response_model=model, stream_error=errored)
    return Observed(parse_error="not a JSON object")


def _finished(obj: dict[str, Any]) -> bool:
    if isinstance(obj.get("promptFeedback"), dict) and obj["promptFeedback"].get("blockReason"):
        return True
    candidates = obj.get("candidates")
    # Only a list is iterated: `"candidates": true` raised TypeError (found by tests/test_fuzz.py).
    for candidate in candidates if isinstance(candidates, list) else ():
        if isinstance(candidate, dict) and candidate.get("finishReason"):
            return True
    return False


def terminal(data: bytes) -> bool:
    """Whether one stream chunk ends the stream: Gemini sends no end marker, its last chunk is the
    one with a finish reason (or a blocked prompt) and the final usageMetadata; or an error."""
    if b"finishReason" not in data and b"blockReason" not in data and b'"error"' not in data:
        return False
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and (bool(obj.get("error")) or _finished(obj))


def from_sse(newest_first: Iterable[tuple[bytes, bytes]]) -> Observed:
    """streamGenerateContent with alt=sse: one GenerateContentResponse per event.

    Takes (event name, data) pairs from the LAST event backwards: the last chunk carries the final
    cumulative usageMetadata.
    """
    usage: Usage | None = None
    model: str | None = None
    finished = errored = bad = False
    first = True
    for _, data in newest_first:
        if not first and b"usageMetadata" not in data:
            continue
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            bad = True
            continue
        if not isinstance(obj, dict):
            continue
        if first:
            # The last complete chunk says whether the provider finished the answer.
            first = False
            finished = _finished(obj)
        if obj.get("error"):
            errored = True
            continue
        model = model or text(obj, "modelVersion")
        um = obj.get("usageMetadata")
        if isinstance(um, dict) and (found := usage_from(um)) is not None:
            usage = found
            model = text(obj, "modelVersion") or model
            break
    return stream_observed(usage, model, ended=finished, errored=errored, bad_event=bad)


def from_partial_array(body: bytes, reason: str) -> Observed:
    """A streamGenerateContent JSON array (no alt=sse) that did not parse whole (usually because
    the stream was cut, `reason` says): use the elements before the damage.

    Only reached when the whole array failed to parse, so the slower stdlib decoder is fine; it
    raises RecursionError on absurd nesting, which is caught.
    """
    text = body.decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    i = text.find("[") + 1
    n = len(text)
    chunks: list[Any] = []
    while i < n:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n or text[i] == "]":
            break
        try:
            obj, i = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            break
        chunks.append(obj)
    usage, model, errored = _observe(chunks)
    return Observed(usage=usage, response_model=model, parse_error=reason, stream_error=errored)
