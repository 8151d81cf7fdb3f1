"""Routing, API-key checks, faults and compression: everything between parsed HTTP and a Reply.

Endpoints are matched by path suffix, so any prefix works (`/v1/chat/completions`,
`/openai/v1/chat/completions` for Groq-style paths, Azure's
`/openai/deployments/{name}/chat/completions?api-version=...`, `/v1beta/openai/chat/completions`).
"""

from __future__ import annotations

import sys
import threading
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from . import anthropic_api, bedrock_api, bedrock_replies, gemini_api, openai_api, openai_extras, openai_responses
from .faults import Fault, FaultSyntaxError, parse_fault
from .wire import Reply, Request, UsageError

Handler = Callable[[Request], Reply]


@dataclass(frozen=True, slots=True)
class Endpoint:
    provider: str  # "openai", "anthropic", "gemini" or "bedrock": picks the error format
    handler: Handler


_SUFFIXES: list[tuple[str, str, Endpoint]] = [
    ("POST", "/chat/completions", Endpoint("openai", openai_api.chat_completions)),
    ("POST", "/responses", Endpoint("openai", openai_responses.responses)),
    ("POST", "/embeddings", Endpoint("openai", openai_extras.embeddings)),
    ("POST", "/audio/speech", Endpoint("openai", openai_extras.speech)),
    ("POST", "/audio/transcriptions", Endpoint("openai", openai_extras.transcriptions)),
    ("POST", "/audio/translations", Endpoint("openai", openai_extras.transcriptions)),
    ("POST", "/messages/count_tokens", Endpoint("anthropic", anthropic_api.count_tokens)),
    ("POST", "/messages", Endpoint("anthropic", anthropic_api.messages)),
]


def resolve(req: Request) -> Endpoint | None:
    path = req.route
    if req.method == "POST" and "/models/" in path and ":" in path.rsplit("/", 1)[-1]:
        return Endpoint("gemini", gemini_api.handle)
    if req.method == "POST" and "/model/" in path and path.rsplit("/", 1)[-1] in bedrock_api.OPERATIONS:
        return Endpoint("bedrock", bedrock_api.handle)
    for method, suffix, endpoint in _SUFFIXES:
        if req.method == method and path.endswith(suffix):
            return endpoint
    if req.method == "GET" and path.endswith("/models"):
        # Both providers list models at /v1/models; Anthropic's SDKs always send anthropic-version.
        if req.header("anthropic-version") is not None:
            return Endpoint("anthropic", anthropic_api.models)
        return Endpoint("openai", openai_extras.models)
    return None


def provider_error(provider: str, status: int, req: Request, fault: Fault | None = None) -> Reply:
    if provider == "anthropic":
        return anthropic_api.error(status, anthropic_api.raw_ids(req))
    if provider == "gemini":
        return gemini_api.error(status, retry_after=fault.retry_after if fault else None)
    if provider == "bedrock":
        return bedrock_replies.error(status)
    return openai_api.error(status, openai_api.raw_ids(req))


def bad_key_reply(provider: str, req: Request) -> Reply | None:
    """The provider's own answer to the API key `bad-key`; no other key is ever checked."""
    auth = req.header("authorization")
    if provider == "openai" and (auth == "Bearer bad-key" or req.header("api-key") == "bad-key"):
        return openai_api.error(401, openai_api.raw_ids(req))
    if provider == "anthropic" and (req.header("x-api-key") == "bad-key" or auth == "Bearer bad-key"):
        return anthropic_api.error(401, anthropic_api.raw_ids(req))
    if provider == "gemini" and gemini_api.bad_key(req):
        return gemini_api.error(400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID")
    return None


def standin_error(status: int, message: str) -> Reply:
    """A problem with how the stand-in itself was driven (bad fault header, unknown scenario)."""
    return Reply(status, [("content-type", "application/json")], orjson.dumps({"standin_error": message}))


# Headers a reply can depend on; together with method, path and body they key the reply cache.
_KEY_HEADERS = (
    "x-standin-scenario",
    "x-standin-stream-exception",
    "authorization",
    "x-amz-security-token",
    "api-key",
    "x-api-key",
    "x-goog-api-key",
    "anthropic-version",
    "content-type",
)
_CACHE_LIMIT = 1024
_CACHE_MAX_BODY = 1 << 18


class App:
    """Turns each request into a Reply and the fault that shapes how it is sent.

    Replies are pure functions of the request, so fault-free ones are cached: a benchmark that
    repeats one request costs a dict lookup, leaving the CPU to the proxy being measured."""

    def __init__(self, *, gzip: bool = True, fault: str | None = None) -> None:
        self.gzip = gzip
        self.fault = fault  # used when a request carries no x-standin-fault header
        self._cache: dict[tuple[object, ...], Reply] = {}
        # How many requests each `times=N` fault value has already failed. Never trimmed: one
        # entry per distinct value, and a test that needs a fresh count gives a fresh id=.
        self._fault_uses: dict[str, int] = {}
        self._fault_lock = threading.Lock()

    def handle(self, req: Request) -> tuple[Reply, Fault | None]:
        key: tuple[object, ...] | None = None
        if self.fault is None and req.header("x-standin-fault") is None:
            zipped = self.gzip and _accepts_gzip(req)
            key = (req.method, req.path, req.body, zipped, *map(req.header, _KEY_HEADERS))
            hit = self._cache.get(key)
            if hit is not None:
                return hit, None
        reply, fault = self._handle(req)
        if key is not None and len(reply.body) + sum(map(len, reply.events or ())) <= _CACHE_MAX_BODY:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = reply
        return reply, fault

    def _handle(self, req: Request) -> tuple[Reply, Fault | None]:
        # Requests with a fault never reach the reply cache (see handle), including `times=`
        # ones answered normally: each one must be counted here.
        spec = req.header("x-standin-fault") or self.fault
        try:
            fault = parse_fault(spec)
        except FaultSyntaxError as exc:
            return standin_error(400, str(exc)), None
        if (
            fault is not None
            and fault.times is not None
            and spec is not None
            and not self._fault_applies(spec, fault.times)
        ):
            fault = None
        endpoint = resolve(req)
        if endpoint is None:
            reply = openai_api.error(404, openai_api.raw_ids(req), f"Invalid URL ({req.method} {req.route})")
        elif fault is not None and fault.status is not None:
            reply = provider_error(endpoint.provider, fault.status, req, fault)
        else:
            reply = bad_key_reply(endpoint.provider, req) or self._call(endpoint, req)
        if fault is not None:
            _shape(reply, fault)
        if self.gzip and reply.compress and reply.events is None and _accepts_gzip(req):
            # wbits=31 writes a gzip member whose header has mtime 0: the bytes stay deterministic.
            reply.body = zlib.compress(reply.body, 6, wbits=31)
            reply.headers = reply.headers + [("content-encoding", "gzip")]
        return reply, fault

    def _fault_applies(self, spec: str, times: int) -> bool:
        """Counts this request against the fault value `spec`: True for its first `times` uses."""
        with self._fault_lock:
            used = self._fault_uses.get(spec, 0)
            if used >= times:
                return False
            self._fault_uses[spec] = used + 1
            return True

    @staticmethod
    def _call(endpoint: Endpoint, req: Request) -> Reply:
        try:
            return endpoint.handler(req)
        except UsageError as exc:
            return standin_error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - a stand-in bug must be loud, not a hung test
            traceback.print_exc(file=sys.stderr)
            return standin_error(500, f"stand-in crashed: {exc!r}")


def _shape(reply: Reply, fault: Fault) -> None:
    if fault.retry_after is not None:
        reply.headers = reply.headers + [("retry-after", fault.retry_after)]
    if fault.retry_after_ms is not None:
        reply.headers = reply.headers + [("retry-after-ms", fault.retry_after_ms)]
    if fault.truncate and reply.events is not None:
        keep = fault.truncate_keep if fault.truncate_keep is not None else len(reply.events) - reply.tail
        reply.events = reply.events[:keep]


def _accepts_gzip(req: Request) -> bool:
    value = req.header("accept-encoding")
    return value is not None and "gzip" in value.lower()
