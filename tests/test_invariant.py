"""relaylog's promise, as a table: for every fault the stand-in can inject, streamed and not, in
each wire format (OpenAI Chat Completions and Responses through the `openai` SDK, Anthropic
Messages through the `anthropic` SDK, Gemini over plain HTTP as the other Gemini tests call it),
the client sees through relaylog what it sees calling the provider directly: the status, the
provider's headers, the body bytes it read, what the SDK returned and the exception it raised. And
the record's status and `error_type` say what the fault was.

Where relaylog must answer for itself the outcome differs, and `DIFFERS` lists those rows with
the reason: its own refusals (401, 403, 404, 413, 429, 400), a provider that resets before
answering (502) or stays silent past relaylog's read timeout (504, or a cut).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy, module_proxy

pytestmark = pytest.mark.slow

API = ("chat", "responses", "anthropic", "gemini")
CLIENT_TIMEOUT_S = 10.0
GIVES_UP_S = 0.5  # a client timeout shorter than the stall, in the rows where the client gives up
PROMPT = "Say hello"
# Headers relaylog adds to a response: its record id, and to an event stream what keeps proxies
# from buffering it (unless the provider set them).
ADDED = {"helicone-id", "cache-control", "x-accel-buffering"}

proxy = module_proxy("relaylog-invariant")


# -- one call, seen from the client -----------------------------------------------------------


@dataclass
class Outcome:
    """What the client saw: the response head, the raw body bytes its HTTP library read (before
    any decompression), what the SDK returned (streams: every event it yielded) and the exception
    it raised, with the HTTP-level cause and its text."""

    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes = b""
    result: Any = None
    error: tuple[str, ...] | None = None

    def decoded(self) -> bytes:
        return httpx.Response(self.status or 200, headers=self.headers, content=self.raw).content

    def provider_headers(self, direct: Outcome) -> list[tuple[str, str]]:
        """The headers without the ones relaylog adds (kept when the provider sent them itself)."""
        theirs = {name for name, _ in direct.headers}
        return [(k, v) for k, v in self.headers if k not in ADDED or k in theirs]


def _error(error: BaseException) -> tuple[str, ...]:
    cause = error.__cause__
    described: tuple[str, ...] = (type(error).__name__,)
    if isinstance(error, openai.APIStatusError | anthropic.APIStatusError):
        described += (str(error.status_code), orjson.dumps(error.body, option=orjson.OPT_SORT_KEYS).decode())
    if cause is not None:
        described += (type(cause).__name__, str(cause))
    return described


class _Tap(httpx2.HTTPTransport):
    """The SDK's transport, keeping a copy of the response head and of every raw byte it reads."""

    def __init__(self, seen: Outcome) -> None:
        super().__init__()
        self.seen = seen

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        self.seen.status = response.status_code
        self.seen.headers = [(k.lower(), v) for k, v in response.headers.multi_items()]
        response.stream = _TapStream(response.stream, self.seen)  # type: ignore[arg-type]
        return response


class _TapStream(httpx2.SyncByteStream):
    def __init__(self, inner: Any, seen: Outcome) -> None:
        self.inner = inner
        self.seen = seen

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            self.seen.raw += chunk
            yield chunk

    def close(self) -> None:
        self.inner.close()


def _sdk_call(api: str, base: str, stream: bool, headers: dict[str, str], timeout: float, prompt: str) -> Outcome:
    seen = Outcome()
    options: dict[str, Any] = {"max_retries": 0, "timeout": timeout, "default_headers": headers}
    events: list[Any] = []
    try:
        if api == "anthropic":
            with anthropic.Anthropic(
                base_url=base, api_key=headers.get("x-api-key", "sk-ant-test"),
                http_client=anthropic.DefaultHttpxClient(transport=_Tap(seen)), **options,
            ) as client:  # fmt: skip
                answer = client.messages.create(
                    model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": prompt}],
                    stream=stream,
                )  # fmt: skip
                seen.result = _collect(answer, events) if stream else answer.model_dump()
        else:
            with openai.OpenAI(
                base_url=base + "/v1", api_key=headers.get("authorization", "Bearer sk-test")[7:],
                http_client=openai.DefaultHttpxClient(transport=_Tap(seen)), **options,
            ) as client:  # fmt: skip
                if api == "chat":
                    answer = client.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], stream=stream
                    )
                else:
                    answer = client.responses.create(model="gpt-4o-mini", input=prompt, stream=stream)
                seen.result = _collect(answer, events) if stream else answer.model_dump()
    # The anthropic SDK lets an HTTP error in the middle of a stream through unwrapped.
    except (openai.APIError, anthropic.APIError, httpx2.HTTPError) as error:
        seen.result, seen.error = events, _error(error)
    return seen


def _collect(stream: Any, events: list[Any]) -> list[Any]:
    for event in stream:
        events.append(event.model_dump())
    return events


def _gemini_call(base: str, stream: bool, headers: dict[str, str], timeout: float, prompt: str) -> Outcome:
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    seen = Outcome()
    try:
        with (
            httpx.Client(timeout=timeout) as http,
            http.stream("POST", f"{base}/v1beta/models/gemini-2.0-flash:{method}", json=body, headers=headers) as r,
        ):
            seen.status, seen.headers = r.status_code, [(k.lower(), v) for k, v in r.headers.multi_items()]
            for chunk in r.iter_raw():
                seen.raw += chunk
    except httpx.HTTPError as error:
        seen.error = (type(error).__name__, str(error))
    seen.result = seen.decoded() if seen.error is None else None
    return seen


PREFIX = {"chat": "", "responses": "", "anthropic": "/anthropic", "gemini": "/gemini"}


def call(
    api: str,
    origin: str,
    stream: bool,
    headers: dict[str, str],
    timeout: float = CLIENT_TIMEOUT_S,
    prompt: str = PROMPT,
) -> Outcome:
    """One call with the client of `api`, against a provider origin (direct) or relaylog's."""
    if api == "gemini":
        return _gemini_call(origin, stream, headers, timeout, prompt)
    return _sdk_call(api, origin, stream, headers, timeout, prompt)


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A fault and what the record must say: (status, error_type) for streamed and non-streamed
    calls, where status None means "the status the direct call got"."""

    fault: str | None
    streamed: tuple[int | None, str | None]
    plain: tuple[int | None, str | None]
    scenario: str | None = None  # x-standin-scenario
    bad_key: bool = False  # the provider's own key check fails
    timeout: float = CLIENT_TIMEOUT_S


# relaylog asks OpenAI chat streams for usage (`stream_options`) and for an uncompressed answer,
# which it reads as text; the provider answers that request the same, except that an error answer
# it would have gzipped comes uncompressed (the client's body is the same once decoded) and its
# request id is another (the stand-in derives ids from the request's bytes; real ones are random).
INJECTED = {"x-request-id", "content-encoding", "content-length"}


def _without(headers: list[tuple[str, str]], names: set[str]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k not in names]


# What is compared: every field, unless a row says why not.
ALL = ("status", "headers", "raw", "result", "error")
SAME: dict[str, Row] = {
    "no fault": Row(None, (200, None), (200, None)),
    "provider 400": Row("status=400", (400, "upstream_error"), (400, "upstream_error")),
    # The provider's own key check: Gemini answers a bad key with 400, the others with 401.
    "provider refuses the key": Row(None, (None, "upstream_error"), (None, "upstream_error"), bad_key=True),
    "provider 429 + retry-after": Row(
        "status=429;retry-after=1;retry-after-ms=1000", (429, "upstream_error"), (429, "upstream_error")
    ),
    "provider 503": Row("status=503", (503, "upstream_error"), (503, "upstream_error")),
    "slow to answer": Row("delay-ms=200", (200, None), (200, None)),
    "paced stream": Row("chunk-delay-ms=10", (200, None), (200, None)),
    "slow end (after the terminal event)": Row("end-delay-ms=300", (200, None), (200, None)),
    "reset after the headers": Row("drop-after=0", (200, "upstream_disconnect"), (200, "upstream_disconnect")),
    # Two events (two bytes): Gemini's answer has three.
    "cut mid-stream / mid-body": Row("drop-after=2", (200, "upstream_disconnect"), (200, "upstream_disconnect")),
    "cut after the terminal event / whole body": Row("drop-after=100000", (200, None), (200, None)),
    "truncated stream (clean end, no terminal event)": Row("truncate", (200, None), (200, None)),
    "error event in the stream (5xx when not streamed)": Row(
        None, (200, "upstream_stream_error"), (None, "upstream_error"), scenario="stream-error"
    ),
    "silent before the status, the client gives up": Row(
        "delay-ms=1500", (0, "client_disconnect"), (0, "client_disconnect"), timeout=GIVES_UP_S
    ),
    # relaylog reads a body of up to 4 MB whole before it answers (one write, measured faster), so
    # a client whose provider stalls mid-body times out without having seen the status and
    # headers it would have seen directly: same exception, same (empty) result.
    "stall mid-stream / mid-body, the client gives up": Row(
        "stall-after=2", (200, "client_disconnect"), (0, "client_disconnect"), timeout=GIVES_UP_S
    ),
    # The client had the terminal event (or the whole body) before it gave up: a success.
    "stall after the terminal event / whole body, the client gives up": Row(
        "stall-after=100000", (200, None), (200, None), timeout=GIVES_UP_S
    ),
}
PLAIN_COMPARED = {"stall mid-stream / mid-body, the client gives up": ("result", "error")}


KEY_HEADER = {
    "chat": "authorization",
    "responses": "authorization",
    "anthropic": "x-api-key",
    "gemini": "x-goog-api-key",
}


def _headers(api: str, row: Row, request_id: str | None = None) -> dict[str, str]:
    headers = {"x-standin-fault": row.fault} if row.fault else {}
    if row.scenario:
        headers["x-standin-scenario"] = row.scenario
    key = "bad-key" if row.bad_key else "test-key"
    headers[KEY_HEADER[api]] = f"Bearer {key}" if KEY_HEADER[api] == "authorization" else key
    if request_id is not None:
        headers["Helicone-Request-Id"] = request_id
    return headers


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "plain"])
@pytest.mark.parametrize("api", API)
@pytest.mark.parametrize("name", list(SAME))
def test_the_client_sees_what_it_sees_directly(
    name: str, api: str, stream: bool, standin: StandIn, proxy: RunningProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that leaves after the terminal event of a provider that then stays silent: relaylog
    # reads on (for usage) before it writes the record; not the default 5 s here.
    monkeypatch.setattr("relaylog.relay.attempts._READ_ON_S", 0.5)
    row = SAME[name]
    mine = call(api, standin.url, stream, _headers(api, row), row.timeout)
    request_id = str(uuid.uuid4())
    through = call(api, proxy.url + PREFIX[api], stream, _headers(api, row, request_id), row.timeout)
    compared = ALL if stream else PLAIN_COMPARED.get(name, ALL)
    injected = api == "chat" and stream  # relaylog asks this stream for usage: see INJECTED
    if "status" in compared:
        assert through.status == mine.status
    if "headers" in compared:
        skip = INJECTED if injected else set()
        assert _without(through.provider_headers(mine), skip) == _without(mine.headers, skip)
        assert not mine.status or dict(through.headers)["helicone-id"] == request_id
    if "raw" in compared and injected:
        assert through.decoded() == mine.decoded()
    elif "raw" in compared:
        assert through.raw == mine.raw
    if "result" in compared:
        assert through.result == mine.result
    if "error" in compared:
        assert through.error == mine.error
    status, error_type = row.streamed if stream else row.plain
    record = proxy.record(request_id)
    assert (record["status"], record["error_type"]) == (mine.status if status is None else status, error_type)
    assert record["stream"] is stream


def test_the_table_covers_every_fault_the_stand_in_knows() -> None:
    """A fault added to the stand-in's grammar must get a row here or in DIFFERS."""
    from relaylog.standin import faults

    grammar = faults.__doc__.split("Grammar:")[1].split("Example:")[0]  # type: ignore[union-attr]
    # Each fault's line starts with exactly four spaces (its explanation's continuations with more).
    lines = [line for line in grammar.splitlines() if line.startswith("    ") and not line.startswith("     ")]
    listed = {line.split()[0].split("=")[0] for line in lines}
    rows = [row.fault for row in SAME.values()] + [row.fault for row in DIFFERS.values()]
    used = {item.split("=")[0] for fault in rows if fault for item in fault.split(";")}
    # `times` and `id` only choose which calls a fault applies to.
    assert listed - used == {"times", "id"}


# -- where relaylog differs -------------------------------------------------------------------

READ_TIMEOUT_S = 0.3


@dataclass(frozen=True)
class Differs:
    """A row where relaylog answers for itself, and why that cannot be the provider's answer: the
    status the client gets, the record's error_type, the exception the openai SDK raises (and the
    anthropic SDK, where its name differs; plain HTTP raises only for a cut) and whether the
    provider saw the call."""

    why: str
    fault: str | None
    status: int
    error_type: str
    exception: str
    called: bool = False
    anthropic_exception: str | None = None


REFUSAL = "relaylog's own refusal: the provider is never called"
# fmt: off
DIFFERS: dict[str, Differs] = {
    "relaylog key missing (401)": Differs(REFUSAL, None, 401, "unauthorized", "AuthenticationError"),
    "target not on the allow-list (403)": Differs(REFUSAL, None, 403, "target_not_allowed", "PermissionDeniedError"),
    "unknown provider prefix (404)": Differs(REFUSAL, None, 404, "unknown_provider", "NotFoundError"),
    "body too large (413)": Differs(
        REFUSAL, None, 413, "body_too_large", "APIStatusError", anthropic_exception="ContentTooLargeError"
    ),
    "over a relaylog rate limit (429)": Differs(REFUSAL, None, 429, "rate_limited", "RateLimitError"),
    "invalid gateway header (400)": Differs(REFUSAL, None, 400, "invalid_request", "BadRequestError"),
    "provider resets before answering (502)": Differs(
        "directly a connection error; an ASGI app cannot drop a connection without answering, and a "
        "gateway's answer for an upstream that hung up is a 502 (which the SDKs retry alike)",
        "reset", 502, "upstream_unreachable", "InternalServerError", called=True,
    ),
    "provider silent past relaylog's read timeout (504)": Differs(
        "directly the client waits on; relaylog gives up after RELAYLOG_READ_TIMEOUT",
        "delay-ms=1500", 504, "upstream_timeout", "InternalServerError", called=True,
        anthropic_exception="GatewayTimeoutError",
    ),
    "provider silent mid-answer past relaylog's read timeout (cut)": Differs(
        "directly the client waits on; relaylog gives up after RELAYLOG_READ_TIMEOUT and, the status "
        "being sent, cuts the connection",
        "stall-after=2", 200, "upstream_timeout", "APIConnectionError", called=True,
    ),
}
# fmt: on


def _sdk_exception(row: Differs, api: str, stream: bool) -> str:
    if api != "anthropic":
        return row.exception
    if stream and row.exception == "APIConnectionError":
        return "RemoteProtocolError"  # mid-stream, the anthropic SDK lets the HTTP error through
    return row.anthropic_exception or row.exception


@pytest.fixture(scope="module")
def strict_proxy(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProxy, str]]:
    """A relaylog with a key, a small body limit and a short read timeout."""
    with RunningProxy(
        tmp_path_factory.mktemp("relaylog-strict"), standin.url, max_request_bytes=4096, read_timeout_s=READ_TIMEOUT_S
    ) as running:
        secret, _ = running.keys.create("table")
        time.sleep(1.1)  # a running server looks at the key file at most once a second
        yield running, secret


def _differs_request(name: str, api: str, key: str, marker: str) -> tuple[str, dict[str, str], str]:
    """(relaylog's path prefix, the headers, the prompt) for one DIFFERS row."""
    prefix, prompt = PREFIX[api], PROMPT
    headers = {"Helicone-Auth": f"Bearer {key}", "x-table-call": marker}
    if api == "gemini":
        headers["x-goog-api-key"] = "AIza-test"
    if DIFFERS[name].fault:
        headers["x-standin-fault"] = DIFFERS[name].fault  # type: ignore[assignment]
    if name.startswith("relaylog key missing"):
        del headers["Helicone-Auth"]
    elif name.startswith("target not"):
        headers["Helicone-Target-Url"] = "http://127.0.0.2:9"
    elif name.startswith("unknown provider"):
        prefix = "/nowhere"
    elif name.startswith("body too large"):
        prompt += " " + "x" * 5000
    elif name.startswith("over a relaylog rate limit"):
        headers |= {"Helicone-RateLimit-Policy": "1;w=3600;s=table", "Helicone-Property-Table": marker}
    elif name.startswith("invalid gateway header"):
        headers |= {"Helicone-Retry-Enabled": "true", "Helicone-Retry-Num": "lots"}
    return prefix, headers, prompt


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "plain"])
@pytest.mark.parametrize("api", API)
@pytest.mark.parametrize("name", list(DIFFERS))
def test_where_relaylog_answers_for_itself(
    name: str, api: str, stream: bool, standin: StandIn, strict_proxy: tuple[RunningProxy, str]
) -> None:
    running, key = strict_proxy
    row = DIFFERS[name]
    marker = str(uuid.uuid4())
    prefix, headers, prompt = _differs_request(name, api, key, marker)
    primed = name.startswith("over a relaylog rate limit")
    if primed:  # the policy lets one call a window through: this one
        assert call(api, running.url + prefix, stream, headers, prompt=prompt).error is None
    request_id = str(uuid.uuid4())
    through = call(api, running.url + prefix, stream, {**headers, "Helicone-Request-Id": request_id}, prompt=prompt)
    assert through.status == row.status
    if row.status >= 400:
        assert orjson.loads(through.raw)["error"]["type"] == row.error_type  # relaylog's JSON error
    if api != "gemini":
        assert through.error is not None and through.error[0] == _sdk_exception(row, api, stream)
    else:  # plain HTTP raises only for the cut
        assert (through.error or ("",))[0] == ("RemoteProtocolError" if row.status < 400 else "")
    record = running.record(request_id)
    assert (record["status"], record["error_type"]) == (row.status, row.error_type)
    reached = [r for r in standin.requests if r.header("x-table-call") == marker]
    assert len(reached) == int(row.called or primed)
    if row.fault == "reset":  # directly, no answer at all
        direct = call(api, standin.url, stream, {"x-standin-fault": "reset", "x-goog-api-key": "AIza-test"})
        assert direct.status is None and direct.error is not None
        assert direct.error[0] in ("APIConnectionError", "RemoteProtocolError", "ReadError")
