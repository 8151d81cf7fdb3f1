"""Pieces shared by every provider module: the request and reply types, deterministic ids,
token estimates, scenario selection and SSE framing.

Everything here is a pure function of the request, so the same request always produces the
same bytes (tests compare responses byte for byte, direct versus through the proxy).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson

# 2026-01-01T00:00:00Z: every `created` / `created_at` field uses this fixed instant.
# The content types OpenAI and Anthropic send (Gemini's event stream has no charset).
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"
CREATED = 1767225600
CREATED_ISO = "2026-01-01T00:00:00Z"

SCENARIOS = frozenset({"text", "long", "tool", "parallel-tools", "refusal", "reasoning", "cached", "stream-error"})

TEXT = "Hello! This is the relaylog stand-in \u2014 every run returns exactly these words."
LONG_TEXT = " ".join(f"Sentence {i} of the long answer keeps the stream going for a while." for i in range(1, 41))
REFUSAL = "I'm sorry, but I can't help with that request."
AFTER_TOOL = "The tool answered: it is sunny and 22 \u00b0C in Paris."
TOOL_PREAMBLE = "I'll look that up with the tool."
THINKING = "The user wants a short answer. A friendly greeting that names the stand-in fits best."

# Extra prompt tokens that the `cached` scenario pretends came from a long, cached system prompt.
CACHED_PREFIX_TOKENS = 2048
CACHE_WRITE_TOKENS = 512


class UsageError(ValueError):
    """The stand-in was driven wrongly (an unknown scenario name): answered with HTTP 400."""


@dataclass(slots=True)
class Request:
    """One request as received; `s.requests` holds these."""

    method: str
    path: str  # including the query string
    headers: list[tuple[str, str]]  # as received: original case and order, duplicates kept
    body: bytes
    _index: dict[str, str] | None = field(default=None, repr=False, compare=False)

    def header(self, name: str) -> str | None:
        """The first header with this name (case-insensitive), or None."""
        index = self._index
        if index is None:
            # Built once per request, reversed so the first of repeated headers wins.
            index = self._index = {key.lower(): value for key, value in reversed(self.headers)}
        return index.get(name.lower())

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def route(self) -> str:
        """The path without its query string."""
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> dict[str, str]:
        _, _, query = self.path.partition("?")
        return dict(parse_qsl(query, keep_blank_values=True))


@dataclass(slots=True)
class Reply:
    """What a provider module answers; the server turns it into HTTP bytes and applies faults."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    # A streamed reply: each entry is one SSE event (or body piece), sent as its own HTTP chunk.
    events: list[bytes] | None = None
    # How many trailing events a plain `truncate` fault removes (the stream's closing events).
    tail: int = 0
    compress: bool = False  # eligible for gzip when the client accepts it
    # The complete keep-alive HTTP response, memoised by the server for cached replies.
    encoded: bytes | None = None


class Ids:
    """Deterministic id source: everything derives from a seed made of the request's content."""

    __slots__ = ("seed",)

    B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    HEX = "0123456789abcdef"

    def __init__(self, seed: bytes) -> None:
        self.seed = seed

    def token(self, label: str, length: int, alphabet: str = B62) -> str:
        table = _TABLES.get(alphabet) or _table(alphabet)
        digest = hashlib.blake2b(self.seed + label.encode(), digest_size=64).digest()
        out = digest
        while len(out) < length:
            digest = hashlib.blake2b(digest, digest_size=64).digest()
            out += digest
        return out[:length].translate(table).decode("ascii")

    def hex(self, label: str, length: int) -> str:
        return self.token(label, length, self.HEX)


_TABLES: dict[str, bytes] = {}


def _table(alphabet: str) -> bytes:
    """A bytes.translate table mapping each byte value onto the alphabet (fast id encoding)."""
    table = bytes(ord(alphabet[b % len(alphabet)]) for b in range(256))
    _TABLES[alphabet] = table
    return table


def seed_for(route: str, model: str, scenario: str, body: dict[str, Any], fields: Iterable[str]) -> Ids:
    """Ids that depend on what was asked, not on transport details: `stream`, `stream_options`
    and other knobs a proxy may rewrite are left out, so a proxy that asks for stream usage on
    the client's behalf still gets the same ids the client would have seen directly."""
    picked = {name: body.get(name) for name in fields}
    key = orjson.dumps([route, model, scenario, picked], option=orjson.OPT_SORT_KEYS)
    return Ids(hashlib.blake2b(key, digest_size=32).digest())


def obj(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (request fields may be anything)."""
    return value if isinstance(value, dict) else {}


def estimate_tokens(value: Any) -> int:
    """A plausible token count: about four characters per token over every string inside."""
    if isinstance(value, str):
        # Inline images and audio (data: URLs, base64 blobs) cost a flat amount, like a real tile.
        if len(value) > 20000 or value.startswith("data:"):
            return 765
        return (len(value) + 3) // 4
    if isinstance(value, dict):
        return sum(estimate_tokens(v) for v in value.values())
    if isinstance(value, list):
        return sum(estimate_tokens(v) for v in value)
    return 0


def prompt_tokens(messages: Any, *extra: Any) -> int:
    """Prompt size: content plus a few tokens of framing per message, like chat templates add."""
    count = 3 + estimate_tokens(messages) + sum(estimate_tokens(e) for e in extra)
    if isinstance(messages, list):
        count += 4 * len(messages)
    return max(count, 1)


_WORDS = re.compile(r"\s*\S+")
_JSON_PIECES = re.compile(r"[A-Za-z0-9_.]+|\s+|[^A-Za-z0-9_.\s]+")


def text_pieces(text: str) -> list[str]:
    """Split text the way token streams arrive: a word with its leading space per piece."""
    return _WORDS.findall(text) or [text]


def json_pieces(text: str) -> list[str]:
    """Split tool-call arguments into fragments shaped like real argument deltas (`{"`, `city`)."""
    return _JSON_PIECES.findall(text) or [text]


def pick_scenario(header: str | None, model: str, implied: str) -> str:
    """Scenario choice: the `x-standin-scenario` header, then a `standin-<scenario>` model name,
    then what the request itself implies (tools offered, thinking asked for, model family)."""
    if header:
        name = header.strip().lower()
        if name in SCENARIOS:
            return name
        raise UsageError(f"unknown x-standin-scenario {header!r}; known: {sorted(SCENARIOS)}")
    if model.startswith("standin-") and model[8:] in SCENARIOS:
        return model[8:]
    return implied


def sample_arguments(schema: Any, variant: int) -> dict[str, Any]:
    """Arguments that satisfy a tool's JSON schema (so SDKs that validate them accept them)."""
    root = schema if isinstance(schema, dict) else {}
    value = _sample(root, "args", variant, root, 0)
    return value if isinstance(value, dict) else {}


_CITIES = ("Paris", "Tokyo", "Lima", "Oslo")


def _sample(schema: dict[str, Any], name: str, variant: int, root: dict[str, Any], depth: int) -> Any:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and depth < 8:
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _sample(target if isinstance(target, dict) else {}, name, variant, root, depth + 1)
    if schema.get("enum"):
        return schema["enum"][variant % len(schema["enum"])]
    if "const" in schema:
        return schema["const"]
    for combo in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combo)
        if isinstance(options, list) and options and isinstance(options[0], dict):
            return _sample(options[0], name, variant, root, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    kind = str(kind).lower()  # Gemini spells types in upper case
    if kind == "object":
        props = schema.get("properties") or {}
        return {
            key: _sample(sub if isinstance(sub, dict) else {}, key, variant, root, depth + 1)
            for key, sub in props.items()
        }
    if kind == "array":
        items = schema.get("items")
        return [_sample(items, name, variant, root, depth + 1)] if isinstance(items, dict) else []
    if kind == "integer":
        return 3 + variant
    if kind == "number":
        return 1.5 + variant
    if kind == "boolean":
        return variant % 2 == 0
    if kind == "null":
        return None
    lowered = name.lower()
    if any(word in lowered for word in ("city", "location", "place", "town")):
        return _CITIES[variant % len(_CITIES)]
    if "unit" in lowered:
        return "celsius"
    return f"{name}-{variant + 1}"


def sse(data: bytes, event: str | None = None) -> bytes:
    """One SSE event in the `event: x\\ndata: y\\n\\n` framing the real APIs use."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def obfuscation(ids: Ids, index: int, visible: int) -> str:
    """OpenAI pads every streamed chunk with a random `obfuscation` string so chunk sizes do not
    leak token lengths; ours is derived from the chunk so it stays deterministic."""
    return ids.token(f"obf{index}", max(1, 16 - visible % 16))


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def dumps_pretty(value: Any) -> bytes:
    """OpenAI and Gemini pretty-print non-streamed JSON with two-space indentation."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2)


@dataclass(slots=True)
class ToolCall:
    name: str
    arguments: str  # compact JSON text, exactly as streamed and returned


@dataclass(slots=True)
class Plan:
    """What the fake model answers, independent of any provider's wire format."""

    scenario: str
    text: str | None = None
    refusal: str | None = None
    calls: list[ToolCall] = field(default_factory=list)
    reasoning: bool = False
    cached: bool = False
    stream_error: bool = False  # streams fail after a few events; non-streamed calls get a 500
    truncated: bool = False  # the answer was cut at max_tokens
    structured: bool = False  # the text is JSON answering a response schema

    def pieces(self) -> list[str]:
        if not self.text:
            return []
        return json_pieces(self.text) if self.structured else text_pieces(self.text)

    def output_tokens(self) -> int:
        """Visible output tokens (reasoning tokens are added by the caller, per provider)."""
        count = len(self.pieces()) + (len(text_pieces(self.refusal)) if self.refusal else 0)
        for call in self.calls:
            count += 6 + len(json_pieces(call.arguments))
        return max(count, 1)


DEFAULT_TOOL = (
    "get_weather",
    {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
)


def make_plan(
    scenario: str,
    tools: list[tuple[str, Any]],
    *,
    after_tool: bool,
    reasoning_family: bool,
    max_tokens: Any = None,
    schema: Any = None,
) -> Plan:
    """Turn a scenario into an answer. After a tool result the model always answers in text, so
    agent loops end even when a header forces the `tool` scenario on every call."""
    plan = Plan(scenario, reasoning=reasoning_family or scenario == "reasoning", cached=scenario == "cached")
    plan.stream_error = scenario == "stream-error"
    wants_call = scenario in ("tool", "parallel-tools") and not after_tool
    if wants_call:
        offered = tools or [DEFAULT_TOOL]
        for variant in range(2 if scenario == "parallel-tools" else 1):
            name, schema_ = offered[variant % len(offered)]
            args = orjson.dumps(sample_arguments(schema_, variant)).decode()
            plan.calls.append(ToolCall(name, args))
    elif scenario == "refusal":
        plan.refusal = REFUSAL
    elif schema is not None:
        # Structured output: JSON that satisfies the requested schema, so parsers accept it.
        plan.text = orjson.dumps(sample_arguments(schema, 0)).decode()
        plan.structured = True
    elif after_tool:
        plan.text = AFTER_TOOL
    elif scenario == "long":
        plan.text = LONG_TEXT
    else:
        plan.text = TEXT
    if (
        plan.text
        and not plan.structured
        and isinstance(max_tokens, int)
        and not isinstance(max_tokens, bool)
        and max_tokens > 0
    ):
        pieces = text_pieces(plan.text)
        if len(pieces) > max_tokens:
            plan.text = "".join(pieces[:max_tokens])
            plan.truncated = True
    return plan


REASONING_EFFORT_TOKENS = {"none": 0, "minimal": 0, "low": 64, "medium": 192, "high": 448, "xhigh": 896}
