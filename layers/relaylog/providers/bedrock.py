"""Amazon Bedrock Runtime wire format: the model and operation a path names, and what Converse and
InvokeModel JSON bodies say.

Paths are `/model/{modelId}/{operation}` (the Bedrock Runtime API reference, e.g.
docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html): the model id is one
percent-encoded segment (SDKs encode `:` and the `/` of an ARN), the operation says whether the
answer streams. Bedrock's OpenAI-compatible endpoints (`/openai/v1/chat/completions`,
`/v1/chat/completions`, `.../responses`) carry OpenAI bodies and are read by the OpenAI parser.

Usage: Converse (and Amazon Nova's InvokeModel body) reports `inputTokens` without the cache reads
and writes, which come in their own fields (docs.aws.amazon.com/bedrock/latest/userguide/
prompt-caching.html), so the three are summed into the record's input, as for Anthropic. An
InvokeModel body is read by its shape, whatever the model id says (an application inference profile
ARN names no model): Anthropic Messages, Converse-shaped (Nova), Meta Llama, Amazon Titan, and
OpenAI-shaped chat (AI21 Jamba, OpenAI gpt-oss, DeepSeek). Mistral's and Cohere's InvokeModel
bodies carry no token counts; their usage is recorded as absent, never guessed.

The model recorded and priced is the one in the path: a body's own model name (Anthropic's) drops
the inference profile, and a `global.` profile is priced apart from a regional one.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import unquote

from relaylog.providers import anthropic, openai
from relaylog.providers.fields import as_dict, count, text
from relaylog.providers.registry import wire_family
from relaylog.usage import Observed, Usage

Operation = Literal["converse", "converse-stream", "invoke", "invoke-with-response-stream", "openai", "other"]

_OPERATIONS: dict[str, Operation] = {
    "converse": "converse",
    "converse-stream": "converse-stream",
    "invoke": "invoke",
    "invoke-with-response-stream": "invoke-with-response-stream",
}
STREAMING: frozenset[Operation] = frozenset({"converse-stream", "invoke-with-response-stream"})
# ARN resource types whose resource id is a model id or a system inference profile id
# (`us.anthropic.claude-...`), which genai-prices knows. Other ARNs (application inference profiles,
# provisioned throughput, imported models) name no model: they are kept whole.
_NAMED_RESOURCES = ("foundation-model/", "inference-profile/")


def operation(endpoint: str) -> Operation:
    if wire_family("bedrock", endpoint) == "openai":  # the OpenAI-compatible endpoints
        return "openai"
    parts = endpoint.split("?", 1)[0].split("/")
    if len(parts) == 4 and parts[1] == "model":
        return _OPERATIONS.get(parts[3], "other")
    return "other"


def model_from_path(endpoint: str) -> str | None:
    """The model of `/model/{modelId}/...`, decoded: a model id, an inference profile id, or an ARN
    (a foundation-model or inference-profile ARN gives its resource id)."""
    parts = endpoint.split("?", 1)[0].split("/")
    if len(parts) < 3 or parts[1] != "model" or not parts[2]:
        return None
    model = unquote(parts[2])
    if model.startswith("arn:"):
        resource = model.split(":", 5)[-1]
        for kind in _NAMED_RESOURCES:
            if resource.startswith(kind) and len(resource) > len(kind):
                return resource[len(kind) :]
    return model or None


def request_fields(endpoint: str, obj: dict[str, Any]) -> tuple[str | None, bool, str | None]:
    """(model, stream, user) of a Bedrock-native request: the path names model and stream; an
    Anthropic body may name the user (`metadata.user_id`)."""
    user = as_dict(obj.get("metadata")).get("user_id")
    return model_from_path(endpoint), operation(endpoint) in STREAMING, user if isinstance(user, str) and user else None


def converse_usage(u: dict[str, Any]) -> Usage | None:
    """Converse `usage` (and Nova's InvokeModel usage, which spells the cache fields
    `cacheReadInputTokenCount` / `cacheWriteInputTokenCount`)."""
    it = count(u.get("inputTokens"))
    out = count(u.get("outputTokens"))
    if it is None and out is None:
        return None
    read = count(u["cacheReadInputTokens"] if "cacheReadInputTokens" in u else u.get("cacheReadInputTokenCount"))
    write = count(u["cacheWriteInputTokens"] if "cacheWriteInputTokens" in u else u.get("cacheWriteInputTokenCount"))
    return Usage(
        input_tokens=None if it is None else it + (read or 0) + (write or 0),
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=_written_for_an_hour(u.get("cacheDetails")),
    )


def _written_for_an_hour(details: Any) -> int | None:
    if not isinstance(details, list):
        return None
    found = [count(d.get("inputTokens")) for d in details if isinstance(d, dict) and d.get("ttl") == "1h"]
    return sum(n for n in found if n is not None) if found else None


def invocation_metrics_usage(m: dict[str, Any]) -> Usage | None:
    """`amazon-bedrock-invocationMetrics`, the last chunk of every InvokeModelWithResponseStream:
    Bedrock's own counts, input again without cache reads and writes."""
    it = count(m.get("inputTokenCount"))
    out = count(m.get("outputTokenCount"))
    if it is None and out is None:
        return None
    read = count(m.get("cacheReadInputTokenCount"))
    write = count(m.get("cacheWriteInputTokenCount"))
    return Usage(
        input_tokens=None if it is None else it + (read or 0) + (write or 0),
        output_tokens=out,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def body_usage(obj: dict[str, Any]) -> Usage | None:
    """Usage of a Converse answer or of an InvokeModel body, read by its shape."""
    u = obj.get("usage")
    if isinstance(u, dict):
        if "inputTokens" in u or "outputTokens" in u:
            return converse_usage(u)
        if obj.get("type") == "message":
            return anthropic.usage_from(u)
        return openai.usage_from(u)
    if "prompt_token_count" in obj or "generation_token_count" in obj:  # Meta Llama
        inp, out = count(obj.get("prompt_token_count")), count(obj.get("generation_token_count"))
        return None if inp is None and out is None else Usage(input_tokens=inp, output_tokens=out)
    if "inputTextTokenCount" in obj:  # Amazon Titan text (results) and embeddings (no output)
        results = obj.get("results")
        outputs = (
            [count(r.get("tokenCount")) for r in results if isinstance(r, dict)] if isinstance(results, list) else []
        )
        out = None if any(n is None for n in outputs) else sum(n for n in outputs if n is not None)
        return Usage(input_tokens=count(obj.get("inputTextTokenCount")), output_tokens=out)
    return None


def from_json(obj: Any) -> Observed:
    """A complete Converse answer or InvokeModel body. Bedrock's error bodies (`{"message": ...}`)
    carry no usage and are no parse error."""
    if not isinstance(obj, dict):
        return Observed(parse_error="not a JSON object")
    return Observed(usage=body_usage(obj))


def finish_reasons(obj: dict[str, Any]) -> tuple[str, ...] | None:
    """Why the answer stopped, in the model family's own words."""
    # Converse and Nova, Anthropic and Llama, Cohere Command R, a Titan stream chunk.
    for key in ("stopReason", "stop_reason", "finish_reason", "completionReason"):
        reason = text(obj, key)
        if reason is not None:
            return (reason,)
    for key, field in (("results", "completionReason"), ("outputs", "stop_reason"), ("generations", "finish_reason")):
        items = obj.get(key)  # Titan, Mistral, Cohere Command
        if isinstance(items, list):
            found = tuple(r for item in items if isinstance(item, dict) and (r := text(item, field)) is not None)
            if found:
                return found
    choices = obj.get("choices")  # OpenAI-shaped bodies (AI21 Jamba, gpt-oss), DeepSeek's `stop_reason`
    if isinstance(choices, list):
        found = tuple(
            r for c in choices if isinstance(c, dict) and (r := text(c, "finish_reason") or text(c, "stop_reason"))
        )
        return found or None
    return None
