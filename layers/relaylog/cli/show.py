"""`relaylog show ID`: one request in full. Its fields, scores and feedback; the prompt as messages
and the answer put back together (text, tool calls with their arguments) from a whole body or a
stream, read as the request list's previews are (relaylog.query.answer); `--raw` shows the bodies
as they were relayed instead."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

import orjson

from relaylog.cli import output, sources
from relaylog.cli.errors import CommandError, UsageError
from relaylog.prompts import messages
from relaylog.query.answer import read_answer
from relaylog.query.backend import NotFound
from relaylog.query.params import BadRequest
from relaylog.record import FIELDS, SUMMARY_FIELDS

# Fields shown with their unit rather than as stored.
_FORMATTED = {
    "cost_usd": output.cost,
    **dict.fromkeys(("latency_ms", "ttft_ms", "upstream_ms", "overhead_ms"), output.ms),
}


def show(args: argparse.Namespace) -> int:
    if not args.id:
        raise UsageError("relaylog show: error: give a request id")
    try:
        found = sources.backend(args).get_request(args.id)
    except NotFound as exc:
        raise CommandError(f"{exc} in {sources.where(args)}") from None
    except BadRequest as exc:  # a prefix of several ids
        raise CommandError(str(exc)) from None
    record = {name: found[name] for name in FIELDS}
    scores: dict[str, Any] = found.get("scores") or {}
    comment: str | None = found.get("feedback_comment")
    if args.json:
        output.print_json({**record, "scores": scores, "feedback_comment": comment})
        return 0
    print(output.pairs(_fields(record, scores, comment)))
    if args.raw:
        for name in ("request_body", "response_body"):
            print(f"\n--- {name.replace('_', ' ')} ---")
            print(output.body(record[name]))
        return 0
    print("\n--- request ---")
    print(_request(record["request_body"]))
    print("\n--- response" + (" (streamed, put back together)" if record["stream"] else "") + " ---")
    print(_response(record["response_body"]))
    return 0


def _fields(record: Mapping[str, Any], scores: Mapping[str, Any], comment: str | None) -> list[tuple[str, str]]:
    lines = [
        (name, _FORMATTED[name](record[name]) if name in _FORMATTED else output.field(record[name]))
        for name in SUMMARY_FIELDS
        if name != "properties"
    ]
    lines += [("property", f"{key} = {value}") for key, value in sorted((record["properties"] or {}).items())]
    if "feedback" in scores:
        rating = {True: "good", False: "bad"}.get(scores["feedback"], str(scores["feedback"]))
        lines.append(("feedback", rating + (f" ({comment})" if comment else "")))
    lines += [
        ("score", f"{name} = {output.field(value)}") for name, value in sorted(scores.items()) if name != "feedback"
    ]
    return lines


def _request(body: str | None) -> str:
    if body is None:
        return "(not stored)"
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    found = messages(parsed) if isinstance(parsed, dict) else []
    if not found:  # not a chat request (audio, a form upload...): as it was sent
        return output.body(body)
    blocks = [f"[{role}]\n{text}" for role, text in found]
    tools = _offered_tools(parsed)
    if tools:
        blocks.append("[tools offered]\n" + ", ".join(tools))
    return "\n\n".join(blocks)


def _offered_tools(body: Mapping[str, Any]) -> list[str]:
    """Names of the tools a request offers, in any provider's form (as dashboard/conversation.js)."""
    names: list[str] = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        declarations = tool.get("functionDeclarations") or tool.get("function_declarations")
        if isinstance(declarations, list):  # Gemini: several functions per tool
            names += [str(d.get("name")) for d in declarations if isinstance(d, dict)]
        elif isinstance(tool.get("function"), dict):  # OpenAI chat
            names.append(str(tool["function"].get("name")))
        else:  # Anthropic, Responses API, built-in tools by type
            names.append(str(tool.get("name") or tool.get("type") or "tool"))
    return names


def _arguments(text: str) -> str:
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode() if text else "{}"
    except orjson.JSONDecodeError:
        return text  # cut short mid-stream: what arrived


def _response(body: str | None) -> str:
    if body is None:
        return "(not stored)"
    answer, _ = read_answer(body)
    if answer.empty:  # a format no reader knows, an HTML error page: as it was relayed
        return output.body(body)
    blocks = ["".join(answer.text)] if answer.text else []
    blocks += [f"tool call {call.name}({_arguments(call.arguments)})" for call in answer.calls.values()]
    blocks += [f"error: {message}" for message in answer.errors]
    return "\n\n".join(blocks)
