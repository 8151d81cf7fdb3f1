"""The OpenAPI 3.1 document of the query API, built from the route table and the record's own types.

Schemas for records and metrics are derived from `relaylog.record.Record` and
`relaylog.query.cells.Metrics`, so the document cannot drift from what the API returns.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any, Protocol

from relaylog import __version__
from relaylog.prompts import DiffLine, Version
from relaylog.query.cells import Metrics
from relaylog.query.filters import GROUP_DIMENSIONS
from relaylog.query.params import BUCKETS, MAX_PAGE, ORDERS, SORTS, USER_SORTS
from relaylog.query.preview import PREVIEW_CHARS
from relaylog.query.sessions import Totals
from relaylog.record import Record


class RouteLike(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def summary(self) -> str: ...
    @property
    def query(self) -> tuple[str, ...]: ...
    @property
    def body(self) -> str | None: ...
    @property
    def response(self) -> str: ...


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


PARAMETERS: dict[str, list[dict[str, Any]]] = {
    "filters": [
        {"name": "since", "schema": _string("from this time: 30m, 24h, 7d or an RFC 3339 time")},
        {"name": "until", "schema": _string("before this time, same forms as since")},
        {"name": "model", "schema": _string("model requested, exact")},
        {"name": "provider", "schema": _string("openai, anthropic, gemini, ...")},
        {"name": "user", "schema": _string("user id, exact")},
        {"name": "session", "schema": _string("session id, exact")},
        {"name": "prompt", "schema": _string("Helicone-Prompt-Id, exact")},
        {"name": "key", "schema": _string("relaylog key id")},
        {"name": "error_type", "schema": _string("upstream_error, upstream_timeout, client_disconnect, ...")},
        {"name": "status", "schema": _string("ok, error, or an HTTP status code")},
        {
            "name": "property",
            "schema": {"type": "array", "items": _string("NAME=VALUE (names are case-insensitive)")},
            "explode": True,
        },
        {
            "name": "score",
            "schema": {"type": "array", "items": _string("NAME=VALUE or NAME>=NUMBER; ops = != > >= < <=")},
            "explode": True,
        },
        {"name": "search", "schema": _string("text in the request or response body (local store only)")},
    ],
    "list": [
        {"name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50}},
        {"name": "sort", "schema": {"type": "string", "enum": list(SORTS), "default": "time"}},
        {"name": "order", "schema": {"type": "string", "enum": list(ORDERS), "default": "desc"}},
        {"name": "cursor", "schema": _string("next_cursor of the previous page")},
    ],
    "stats": [
        {
            "name": "bucket",
            "schema": {
                "type": "string",
                "enum": list(BUCKETS),
                "description": "default from the span: minute up to 3 h (hour on AWS), hour up to 7 d, else day",
            },
        },
        {"name": "by", "schema": _string(f"{', '.join(GROUP_DIMENSIONS)} or property:NAME")},
        {"name": "top", "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}},
    ],
    "page": [
        {"name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50}},
        {"name": "cursor", "schema": _string("next_cursor of the previous page")},
    ],
    "user_sort": [{"name": "sort", "schema": {"type": "string", "enum": list(USER_SORTS)}}],
    "version_pair": [
        {"name": "from", "required": True, "schema": {"type": "integer", "minimum": 1}},
        {"name": "to", "required": True, "schema": {"type": "integer", "minimum": 1}},
    ],
    "request_pair": [
        {"name": "a", "required": True, "schema": _string("request id")},
        {"name": "b", "required": True, "schema": _string("request id")},
    ],
}

_SCALARS: dict[object, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
}


def _schema(hint: object) -> dict[str, Any]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        present = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _schema(present[0]) if len(present) == 1 else {"anyOf": [_schema(a) for a in present]}
        return {"anyOf": [inner, {"type": "null"}]} if type(None) in typing.get_args(hint) else inner
    if hint in _SCALARS:
        return _SCALARS[hint]
    origin = typing.get_origin(hint)
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(typing.get_args(hint)[1])}
    if origin is list:
        return {"type": "array", "items": _schema(typing.get_args(hint)[0])}
    if isinstance(hint, type) and typing.is_typeddict(hint):
        return _object(hint)
    return {}


def _object(kind: type, drop: Sequence[str] = ()) -> dict[str, Any]:
    hints = typing.get_type_hints(kind)
    properties = {name: _schema(hint) for name, hint in hints.items() if name not in drop}
    return {"type": "object", "properties": properties, "required": list(properties)}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"data": {"type": "array", "items": _ref(item)}, "next_cursor": {"type": ["string", "null"]}},
        "required": ["data", "next_cursor"],
    }


def _data(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"data": schema}, "required": ["data"]}


def _with(base: dict[str, Any], **extra: dict[str, Any]) -> dict[str, Any]:
    return {**base, "properties": {**base["properties"], **extra}, "required": [*base["required"], *extra]}


_BODY_URL = {"type": ["string", "null"], "description": "on AWS, a link to a body too large to include"}
SCORES = {"type": "object", "additionalProperties": {"type": ["number", "boolean"]}}
SUMMARY = _with(_object(Record, drop=("request_body", "response_body")), scores=SCORES)
_PREVIEW = {
    "type": ["string", "null"],
    "maxLength": PREVIEW_CHARS,
    "description": "one line from the body kept in the record; null when omitted, stored apart or unreadable",
}
LIST_ROW = _with(SUMMARY, request_preview=_PREVIEW, response_preview=_PREVIEW)
_BUCKET = {
    "type": "object",
    "properties": {
        "from_ms": {"type": "number"},
        "to_ms": {"type": ["number", "null"], "description": "null for the open top bucket"},
        "count": {"type": "integer"},
    },
    "required": ["from_ms", "to_ms", "count"],
}
HISTOGRAMS = {
    "type": "object",
    "description": "non-empty log-scale buckets (four per doubling) over the whole range",
    "properties": {name: {"type": "array", "items": _BUCKET} for name in ("latency_ms", "ttft_ms")},
    "required": ["latency_ms", "ttft_ms"],
}
METRICS = _object(Metrics)
NODE = _with(
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "path": {"type": "string"}},
        "required": ["name", "path"],
    },
    requests={"type": "array", "items": _ref("RequestSummary")},
    children={"type": "array", "items": _ref("SessionNode")},
    totals=_object(Totals),
)
_SESSION_FIELDS: dict[str, dict[str, Any]] = {
    "session_id": {"type": "string"},
    "session_name": {"type": ["string", "null"]},
    "first_at": {"type": "string"},
    "last_at": {"type": "string"},
    "duration_ms": {"type": "number"},
    "users": {"type": "array", "items": {"type": "string"}},
}
SESSION = _with(_object(Totals), **_SESSION_FIELDS)
_AGGREGATE: dict[str, dict[str, Any]] = {
    "requests": {"type": "integer"},
    "cost_usd": {"type": "number"},
    "first_seen": {"type": "string"},
    "last_seen": {"type": "string"},
}
SCHEMAS: dict[str, dict[str, Any]] = {
    "Object": {"type": "object"},
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                "required": ["type", "message"],
            }
        },
        "required": ["error"],
    },
    "Record": _object(Record),
    "RequestSummary": SUMMARY,
    "RequestListRow": LIST_ROW,
    "RequestPage": _page("RequestListRow"),
    "RequestDetail": _data(
        _with(
            _object(Record),
            scores=SCORES,
            feedback_comment={"type": ["string", "null"]},
            request_body_url=_BODY_URL,
            response_body_url=_BODY_URL,
        )
    ),
    "Scores": {
        "type": "object",
        "properties": {"scores": SCORES},
        "required": ["scores"],
        "example": {"scores": {"helpful": True, "accuracy": 0.9}},
    },
    "Feedback": {
        "type": "object",
        "properties": {"rating": {"type": "boolean"}, "comment": {"type": "string", "maxLength": 4000}},
        "required": ["rating"],
    },
    "ScoresResult": _data(
        {
            "type": "object",
            "properties": {"request_id": {"type": "string"}, "scores": SCORES},
            "required": ["request_id", "scores"],
        }
    ),
    "Metrics": METRICS,
    "Stats": _data(
        {
            "type": "object",
            "properties": {
                "bucket": {"type": "string", "enum": list(BUCKETS)},
                "by": {"type": ["string", "null"]},
                "since": {"type": ["string", "null"]},
                "until": {"type": ["string", "null"]},
                "total": _ref("Metrics"),
                "histograms": HISTOGRAMS,
                "groups": {"type": "array", "items": _with(METRICS, key={"type": ["string", "null"]})},
                "series": {"type": "array", "items": _with(METRICS, t={"type": "string"})},
                "group_series": {
                    "type": "array",
                    "items": _with(METRICS, t={"type": "string"}, key={"type": ["string", "null"]}),
                },
            },
        }
    ),
    "SessionSummary": SESSION,
    "SessionPage": _page("SessionSummary"),
    "SessionNode": NODE,
    "Session": _data(_with(SESSION, tree=_ref("SessionNode"))),
    "UserSummary": _with(_with(_object(Totals), **_AGGREGATE), user_id={"type": "string"}),
    "UserPage": _page("UserSummary"),
    "PromptSummary": _with(
        {"type": "object", "properties": {"prompt_id": {"type": "string"}}, "required": ["prompt_id"]}, **_AGGREGATE
    ),
    "PromptPage": _page("PromptSummary"),
    "PromptVersions": _data(
        {
            "type": "object",
            "properties": {"prompt_id": {"type": "string"}, "versions": {"type": "array", "items": _object(Version)}},
        }
    ),
    "PromptDiff": _data(
        {
            "type": "object",
            "properties": {
                "prompt_id": {"type": "string"},
                "from": {"type": "object"},
                "to": {"type": "object"},
                "lines": {"type": "array", "items": _object(DiffLine)},
            },
        }
    ),
    "RequestDiff": _data(
        {
            "type": "object",
            "properties": {
                "a": {"type": "string"},
                "b": {"type": "string"},
                "lines": {"type": "array", "items": _object(DiffLine)},
            },
        }
    ),
}

_ERRORS = {
    "400": "bad parameters or body",
    "401": "a relaylog key is needed",
    "404": "unknown id or path",
    "405": "wrong method",
    "413": "body too large",
}


def _operation(route: RouteLike) -> dict[str, Any]:
    parameters = [
        {"name": name[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.path.split("/")
        if name.startswith("{")
    ]
    for group in route.query:
        parameters.extend({"in": "query", **p} for p in PARAMETERS[group])
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": _ref(route.response)}}}
    }
    for code, text in _ERRORS.items():
        responses[code] = {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
    operation: dict[str, Any] = {"summary": route.summary, "parameters": parameters, "responses": responses}
    if route.body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(route.body)}}}
    return operation


def document(routes: Sequence[RouteLike], prefix: str = "/api/v1") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(prefix + route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "relaylog query API", "version": __version__},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"relaylogKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"relaylogKey": []}, {}],
        "paths": paths,
    }
