"""One piece of a provider's message as a part of the GenAI conventions' message schema."""

from __future__ import annotations

from typing import Any

import orjson

# {"type": "text", "content": ...}, {"type": "tool_call", "id", "name", "arguments"}, ...
Part = dict[str, Any]
# {"role": ..., "parts": [Part, ...]} (+ "name", or "finish_reason" on output messages)
Message = dict[str, Any]


def dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list (anything else in it, or a non-list, is skipped)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def index_of(item: dict[str, Any], position: int) -> int:
    """A choice's or candidate's own index, else its position in the list."""
    index = item.get("index")
    return index if isinstance(index, int) else position


def object_at(item: dict[str, Any], key: str) -> dict[str, Any]:
    value = item.get(key)
    return value if isinstance(value, dict) else {}


def tool_call(call_id: Any, name: Any, arguments: Any) -> Part:
    """A tool call; arguments sent as JSON text are decoded, text that is not JSON kept as written."""
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            pass
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def tool_response(call_id: Any, response: Any) -> Part:
    return {"type": "tool_call_response", "id": call_id, "response": response}


def _blob(modality: str, mime_type: Any, content: Any) -> Part:
    return {"type": "blob", "modality": modality, "mime_type": mime_type, "content": content}


def text_parts(value: Any) -> list[Part]:
    return [{"type": "text", "content": value}] if isinstance(value, str) and value else []


def _data_url(url: str, modality: str) -> Part:
    """A `data:` URL as a blob part, any other URL as a uri part."""
    if url.startswith("data:") and ";base64," in url:
        head, data = url[5:].split(";base64,", 1)
        return _blob(modality, head or None, data)
    return {"type": "uri", "modality": modality, "uri": url}


def openai_part(item: dict[str, Any]) -> Part:
    kind = item.get("type")
    if kind in ("text", "input_text", "output_text"):
        return {"type": "text", "content": item.get("text")}
    if kind == "refusal":
        return {"type": "text", "content": item.get("refusal")}
    if kind in ("image_url", "input_image"):
        image = item.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if isinstance(url, str):
            return _data_url(url, "image")
    if kind == "input_audio" and isinstance(item.get("input_audio"), dict):
        audio = item["input_audio"]
        return _blob("audio", f"audio/{audio.get('format')}", audio.get("data"))
    return {"type": str(kind)}  # a part kind the conventions have no schema for: named, not copied


def anthropic_part(block: dict[str, Any]) -> Part:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "content": block.get("text")}
    if kind == "thinking":
        return {"type": "reasoning", "content": block.get("thinking")}
    if kind == "tool_use":
        return tool_call(block.get("id"), block.get("name"), block.get("input"))
    if kind == "tool_result":
        return tool_response(block.get("tool_use_id"), block.get("content"))
    if kind in ("image", "document") and isinstance(block.get("source"), dict):
        source = block["source"]
        modality = "image" if kind == "image" else "document"
        if source.get("type") == "base64":
            return _blob(modality, source.get("media_type"), source.get("data"))
        if source.get("type") == "url":
            return {"type": "uri", "modality": modality, "uri": source.get("url")}
    return {"type": str(kind)}


def gemini_part(part: dict[str, Any]) -> Part:
    if "text" in part:
        return {"type": "reasoning" if part.get("thought") else "text", "content": part["text"]}
    call = part.get("functionCall")
    if isinstance(call, dict):
        return tool_call(call.get("id"), call.get("name"), call.get("args"))
    answer = part.get("functionResponse")
    if isinstance(answer, dict):
        return tool_response(answer.get("id") or answer.get("name"), answer.get("response"))
    inline = part.get("inlineData")
    if isinstance(inline, dict):
        mime = inline.get("mimeType") or ""
        return _blob(_modality(mime), mime or None, inline.get("data"))
    file = part.get("fileData")
    if isinstance(file, dict):
        mime = file.get("mimeType") or ""
        return {"type": "uri", "modality": _modality(mime), "mime_type": mime or None, "uri": file.get("fileUri")}
    return {"type": next(iter(part), "unknown")}


def _modality(mime: str) -> str:
    kind = mime.split("/", 1)[0]
    return kind if kind in ("image", "video", "audio") else "document"
