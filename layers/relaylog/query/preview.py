"""One-line previews of a call for request lists: the last message sent and the start of the answer.

Computed from the bodies kept in the record itself (up to RELAYLOG_BODY_INLINE_MAX): a body that
was omitted (`Helicone-Omit-*`) or put in a file or object of its own has no preview. An answer is
read event by event only until the preview is full, so a long stream costs a few events, not all.
Media are named (`[image]`), never inlined. Nothing here raises: what cannot be read has no preview.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from relaylog.prompts import messages
from relaylog.providers.sse import SSEBody

PREVIEW_CHARS = 200


def _line(parts: Iterable[str]) -> str | None:
    """Whitespace collapsed, cut to PREVIEW_CHARS with an ellipsis; None when there is no text."""
    text = " ".join(" ".join(parts).split())
    if not text:
        return None
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1].rstrip() + "…"


def _json(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def request_preview(body: str | None) -> str | None:
    """The last message that is not the system prompt, as text (its role first unless it is the user's)."""
    parsed = _json(body) if body else None
    if not isinstance(parsed, dict):
        return None
    found = [(role, text) for role, text in messages(parsed) if role != "system"]
    if not found:
        return None
    role, text = found[-1]
    return _line([text] if role in ("user", "prompt") else [f"{role}:", text])


class _Answer:
    """Text and tool calls of an answer, gathered from whole bodies or stream events."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[str, list[str]] = {}  # key -> [name, arguments]
        self.size = 0

    def add(self, text: Any) -> None:
        if isinstance(text, str) and text:
            self.text.append(text)
            self.size += len(text)

    def call(self, key: str, name: Any = None, arguments: Any = None) -> None:
        entry = self.calls.setdefault(key, ["", ""])
        for i, value in ((0, name), (1, arguments)):
            if isinstance(value, str):
                entry[i] += value
                self.size += len(value)
            elif value is not None:
                entry[i] += orjson.dumps(value).decode()

    def full(self) -> bool:
        return self.size > PREVIEW_CHARS

    def line(self) -> str | None:
        calls = [f"{name}({arguments})" for name, arguments in self.calls.values()]
        return _line([*self.text, *calls])


def _error_message(data: Mapping[str, Any]) -> str | None:
    """The message of a provider's (or relaylog's) error body: {"error": {"message"}} in every format."""
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return None


def _part(answer: _Answer, key: str, part: Any) -> None:
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
    elif not part.get("thought"):  # Gemini's thought summaries are not the answer
        answer.add(part.get("text"))


def _chunk(answer: _Answer, name: str, data: Any) -> None:
    """One whole body or one stream event of any provider format."""
    if not isinstance(data, dict):
        return
    kind = data.get("type") or name
    if isinstance(data.get("choices"), list):  # OpenAI chat and completions, whole or streamed
        for choice in data["choices"]:
            if not isinstance(choice, dict):
                continue
            part = choice.get("message") or choice.get("delta") or {}
            answer.add(part.get("content") if isinstance(part, dict) else None)
            answer.add(part.get("refusal") if isinstance(part, dict) else None)
            answer.add(choice.get("text"))
            for call in (part.get("tool_calls") if isinstance(part, dict) else None) or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    key = str(call.get("index", call.get("id")))
                    answer.call(f"{choice.get('index', 0)}.{key}", function.get("name"), function.get("arguments"))
    elif isinstance(data.get("candidates"), list):  # Gemini
        for candidate in data["candidates"]:
            content = candidate.get("content") if isinstance(candidate, dict) else None
            for number, part in enumerate(content.get("parts") or [] if isinstance(content, dict) else []):
                _part(answer, f"g{number}", part)
    elif kind == "message" and isinstance(data.get("content"), list):  # Anthropic, whole
        for number, block in enumerate(data["content"]):
            _part(answer, f"a{number}", block)
    elif kind == "content_block_start":
        _part(answer, f"a{data.get('index')}", data.get("content_block"))
    elif kind == "content_block_delta":
        delta = data["delta"] if isinstance(data.get("delta"), dict) else {}
        answer.add(delta.get("text"))
        if delta.get("type") == "input_json_delta":
            answer.call(f"a{data.get('index')}", arguments=delta.get("partial_json"))
    elif kind == "response.output_text.delta":
        answer.add(data.get("delta"))
    elif kind == "response.output_item.added" and isinstance(data.get("item"), dict):
        if data["item"].get("type") == "function_call":
            answer.call(f"r{data.get('output_index')}", data["item"].get("name"))
    elif kind == "response.function_call_arguments.delta":
        answer.call(f"r{data.get('output_index')}", arguments=data.get("delta"))
    elif data.get("object") == "response" and isinstance(data.get("output"), list):  # Responses API, whole
        for number, item in enumerate(data["output"]):
            _part(answer, f"r{number}", item)
    elif data.get("object") == "list" and isinstance(data.get("data"), list):  # embeddings
        answer.add(f"[{len(data['data'])} embedding(s)]")
    elif not _bedrock(answer, name, data):
        answer.add(_error_message(data) or (data.get("error") if kind == "error" else None))


def _bedrock(answer: _Answer, name: str, data: dict[str, Any]) -> bool:
    """A Bedrock answer or stream event (Converse, and the InvokeModel bodies of Nova, Llama,
    Titan, Mistral and Cohere); False when `data` is none of them. Bedrock's own shapes have no
    `type`: every other format's events that carry no answer (`response.output_text.done`) do."""
    if "type" in data:
        return False
    nested = next((key for key in ("contentBlockDelta", "contentBlockStart") if isinstance(data.get(key), dict)), None)
    if nested is not None:  # Nova's InvokeModel stream names each event inside its payload
        name, data = nested, data[nested]
    message = data.get("output", {}).get("message") if isinstance(data.get("output"), dict) else None
    if isinstance(message, dict) and isinstance(message.get("content"), list):  # Converse, Nova: whole
        for number, block in enumerate(message["content"]):
            _converse_block(answer, f"b{number}", block)
    elif name == "contentBlockDelta" and isinstance(data.get("delta"), dict):
        delta = data["delta"]
        answer.add(delta.get("text"))
        if isinstance(delta.get("toolUse"), dict):
            answer.call(f"b{data.get('contentBlockIndex')}", arguments=delta["toolUse"].get("input"))
    elif name == "contentBlockStart" and isinstance(data.get("start"), dict):
        use = data["start"].get("toolUse")
        if isinstance(use, dict):
            answer.call(f"b{data.get('contentBlockIndex')}", use.get("name"))
    elif name.endswith("Exception") or name == "error":  # an exception frame mid-stream
        answer.add(data.get("message"))
    elif any(isinstance(data.get(key), str) for key in ("generation", "outputText", "text")):
        answer.add(data.get("generation", data.get("outputText", data.get("text"))))  # Llama, Titan, Cohere
    elif any(isinstance(data.get(key), list) for key in ("results", "outputs", "generations")):
        # Titan, Mistral, Cohere Command
        for item in data.get("results") or data.get("outputs") or data.get("generations") or []:
            if isinstance(item, dict):
                answer.add(item.get("outputText", item.get("text")))
    elif isinstance(data.get("message"), str) and len(data) == 1:  # Bedrock's error body
        answer.add(data["message"])
    else:
        return False
    return True


def _converse_block(answer: _Answer, key: str, block: Any) -> None:
    if isinstance(block, dict):
        answer.add(block.get("text"))
        use = block.get("toolUse")
        if isinstance(use, dict):
            answer.call(key, use.get("name"), use.get("input"))


def _events(body: str) -> Iterator[tuple[str, Any]]:
    for name, data in SSEBody(body.encode("utf-8", "surrogatepass")).forward():
        if data != b"[DONE]":
            yield name.decode("utf-8", "replace"), _json(data)


def response_preview(body: str | None) -> str | None:
    """The start of the answer: its text, else its tool calls as name(arguments), else an error's message."""
    if not body:
        return None
    answer = _Answer()
    whole = _json(body)
    if whole is not None:
        # A Gemini stream without alt=sse is one JSON array of chunks.
        for chunk in whole if isinstance(whole, list) else [whole]:
            _chunk(answer, "", chunk)
        return answer.line()
    events = 0
    for name, data in _events(body):
        events += 1
        _chunk(answer, name, data)
        if answer.full():
            break
    # Neither JSON nor SSE: a gateway's HTML or plain-text error page, shown as it is.
    return answer.line() if events else _line([body[: 2 * PREVIEW_CHARS]])


def previews(record: Mapping[str, Any]) -> dict[str, str | None]:
    """The two preview fields of a record, from the bodies it holds itself."""
    return {
        "request_preview": request_preview(record.get("request_body")),
        "response_preview": response_preview(record.get("response_body")),
    }
