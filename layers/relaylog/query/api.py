"""The query API and dashboard as one ASGI app: `/api/v1/...` (JSON) and `/dashboard/` (static files).

Served by `relaylog serve` next to the proxy, and on AWS by the query function through Mangum. Every
answer is JSON; every refusal is `{"error": {"type", "message"}}` with a 4xx status. Queries run
on worker threads, so a slow one never holds up the proxy sharing the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson

from relaylog.asgi import Receive, Scope, Send
from relaylog.headers import bearer
from relaylog.keys import KeysUnavailable, KeyVerifier
from relaylog.prompts import diff_lines
from relaylog.query import dashboard
from relaylog.query.backend import Backend, NotFound, Unsupported, version_diff
from relaylog.query.openapi import document
from relaylog.query.params import (
    SCORE_NAME,
    USER_SORTS,
    BadRequest,
    Query,
    parse_list,
    parse_page,
    parse_stats,
    score_value,
)

log = logging.getLogger("relaylog.query")

PREFIX = "/api/v1"
MAX_BODY = 64 * 1024
MAX_SCORES = 50
MAX_COMMENT = 4000
MAX_ID = 256


class Refused(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    params: dict[str, str]  # path parameters, decoded
    query: Query
    body: bytes


Handler = Callable[[Backend, Request], Any]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # with {name} parameters
    handler: Handler
    summary: str
    query: tuple[str, ...] = ()  # parameter groups documented in the OpenAPI document
    body: str | None = None  # request body schema name
    response: str = "Object"

    def pattern(self) -> re.Pattern[str]:
        parts = [f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in self.path.split("/")]
        return re.compile("/".join(parts) + "$")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_json_default)


def _id(request: Request, name: str = "id") -> str:
    value = request.params[name]
    if not value or len(value) > MAX_ID:
        raise BadRequest(f"{name} must be 1 to {MAX_ID} characters")
    return value


def _object_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


# -- handlers (run on a worker thread) ------------------------------------------------------------


def list_requests(backend: Backend, request: Request) -> Any:
    return backend.list_requests(parse_list(request.query))


def get_request(backend: Backend, request: Request) -> Any:
    request.query.check_known([])
    return {"data": backend.get_request(_id(request))}


def _check_scores(raw: Any) -> dict[str, bool | float]:
    if not isinstance(raw, dict) or not raw:
        raise BadRequest('scores must be a non-empty object like {"helpful": true, "accuracy": 0.9}')
    if len(raw) > MAX_SCORES:
        raise BadRequest(f"at most {MAX_SCORES} scores at once")
    checked: dict[str, bool | float] = {}
    for name, value in raw.items():
        if not SCORE_NAME.fullmatch(name):
            raise BadRequest(f"score name {name[:80]!r} must be 1-64 letters, digits, '_', '.' or '-'")
        checked[name] = value if isinstance(value, bool) else score_value(value, f"score {name!r}")
    return checked


def add_scores(backend: Backend, request: Request) -> Any:
    request.query.check_known([])
    body = _object_body(request)
    unknown = set(body) - {"scores"}
    if unknown:
        raise BadRequest(f'unknown field {sorted(unknown)[0]!r}; send {{"scores": {{name: number or bool}}}}')
    return {"data": backend.add_scores(_id(request), _check_scores(body.get("scores")), None)}


def add_feedback(backend: Backend, request: Request) -> Any:
    request.query.check_known([])
    body = _object_body(request)
    rating, comment = body.get("rating"), body.get("comment")
    if not isinstance(rating, bool) or set(body) - {"rating", "comment"}:
        raise BadRequest('send {"rating": true or false, "comment": "optional text"}')
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise BadRequest(f"comment must be text of at most {MAX_COMMENT} characters")
    return {"data": backend.add_scores(_id(request), {"feedback": rating}, comment)}


def stats(backend: Backend, request: Request) -> Any:
    return {"data": backend.stats(parse_stats(request.query, finest=backend.finest_bucket))}


def sessions(backend: Backend, request: Request) -> Any:
    return backend.sessions(parse_page(request.query))


def session(backend: Backend, request: Request) -> Any:
    request.query.check_known([])
    return {"data": backend.session(_id(request))}


def users(backend: Backend, request: Request) -> Any:
    params = parse_page(request.query, extra=["sort"])
    sort = request.query.one("sort") or "cost"
    if sort not in USER_SORTS:
        raise BadRequest(f"sort must be one of {', '.join(USER_SORTS)}, got {sort!r}")
    return backend.users(params, sort)


def prompts(backend: Backend, request: Request) -> Any:
    return backend.prompts(parse_page(request.query))


def prompt_versions(backend: Backend, request: Request) -> Any:
    request.query.check_known([])
    prompt_id = _id(request)
    return {"data": {"prompt_id": prompt_id, "versions": backend.prompt_versions(prompt_id)}}


def _version(request: Request, name: str) -> int:
    text = request.query.one(name)
    if text is None or not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 1_000_000:
        raise BadRequest(f"{name} must be a version number (1, 2, ...)")
    return int(text)


def prompt_diff(backend: Backend, request: Request) -> Any:
    request.query.check_known(["from", "to"])
    prompt_id = _id(request)
    before, after = _version(request, "from"), _version(request, "to")
    return {"data": {"prompt_id": prompt_id, **version_diff(backend.prompt_versions(prompt_id), before, after)}}


def request_diff(backend: Backend, request: Request) -> Any:
    """The prompts of two requests, line by line."""
    request.query.check_known(["a", "b"])
    ids = [request.query.one(name) for name in ("a", "b")]
    if not all(ids):
        raise BadRequest("give two request ids: ?a=ID&b=ID")
    texts = []
    for request_id in ids:
        text = backend.request_template(str(request_id))
        if text is None:
            raise BadRequest(f"request {request_id} has no prompt relaylog can read (its body is not JSON, or omitted)")
        texts.append(text)
    return {"data": {"a": ids[0], "b": ids[1], "lines": diff_lines(texts[0], texts[1])}}


def openapi(backend: Backend, request: Request) -> Any:
    request.query.check_known([])
    return document(ROUTES)


ROUTES: tuple[Route, ...] = (
    Route(
        "GET", "/requests", list_requests, "List requests, newest first", ("filters", "list"), response="RequestPage"
    ),
    Route("GET", "/requests/{id}", get_request, "One request with its bodies and scores", response="RequestDetail"),
    Route("POST", "/requests/{id}/scores", add_scores, "Add or replace scores", body="Scores", response="ScoresResult"),
    Route(
        "POST",
        "/requests/{id}/feedback",
        add_feedback,
        "Thumbs up/down and a comment",
        body="Feedback",
        response="ScoresResult",
    ),
    Route("GET", "/stats", stats, "Totals and time series, optionally grouped", ("filters", "stats"), response="Stats"),
    Route(
        "GET",
        "/sessions",
        sessions,
        "Sessions, most recently active first",
        ("filters", "page"),
        response="SessionPage",
    ),
    Route("GET", "/sessions/{id}", session, "One session as a tree by session path", response="Session"),
    Route(
        "GET",
        "/users",
        users,
        "Users by cost, requests or last seen",
        ("filters", "page", "user_sort"),
        response="UserPage",
    ),
    Route(
        "GET", "/prompts", prompts, "Prompt ids, most recently used first", ("filters", "page"), response="PromptPage"
    ),
    Route("GET", "/prompts/{id}", prompt_versions, "The versions of a prompt", response="PromptVersions"),
    Route(
        "GET",
        "/prompts/{id}/diff",
        prompt_diff,
        "Line diff between two versions",
        ("version_pair",),
        response="PromptDiff",
    ),
    Route(
        "GET",
        "/diff",
        request_diff,
        "Line diff between the prompts of two requests",
        ("request_pair",),
        response="RequestDiff",
    ),
    Route("GET", "/openapi.json", openapi, "This document"),
)
_COMPILED = tuple((route, route.pattern()) for route in ROUTES)


def _status_of(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, Refused):
        return exc.status, exc.kind
    if isinstance(exc, NotFound):
        return 404, "not_found"
    if isinstance(exc, Unsupported):
        return 400, "unsupported"
    if isinstance(exc, BadRequest):
        return 400, "invalid_request"
    return 500, "internal_error"


class QueryApp:
    """`keys` None: open (a local server on loopback with no relaylog keys). Otherwise every API
    call needs a relaylog key as `Authorization: Bearer` or `Helicone-Auth: Bearer`.

    `backend` is a factory, called at the first API call: a proxy whose dashboard is never opened
    never loads the back end (locally, DuckDB and its memory).
    """

    def __init__(self, backend: Callable[[], Backend], keys: KeyVerifier | None, require_key: bool = False) -> None:
        self._make_backend = backend
        self._backend: Backend | None = None
        self._backend_lock = threading.Lock()
        self.keys = keys
        # On AWS the API is never open: with no keys created yet, nobody gets in.
        self.require_key = require_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        path: str = scope["path"]
        if path == "/dashboard" or path.startswith("/dashboard/"):
            await dashboard.serve(path, scope["method"], send)
            return
        try:
            status, payload = await self._api(scope, receive)
        except Exception as exc:  # every failure becomes a JSON answer, never a dropped connection
            status, kind = _status_of(exc)
            if status == 500:
                log.exception("query API failed on %s %s", scope["method"], path)
                message = "the query failed inside relaylog; the server log has the details"
            else:
                message = str(exc)
            payload = {"error": {"type": kind, "message": message}}
        await _send_json(send, status, payload)

    def _authorize(self, scope: Scope) -> None:
        if self.keys is None:
            return
        try:
            if not self.require_key and not self.keys.active_count():
                return
        except KeysUnavailable:
            raise Refused(503, "keys_unavailable", "relaylog cannot read its keys yet; try again shortly") from None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        presented = bearer(headers.get("authorization") or headers.get("helicone-auth") or "")
        if not presented or self.keys.verify(presented) is None:
            raise Refused(401, "unauthorized", "a valid relaylog key is needed: Authorization: Bearer <key>")

    def _backend_once(self) -> Backend:
        with self._backend_lock:  # two first calls at once must not make two back ends
            if self._backend is None:
                self._backend = self._make_backend()
            return self._backend

    async def _api(self, scope: Scope, receive: Receive) -> tuple[int, Any]:
        path: str = scope["path"]
        if not path.startswith(PREFIX + "/"):
            raise Refused(404, "not_found", f"no such path; the API is under {PREFIX}/ (see {PREFIX}/openapi.json)")
        self._authorize(scope)
        # Ids are matched in the path as sent, so an id holding '/' or '%' (sent as %2F, %25) stays
        # one segment; where the server gives only the decoded path (Mangum), that is used as is.
        raw = scope.get("raw_path")
        sub = (raw.decode("latin-1") if raw else path)[len(PREFIX) :]
        method = scope["method"]
        allowed = []
        for route, pattern in _COMPILED:
            match = pattern.match(sub)
            if match is None:
                continue
            allowed.append(route.method)
            if route.method != method:
                continue
            body = await _read_body(receive) if method == "POST" else b""
            try:
                query = Query(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
            except ValueError:
                raise BadRequest("the query string is malformed") from None
            params = {k: unquote(v) if raw else v for k, v in match.groupdict().items()}
            request = Request(method, params, query, body)
            backend = self._backend
            if backend is None:
                backend = await asyncio.to_thread(self._backend_once)
            result = await asyncio.to_thread(route.handler, backend, request)
            return 200, result
        if allowed:
            raise Refused(405, "method_not_allowed", f"{method} is not allowed here; use {', '.join(allowed)}")
        raise Refused(404, "not_found", f"no such endpoint {sub!r}; see {PREFIX}/openapi.json")


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refused(400, "invalid_request", "the client went away while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise Refused(413, "body_too_large", f"the body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send_json(send: Send, status: int, payload: Any) -> None:
    try:
        body = dumps(payload)
    except TypeError as exc:
        log.error("query API answer not serialisable: %s", exc)
        status, body = 500, dumps({"error": {"type": "internal_error", "message": "answer not serialisable"}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def is_query_path(path: str) -> bool:
    """Paths this app answers when it shares a server with the proxy."""
    return path.startswith(PREFIX + "/") or path == "/dashboard" or path.startswith("/dashboard/")
