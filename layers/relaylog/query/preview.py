"""One-line previews of a call for request lists: the last message sent and the start of the answer.

Answers are read by query/answer.py, as `relaylog show` reads them. Computed from the bodies kept
in the record itself (up to RELAYLOG_BODY_INLINE_MAX): a body that was omitted (`Helicone-Omit-*`)
or put in a file or object of its own has no preview. An answer is read event by event only until
the preview is full, so a long stream costs a few events, not all. Media are named (`[image]`),
never inlined. Nothing here raises: what cannot be read has no preview.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from relaylog.prompts import messages
from relaylog.query.answer import Answer, read_answer

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


def _answer_line(answer: Answer) -> str | None:
    calls = [f"{call.name}({call.arguments})" for call in answer.calls.values()]
    return _line([*answer.text, *calls, *answer.errors])


def response_preview(body: str | None) -> str | None:
    """The start of the answer: its text, else its tool calls as name(arguments), else an error's message."""
    if not body:
        return None
    answer, events = read_answer(body, enough=PREVIEW_CHARS)
    # Neither JSON nor SSE: a gateway's HTML or plain-text error page, shown as it is.
    return _answer_line(answer) if events else _line([body[: 2 * PREVIEW_CHARS]])


def previews(record: Mapping[str, Any]) -> dict[str, str | None]:
    """The two preview fields of a record, from the bodies it holds itself."""
    return {
        "request_preview": request_preview(record.get("request_body")),
        "response_preview": response_preview(record.get("response_body")),
    }
