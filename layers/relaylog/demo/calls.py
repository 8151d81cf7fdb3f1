"""The calls `relaylog demo` sends: a small day of an application's traffic, in each provider's own
wire format (OpenAI chat and Responses, Anthropic messages, Gemini), answered by the stand-in.

Streams and whole answers, tool calls, images, two sessions with paths, three users, properties,
two versions of one prompt, a few failures (a 429, a 529, a stream the provider cuts) and a cache
hit. Failures are asked of the stand-in with its `x-standin-fault` header, which relaylog passes
through like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# A 1x1 PNG: enough for the dashboard to show an image part.
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="

# Keys shaped like the providers' own; the stand-in checks none, and relaylog records none.
AUTH = {
    "openai": {"authorization": "Bearer sk-demo"},
    "anthropic": {"x-api-key": "sk-ant-demo", "anthropic-version": "2023-06-01"},
    "gemini": {"x-goog-api-key": "demo-key"},
}

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@dataclass(frozen=True, slots=True)
class Call:
    provider: str  # a key of AUTH
    path: str  # relaylog's path: provider prefix + the provider's own path
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: bool = False


def _meta(user: str, app: str, session: tuple[str, str, str] | None = None, **properties: str) -> dict[str, str]:
    headers = {"helicone-user-id": user, "helicone-property-app": app, "helicone-property-environment": "demo"}
    headers.update({f"helicone-property-{name}": value for name, value in properties.items()})
    if session:
        session_id, path, name = session
        headers |= {"helicone-session-id": session_id, "helicone-session-path": path, "helicone-session-name": name}
    return headers


def _chat(model: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def _gemini(text: str, **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}], **extra}


def _trip(version: int, city: str) -> dict[str, Any]:
    """Two versions of the prompt `trip-summary`: the city is an input, the wording changed in v2."""
    city_input = f'<helicone-prompt-input key="city">{city}</helicone-prompt-input>'
    system = "You are a travel assistant." if version == 1 else "You are a concise travel assistant. Use bullet points."
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Plan a day in {city_input}."},
        ],
    }


TRIP = ("demo-trip-7f3a", "Trip planner")
SUPPORT = ("demo-ticket-4812", "Support ticket 4812")


def calls() -> list[Call]:
    """Every call of the demo; CACHED is among them, and is sent again once they are all answered (a hit)."""
    openai, anthropic, gemini = "/v1/chat/completions", "/anthropic/v1/messages", "/gemini/v1beta/models"
    trip = [(TRIP[0], path, TRIP[1]) for path in ("/plan", "/plan/flights", "/plan/hotels", "/plan/summary")]
    ticket = [(SUPPORT[0], path, SUPPORT[1]) for path in ("/triage", "/triage/lookup", "/answer")]
    image = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
    ]
    return [
        # The trip planner: a session of four steps, OpenAI and Gemini, one streamed tool call.
        Call("openai", openai, _chat("gpt-4o-mini", "Plan a weekend in Lisbon."),
             _meta("alice@example.com", "travel-bot", trip[0], tier="pro")),
        Call("openai", openai, _chat("gpt-4o-mini", "Weather in Lisbon?", stream=True, tools=[{"type": "function", "function": WEATHER_TOOL}]),
             _meta("alice@example.com", "travel-bot", trip[1], tier="pro"), stream=True),
        Call("gemini", f"{gemini}/gemini-2.5-flash:streamGenerateContent?alt=sse", _gemini("Three hotels in Alfama."),
             _meta("alice@example.com", "travel-bot", trip[2], tier="pro"), stream=True),
        Call("openai", openai, _trip(1, "Lisbon"), _meta("alice@example.com", "travel-bot", trip[3], tier="pro") | {"helicone-prompt-id": "trip-summary"}),
        Call("openai", openai, _trip(1, "Porto"), _meta("bob@example.com", "travel-bot", tier="free") | {"helicone-prompt-id": "trip-summary"}),
        Call("openai", openai, _trip(2, "Madrid"), _meta("bob@example.com", "travel-bot", tier="free") | {"helicone-prompt-id": "trip-summary"}),
        Call("openai", openai, _trip(2, "Seville"), _meta("carol@example.com", "travel-bot", tier="pro") | {"helicone-prompt-id": "trip-summary"}, ),
        # The support desk: a session on Anthropic, a tool call, an image, a long streamed answer.
        Call("anthropic", anthropic, {"model": "claude-haiku-4-5", "max_tokens": 512, "messages": [{"role": "user", "content": "Customer says the app crashes on login. Triage."}]},
             _meta("carol@example.com", "support-desk", ticket[0], tier="pro")),
        Call("anthropic", anthropic, {"model": "claude-sonnet-4-5", "max_tokens": 512, "stream": True,
                                      "tools": [{"name": "lookup_order", "description": "Find an order", "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}}}],
                                      "messages": [{"role": "user", "content": "Look up order A-1009."}]},
             _meta("carol@example.com", "support-desk", ticket[1], tier="pro"), stream=True),
        Call("anthropic", anthropic, {"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": True,
                                      "messages": [{"role": "user", "content": "Write the reply to the customer."}]},
             _meta("carol@example.com", "support-desk", ticket[2], tier="pro") | {"x-standin-scenario": "long"}, stream=True),
        Call("anthropic", anthropic, {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe this screenshot."},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}}]}]},
             _meta("bob@example.com", "support-desk", tier="free")),
        # Other corners: an image to OpenAI, the Responses API streamed, Gemini tools, embeddings.
        Call("openai", openai, {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": image}]},
             _meta("bob@example.com", "photo-tagger", tier="free")),
        Call("openai", "/v1/responses", {"model": "gpt-4.1", "input": "Summarise our refund policy in one line.", "stream": True},
             _meta("alice@example.com", "support-desk", tier="pro"), stream=True),
        Call("gemini", f"{gemini}/gemini-2.5-flash:generateContent",
             _gemini("What's the weather in Oslo?", tools=[{"functionDeclarations": [WEATHER_TOOL]}]),
             _meta("carol@example.com", "travel-bot", tier="pro")),
        Call("gemini", f"{gemini}/gemini-2.0-flash:generateContent", _gemini("Translate 'good morning' to Norwegian."),
             _meta("bob@example.com", "translator", tier="free")),
        Call("openai", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["refund policy", "shipping times"]},
             _meta("alice@example.com", "search")),
        Call("openai", openai, _chat("o4-mini", "Is 1009 prime? Think it through."), _meta("carol@example.com", "math-tutor", tier="pro")),
        # What goes wrong: a rate limit, an overloaded provider, a stream cut mid-answer.
        Call("openai", openai, _chat("gpt-4o-mini", "Another one, quickly."),
             _meta("bob@example.com", "travel-bot", tier="free") | {"x-standin-fault": "status=429;retry-after=1"}),
        Call("anthropic", anthropic, {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Hello?"}]},
             _meta("carol@example.com", "support-desk", tier="pro") | {"x-standin-fault": "status=529"}),
        Call("openai", openai, _chat("gpt-4o-mini", "Tell me a long story.", stream=True),
             _meta("alice@example.com", "story-time", tier="pro") | {"x-standin-fault": "drop-after=4"}, stream=True),
        CACHED,
    ]  # fmt: skip


# Sent with the others and again once they are answered: the second time from relaylog's cache.
CACHED = Call(
    "openai",
    "/v1/chat/completions",
    _chat("gpt-4o-mini", "What are your opening hours?"),
    _meta("bob@example.com", "support-desk", tier="free") | {"helicone-cache-enabled": "true"},
)
