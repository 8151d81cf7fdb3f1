"""The providers relaylog knows, keyed by the path prefix that selects them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Family = Literal["openai", "anthropic", "gemini", "bedrock"]


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    # Scheme and host that replace the path prefix; "{resource}" is filled from the path (Azure's
    # resource name, Bedrock's region).
    origin: str
    # Wire format of requests and responses, which decides the parser.
    family: Family
    # Accepts `stream_options.include_usage` on chat streams, so usage can be asked for.
    stream_usage: bool
    # Provider id in genai-prices.
    prices_id: str


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("openai", "https://api.openai.com", "openai", True, "openai"),
        Provider("anthropic", "https://api.anthropic.com", "anthropic", False, "anthropic"),
        Provider("gemini", "https://generativelanguage.googleapis.com", "gemini", False, "google"),
        Provider("azure", "https://{resource}.openai.azure.com", "openai", True, "azure"),
        Provider("groq", "https://api.groq.com", "openai", True, "groq"),
        # Mistral and Perplexity always send usage in the last chunk and reject unknown fields.
        Provider("mistral", "https://api.mistral.ai", "openai", False, "mistral"),
        Provider("together", "https://api.together.xyz", "openai", True, "together"),
        Provider("deepseek", "https://api.deepseek.com", "openai", True, "deepseek"),
        Provider("openrouter", "https://openrouter.ai", "openai", True, "openrouter"),
        Provider("xai", "https://api.x.ai", "openai", True, "x-ai"),
        Provider("fireworks", "https://api.fireworks.ai", "openai", True, "fireworks"),
        Provider("perplexity", "https://api.perplexity.ai", "openai", False, "perplexity"),
        Provider("bedrock", "https://bedrock-runtime.{resource}.amazonaws.com", "bedrock", False, "aws"),
    )
}

# A target reached through Helicone-Target-Url on a host we do not know speaks OpenAI's format.
CUSTOM = Provider("custom", "", "openai", False, "")


def wire_family(family: Family, endpoint: str) -> Family:
    """The format a call actually uses: Gemini, Anthropic and Bedrock also serve OpenAI-compatible
    endpoints (`/v1beta/openai/chat/completions`, `/v1/chat/completions`, Bedrock's
    `/openai/v1/chat/completions` and Responses) with OpenAI bodies."""
    if family == "gemini" and "/openai/" in endpoint:
        return "openai"
    path = endpoint.split("?", 1)[0]
    if family == "anthropic" and path.endswith("/chat/completions"):
        return "openai"
    if family == "bedrock" and path.endswith(("/chat/completions", "/responses")):
        return "openai"
    return family
