"""A response body put back together as an answer: its text, its tool calls with their arguments,
an error's message. Whole bodies and streams alike, in every provider format relaylog relays; the
request list's preview (query/preview.py) and `relaylog show` both read answers here, as the
dashboard does in dashboard/conversation.js.

One reader per format, in FORMATS: each says whether a body or stream event is its own and reads
it. A new format is one more entry. Bodies are split into events by
`events`: a JSON body (or a JSON array of chunks, Gemini's stream without alt=sse) or SSE.
Nothing here raises: what cannot be read is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from relaylog.providers.sse import SSEBody


@dataclass(slots=True)
class ToolCall:
    name: str = ""
    arguments: str = ""  # JSON text as the provider sent it (streamed in pieces, joined)


@dataclass(slots=True)
class Answer:
    """Text and tool calls of an answer, gathered from whole bodies or stream events."""

    text: list[str] = field(default_factory=list)
    calls: dict[str, ToolCall] = field(default_factory=dict)  # by the provider's index or id
    errors: list[str] = field(default_factory=list)
    size: int = 0  # characters gathered: a preview stops reading once it has enough

    def add(self, text: Any) -> None:
        if isinstance(text, str) and text:
            self.text.append(text)
            self.size += len(text)

    def call(self, key: str, name: Any = None, arguments: Any = None) -> None:
        entry = self.calls.setdefault(key, ToolCall())
        if isinstance(name, str):
            entry.name += name
            self.size += len(name)
        if isinstance(arguments, str):
            entry.arguments += arguments
            self.size += len(arguments)
        elif arguments is not None:  # Anthropic's and Gemini's whole arguments come as objects
            entry.arguments += orjson.dumps(arguments).decode()

    def error(self, message: Any) -> None:
        if isinstance(message, str) and message:
            self.errors.append(message)
            self.size += len(message)

    @property
    def empty(self) -> bool:
        return not (self.text or self.calls or self.errors)


Reader = Callable[[Answer, str, Mapping[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    matches: Callable[[str, Mapping[str, Any]], bool]  # (SSE event name, data) -> is it this format's
    read: Reader


def _part(answer: Answer, key: str, part: Any) -> None:
    """A content block (Anthropic), part (Gemini) or output item (Responses API)."""
    if not isinstance(part, dict):
        return
    kind = part.get("type")
    if kind == "tool_use":
        answer.call(key, part.get("name"), part.get("input") or None)
    elif kind == "function_call":
        answer.call(key, part.get("name"), part.get("arguments"))
    elif isinstance(part.get("functionCall"), dict):
        answer.call(key, part["functionCall"].get("name"), part["functionCall"].get("args"))
    elif kind == "message" and isinstance(part.get("content"), list):
        for item in part["content"]:
            if isinstance(item, dict) and item.get("type") == "output_text":
                answer.add(item.get("text"))
    elif not part.get("thought") and kind not in ("thinking", "redacted_thinking", "reasoning"):
        answer.add(part.get("text"))  # thinking and thought summaries are not the answer


def _openai_chat(answer: Answer, _name: str, data: Mapping[str, Any]) -> None:
    """OpenAI chat and legacy completions (and every OpenAI-compatible provider), whole or streamed."""
    for choice in data["choices"]:
        if not isinstance(choice, dict):
            continue
        part = choice.get("message") or choice.get("delta") or {}
        part = part if isinstance(part, dict) else {}
        answer.add(part.get("content"))
        answer.add(part.get("refusal"))
        answer.add(choice.get("text"))
        for call in part.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                key = str(call.get("index", call.get("id")))
                answer.call(f"{choice.get('index', 0)}.{key}", function.get("name"), function.get("arguments"))


def _gemini(answer: Answer, _name: str, data: Mapping[str, Any]) -> None:
    for candidate in data["candidates"]:
        content = candidate.get("content") if isinstance(candidate, dict) else None
        for number, part in enumerate(content.get("parts") or [] if isinstance(content, dict) else []):
            _part(answer, f"g{number}", part)


def _anthropic(answer: Answer, name: str, data: Mapping[str, Any]) -> None:
    kind = data.get("type") or name
    if kind == "message" and isinstance(data.get("content"), list):
        for number, block in enumerate(data["content"]):
            _part(answer, f"a{number}", block)
    elif kind == "content_block_start":
        _part(answer, f"a{data.get('index')}", data.get("content_block"))
    elif kind == "content_block_delta":
        delta = data["delta"] if isinstance(data.get("delta"), dict) else {}
        if delta.get("type") == "text_delta":
            answer.add(delta.get("text"))
        elif delta.get("type") == "input_json_delta":
            answer.call(f"a{data.get('index')}", arguments=delta.get("partial_json"))


def _is_anthropic(name: str, data: Mapping[str, Any]) -> bool:
    kind = data.get("type") or name
    return (kind == "message" and isinstance(data.get("content"), list)) or kind in (
        "content_block_start",
        "content_block_delta",
    )


def _responses(answer: Answer, name: str, data: Mapping[str, Any]) -> None:
    """OpenAI's Responses API, whole or streamed."""
    kind = data.get("type") or name
    if kind == "response.output_text.delta":
        answer.add(data.get("delta"))
    elif kind == "response.output_item.added" and isinstance(data.get("item"), dict):
        if data["item"].get("type") == "function_call":
            answer.call(f"r{data.get('output_index')}", data["item"].get("name"))
    elif kind == "response.function_call_arguments.delta":
        answer.call(f"r{data.get('output_index')}", arguments=data.get("delta"))
    elif data.get("object") == "response" and isinstance(data.get("output"), list):
        for number, item in enumerate(data["output"]):
            _part(answer, f"r{number}", item)


_RESPONSES_EVENTS = (
    "response.output_text.delta",
    "response.output_item.added",
    "response.function_call_arguments.delta",
)


def _embeddings(answer: Answer, _name: str, data: Mapping[str, Any]) -> None:
    answer.add(f"[{len(data['data'])} embedding(s)]")


def _error(answer: Answer, name: str, data: Mapping[str, Any]) -> None:
    """A provider's (or relaylog's) error: {"error": {"message"}} in every format, or an error event."""
    error = data.get("error")
    if isinstance(error, dict):
        answer.error(error.get("message"))
    elif (data.get("type") or name) == "error":
        answer.error(error)


def _bedrock_event(name: str, data: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """Nova's InvokeModel stream names each event inside its payload; Converse's in the frame."""
    for key in ("contentBlockDelta", "contentBlockStart"):
        if isinstance(data.get(key), dict):
            return key, data[key]
    return name, data


def _is_bedrock(name: str, data: Mapping[str, Any]) -> bool:
    """Converse (whole or streamed) and the InvokeModel bodies of Nova, Llama, Titan, Mistral and
    Cohere. Bedrock's own shapes have no `type`: every other format's events do."""
    if "type" in data:
        return False
    name, data = _bedrock_event(name, data)
    output = data.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    return (
        (isinstance(message, dict) and isinstance(message.get("content"), list))
        or (
            name in ("contentBlockDelta", "contentBlockStart")
            and isinstance(data.get("delta", data.get("start")), dict)
        )
        or name.endswith("Exception")
        or any(isinstance(data.get(key), str) for key in ("generation", "outputText", "text"))
        or any(isinstance(data.get(key), list) for key in ("results", "outputs", "generations"))
        or (isinstance(data.get("message"), str) and len(data) == 1)  # Bedrock's error body
    )


def _bedrock(answer: Answer, name: str, data: Mapping[str, Any]) -> None:
    name, data = _bedrock_event(name, data)
    output = data.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    if isinstance(message, dict) and isinstance(message.get("content"), list):  # Converse, Nova: whole
        for number, block in enumerate(message["content"]):
            if isinstance(block, dict):
                answer.add(block.get("text"))
                use = block.get("toolUse")
                if isinstance(use, dict):
                    answer.call(f"b{number}", use.get("name"), use.get("input"))
    elif name == "contentBlockDelta" and isinstance(data.get("delta"), dict):
        delta = data["delta"]
        answer.add(delta.get("text"))
        if isinstance(delta.get("toolUse"), dict):
            answer.call(f"b{data.get('contentBlockIndex')}", arguments=delta["toolUse"].get("input"))
    elif name == "contentBlockStart" and isinstance(data.get("start"), dict):
        use = data["start"].get("toolUse")
        if isinstance(use, dict):
            answer.call(f"b{data.get('contentBlockIndex')}", use.get("name"))
    elif name.endswith("Exception") or (isinstance(data.get("message"), str) and len(data) == 1):
        answer.error(data.get("message"))  # an exception frame mid-stream, or Bedrock's error body
    elif any(isinstance(data.get(key), str) for key in ("generation", "outputText", "text")):
        answer.add(data.get("generation", data.get("outputText", data.get("text"))))  # Llama, Titan, Cohere
    else:  # Titan, Mistral, Cohere Command: a list of results
        for item in data.get("results") or data.get("outputs") or data.get("generations") or []:
            if isinstance(item, dict):
                answer.add(item.get("outputText", item.get("text")))


# Tried in order; the first that matches reads the event.
FORMATS: list[Format] = [
    Format("openai-chat", lambda _n, d: isinstance(d.get("choices"), list), _openai_chat),
    Format("gemini", lambda _n, d: isinstance(d.get("candidates"), list), _gemini),
    Format("anthropic", _is_anthropic, _anthropic),
    Format(
        "openai-responses",
        lambda n, d: (
            (d.get("type") or n) in _RESPONSES_EVENTS
            or (d.get("object") == "response" and isinstance(d.get("output"), list))
        ),
        _responses,
    ),
    Format("embeddings", lambda _n, d: d.get("object") == "list" and isinstance(d.get("data"), list), _embeddings),
    Format("bedrock", _is_bedrock, _bedrock),
    Format("error", lambda n, d: "error" in d or (d.get("type") or n) == "error", _error),
]


def read_event(answer: Answer, name: str, data: Any) -> None:
    """One whole body or one stream event, read by the first format it belongs to."""
    if not isinstance(data, dict):
        return
    for entry in FORMATS:
        if entry.matches(name, data):
            entry.read(answer, name, data)
            return


def _json(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def events(body: str) -> Iterator[tuple[str, Any]]:
    """(event name, parsed data) of a body: a JSON body is one event (a JSON array, one per item);
    else its SSE events. Nothing for a body that is neither."""
    whole = _json(body)
    if whole is not None:
        for chunk in whole if isinstance(whole, list) else [whole]:
            yield "", chunk
        return
    for name, data in SSEBody(body.encode("utf-8", "surrogatepass")).forward():
        if data != b"[DONE]":
            yield name.decode("utf-8", "replace"), _json(data)


def read_answer(body: str, enough: int | None = None) -> tuple[Answer, int]:
    """The answer in a response body, and how many events it had; with `enough`, reading stops once
    that many characters are gathered (a long stream costs a preview a few events, not all)."""
    answer = Answer()
    count = 0
    for name, data in events(body):
        count += 1
        read_event(answer, name, data)
        if enough is not None and answer.size > enough:
            break
    return answer, count
