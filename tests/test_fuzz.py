"""Fuzzing (issue 6, item 3) with hypothesis: the SSE and usage parsers, the header parsers, the
routing of paths and target URLs, and the gateway policy parsers.

Each target may only return, or raise the error it documents (ValueError for the policy parsers,
RouteError for routing); the parsers that catch everything must not be catching a crash of their
own (their `parse_error` would say "parser error"). Runs are derandomized (the same examples on
every run, no example database) and bounded: a few seconds per target in `make test`; any example
slower than DEADLINE fails as a hang.
"""

from __future__ import annotations

import base64
import string
from datetime import timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from relaylog.config import Settings
from relaylog.gateway.cache_policy import CachePolicy, cache_key, read_cache
from relaylog.gateway.fallbacks import override_body, read_fallbacks
from relaylog.gateway.ratelimit import parse_policy
from relaylog.gateway.retry import read_retry
from relaylog.headers import bearer, narrow_accept_encoding, request_id, split_headers
from relaylog.providers.outcome import read_outcome
from relaylog.providers.parsing import parse_request, parse_response, read_response, stream_ended
from relaylog.providers.routing import RouteError, resolve, resolve_target
from relaylog.providers.sse import SSEBody, SSESplitter
from relaylog.relay.stream_usage import UsageStripper, inject, remove_top_level_key
from relaylog.standin.eventstream import event, exception
from relaylog.usage import Observed

pytestmark = pytest.mark.slow

DEADLINE = timedelta(seconds=2)
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=DEADLINE,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
FAMILIES = ("openai", "anthropic", "gemini", "bedrock")
ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/messages",
    "/v1beta/models/gemini-2.5-flash:generateContent",
    "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
    "/v1beta/openai/chat/completions",
    "/openai/deployments/x/chat/completions?api-version=1",
    "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse-stream",
    "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A%3Afoundation-model%2Fmeta.llama3/invoke",
)

# -- JSON shaped like provider bodies, with wrong types in the places parsers look ---------------

_KEYS = (
    "model", "stream", "user", "usage", "prompt_tokens", "completion_tokens", "total_tokens", "input_tokens",
    "output_tokens", "prompt_tokens_details", "completion_tokens_details", "cached_tokens", "reasoning_tokens",
    "audio_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation",
    "ephemeral_1h_input_tokens", "usageMetadata", "promptTokenCount", "candidatesTokenCount",
    "totalTokenCount", "cachedContentTokenCount", "thoughtsTokenCount", "promptTokensDetails", "modality",
    "tokenCount", "candidates", "finishReason", "modelVersion", "choices", "delta", "type", "message",
    "response", "error", "stream_options", "include_usage", "metadata", "user_id", "x_groq", "id", "object",
    "messages", "content", "index", "inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens",
    "cacheDetails", "ttl", "stopReason", "amazon-bedrock-invocationMetrics", "inputTokenCount", "outputTokenCount",
    "prompt_token_count", "generation_token_count", "inputTextTokenCount", "results", "bytes", "messageStop",
)  # fmt: skip
_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)  # JSON cannot hold lone surrogates
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what JSON writers emit
    st.floats(allow_nan=False, allow_infinity=False),  # JSON has neither
    _text,
    st.sampled_from(["message_start", "message_delta", "message_stop", "error", "response.completed", "STOP", "TEXT"]),
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), _text), inner, max_size=6),
    ),
    max_leaves=30,
)


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _sse(events: list[tuple[str | None, bytes]], line_end: bytes) -> bytes:
    out = []
    for name, data in events:
        if name is not None:
            out.append(b"event: " + name.encode() + line_end)
        out.append(b"data: " + data + line_end + line_end)
    return b"".join(out)


sse_event_data = st.one_of(json_values.map(_json), st.just(b"[DONE]"), st.binary(max_size=40))
sse_bodies = st.builds(
    _sse,
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from(["message_start", "message_delta", "error", "x"])), sse_event_data
        ),
        max_size=8,
    ),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
bodies = st.one_of(
    json_values.map(_json),
    sse_bodies,
    st.binary(max_size=300),
    st.binary(max_size=60).map(lambda b: b"[" * 1100 + b + b"]" * 1100),  # past orjson's depth limit
    st.sampled_from([b'{"n":1e999}', b'{"n":' + b"9" * 400 + b"}", b'"\xff"', b"\xef\xbb\xbfdata: {}\n\n", b""]),
)


def _no_crash(observed: Observed) -> None:
    assert not (observed.parse_error or "").startswith("parser error"), observed.parse_error


@FUZZ
@given(family=st.sampled_from(FAMILIES), endpoint=st.sampled_from(ENDPOINTS), body=bodies)
def test_parse_request(family: Any, endpoint: str, body: bytes) -> None:
    info = parse_request(family, endpoint, body)
    assert not (info.parse_error or "").startswith("parser error"), info.parse_error
    if info.parsed is not None and info.stream:
        injected = inject(body, info.parsed)  # what the relay does next with a stream request
        assert injected is None or orjson.loads(injected)["stream_options"]["include_usage"] is True


@FUZZ
@given(
    family=st.sampled_from(FAMILIES),
    endpoint=st.sampled_from(ENDPOINTS),
    body=bodies,
    content_type=st.sampled_from(["application/json", "text/event-stream", "audio/mpeg", "", "text/plain"]),
    cut=st.floats(min_value=0.0, max_value=1.0),
)
def test_parse_response(family: Any, endpoint: str, body: bytes, content_type: str, cut: float) -> None:
    observed = parse_response(family, endpoint, body, content_type)
    _no_crash(observed)
    # The record reads both with one call that reads the body once: the same answers, also when
    # the body's end was withheld from the client (usage read from all of it, the outcome from
    # what the client saw).
    assert read_response(family, endpoint, body, content_type) == (observed, read_outcome(family, endpoint, body))
    seen = body[: int(len(body) * cut)]
    expected = (parse_response(family, endpoint, body, content_type), read_outcome(family, endpoint, seen))
    assert read_response(family, endpoint, seen, content_type, body[len(seen) :]) == expected


@FUZZ
@example(family="gemini", events=[("", {"candidates": True})])  # found by a 4,000-example run: TypeError
@given(
    family=st.sampled_from(FAMILIES),
    events=st.lists(
        st.tuples(st.sampled_from(["", "message_start", "message_delta", "error"]), json_values), max_size=6
    ),
)
def test_parse_response_streams_of_provider_shaped_events(family: Any, events: list[tuple[str, Any]]) -> None:
    """Events that are valid JSON of the provider's general shape, with wrong types anywhere."""
    body = _sse([(name or None, _json(value)) for name, value in events], b"\n")
    _no_crash(
        parse_response(
            family, "/v1/chat/completions" if family != "gemini" else ENDPOINTS[5], body, "text/event-stream"
        )
    )


def _frames(events: list[tuple[str, Any, bool]]) -> bytes:
    out = []
    for name, value, as_chunk in events:
        payload = _json({"bytes": base64.b64encode(_json(value)).decode()} if as_chunk else value)
        out.append(exception(name, payload) if name.endswith("Exception") else event(name, payload))
    return b"".join(out)


@settings(FUZZ, max_examples=200)  # each example decodes frames with botocore: slower than SSE
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from(["chunk", "metadata", "messageStop", "contentBlockDelta", "throttlingException", "x"]),
            json_values,
            st.booleans(),
        ),
        max_size=6,
    ),
    cut=st.integers(min_value=0, max_value=3000),
    flip=st.one_of(st.none(), st.integers(min_value=0, max_value=3000)),
    endpoint=st.sampled_from(ENDPOINTS[-2:]),
)
def test_bedrock_event_streams(events: list[tuple[str, Any, bool]], cut: int, flip: int | None, endpoint: str) -> None:
    """AWS event streams of Bedrock-shaped events, cut anywhere, with any one byte damaged."""
    body = bytearray(_frames(events)[:cut])
    if flip is not None and flip < len(body):
        body[flip] ^= 0x5A
    _no_crash(parse_response("bedrock", endpoint, bytes(body), "application/vnd.amazon.eventstream"))
    stream_ended("bedrock", endpoint, bytes(body))
    read_outcome("bedrock", endpoint, bytes(body))


@FUZZ
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_sse_splitter_keeps_every_byte(data: bytes, cuts: list[int]) -> None:
    data = data.replace(b"x", b"\n").replace(b"y", b"\r")  # many line ends
    splitter, events, start = SSESplitter(), [], 0
    for cut in sorted(set(cuts)) + [len(data)]:
        events += splitter.feed(data[start:cut])
        start = max(start, cut)
    assert b"".join(events) + splitter.rest == data
    body = SSEBody(data)
    assert list(body.forward()) == list(reversed(list(body.backward())))


@FUZZ
@given(body=sse_bodies, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_usage_stripper(body: bytes, cuts: list[int]) -> None:
    stripper, out, start = UsageStripper(), [], 0
    for cut in sorted(set(cuts)) + [len(body)]:
        out.append(stripper.feed(body[start:cut]))
        start = max(start, cut)
    out.append(stripper.finish())
    assert len(b"".join(out)) <= len(body)


@FUZZ
@given(value=json_values, key=st.sampled_from([b'"usage"', b'"model"', b'"x"']), spaces=st.booleans())
def test_remove_top_level_key(value: Any, key: bytes, spaces: bool) -> None:
    data = orjson.dumps(value, option=orjson.OPT_INDENT_2 if spaces else 0)
    removed = remove_top_level_key(data, key)
    if isinstance(value, dict) and key.strip(b'"').decode() in value:
        parsed = orjson.loads(removed)
        assert parsed == {k: v for k, v in value.items() if k != key.strip(b'"').decode()}


# -- headers ------------------------------------------------------------------------------------

header_names = st.one_of(
    st.sampled_from([b"helicone-auth", b"helicone-request-id", b"helicone-user-id", b"helicone-property-x",
                     b"helicone-property-", b"helicone-omit-request", b"helicone-cache-enabled",
                     b"helicone-fallbacks", b"helicone-target-url", b"connection", b"accept-encoding",
                     b"authorization", b"content-length", b"host", b"x-custom"]),
    st.binary(min_size=1, max_size=12).map(bytes.lower),
)  # fmt: skip
header_values = st.one_of(
    st.binary(max_size=60), st.sampled_from([b"gzip, br;q=1, deflate", b"close, x-custom", b"true"])
)


@FUZZ
@given(raw=st.lists(st.tuples(header_names, header_values), max_size=12))
def test_split_headers(raw: list[tuple[bytes, bytes]]) -> None:
    meta, upstream, accept_encoding = split_headers(raw)
    assert all(not name.startswith("helicone-") for name, _ in upstream)
    narrowed = narrow_accept_encoding(accept_encoding)
    assert (
        narrowed is None
        or narrowed == "identity"
        or set(narrowed.replace(" ", "").split(",")) <= {"gzip", "deflate"}
        or ";" in narrowed
    )
    returned = request_id(meta.request_id)
    assert len(returned) == 36 and returned.count("-") == 4
    bearer(meta.auth)


@FUZZ
@given(
    candidate=st.one_of(
        st.none(), st.text(max_size=60), st.uuids().map(str), st.uuids().map(lambda u: "{" + u.hex + "}")
    )
)
def test_request_id(candidate: str | None) -> None:
    import uuid

    returned = request_id(candidate)
    assert str(uuid.UUID(returned)) == returned


# -- routing ------------------------------------------------------------------------------------

_SETTINGS = Settings(target_allowlist=("api.example.com", "*.example.org", "127.0.0.1:9100", "[::1]:9100", "10.1.2.3"))
path_text = st.text(alphabet=string.ascii_letters + string.digits + "/.%-_~:@!$&'()*+,;=\\", max_size=40)
url_text = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
        st.sampled_from(["http", "https", "file", "gopher", "HTTP", ""]),
        st.one_of(
            st.sampled_from(["api.example.com", "a.example.org", "example.org", "127.0.0.1", "[::1]", "[::ffff:127.0.0.1]",
                             "2130706433", "0x7f.1", "10.1.2.3", "user@api.example.com", "[fe80::1%25lo]", "xn--e1a.example.org"]),
            st.text(alphabet=string.ascii_lowercase + string.digits + ".-:[]@%", max_size=30),
        ),
        st.sampled_from(["", ":9100", ":0", ":99999", ":x", ":"]),
        path_text,
    ),
)  # fmt: skip


@FUZZ
@given(
    path=st.one_of(path_text.map(lambda p: "/" + p), st.sampled_from(["/v1", "/azure/x", "/openai/..", "*"])),
    target=st.one_of(st.none(), url_text),
)
def test_routing(path: str, target: str | None) -> None:
    try:
        route = resolve(path, target, _SETTINGS)
    except RouteError as error:
        assert error.status in (400, 403, 404)
        return
    assert route.origin.startswith(("http://", "https://"))
    if target is not None:
        host = route.origin.split("://", 1)[1].rsplit(":", 1)[0] if not route.origin.endswith("]") else route.origin
        assert route.guarded or any(entry in route.origin for entry in ("127.0.0.1:9100", "[::1]:9100", "10.1.2.3")), (
            host
        )


@FUZZ
@given(fallback=url_text)
def test_fallback_targets(fallback: str) -> None:
    try:
        resolve_target("/v1/chat/completions", fallback, _SETTINGS, header="Helicone-Fallbacks[0] target-url")
    except RouteError as error:
        assert error.status == 403


# -- gateway policies ---------------------------------------------------------------------------

policy_text = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda q, parts: ";".join([q, *parts]),
        st.sampled_from(["100", "0.5", "1e3", "nan", "inf", "-1", "", "١٠", "10"]),
        st.lists(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["w", "u", "s", "W", "x", ""]), st.sampled_from(["60", "0", "cents", "request", "user", "²", "9" * 30, ""])), max_size=4),
    ),
)  # fmt: skip


@FUZZ
@given(text=policy_text)
def test_parse_policy(text: str) -> None:
    try:
        policy = parse_policy(text)
    except ValueError:
        return
    assert policy.quota > 0 and policy.window_s >= 1
    assert parse_policy(policy.text) == policy  # what is shown in helicone-ratelimit-policy reads back


fallback_entries = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"target-url": st.one_of(url_text, json_values)},
        optional={
            "headers": st.one_of(st.dictionaries(st.text(max_size=10), st.one_of(st.text(max_size=10), json_values), max_size=3), json_values),
            "onCodes": st.one_of(st.lists(st.one_of(st.integers(-5, 700), st.fixed_dictionaries({"from": st.integers(0, 700), "to": st.integers(0, 700)}), json_values), max_size=3), json_values),
            "bodyKeyOverride": json_values,
        },
    ),
)  # fmt: skip


@FUZZ
@given(
    entries=st.one_of(st.lists(fallback_entries, max_size=12), json_values),
    raw=st.one_of(st.none(), st.text(max_size=40)),
)
def test_read_fallbacks(entries: Any, raw: str | None) -> None:
    text = raw if raw is not None else orjson.dumps(entries).decode()
    try:
        fallbacks = read_fallbacks(text)
    except ValueError:
        return
    for fallback in fallbacks:
        for status in (200, 429, 500):
            fallback.falls_through(status)
        try:
            override_body(b'{"model":"m","x":' + b"[" * 300 + b"]" * 300 + b"}", fallback.body_override)
        except ValueError:
            pass
        override_body(b'{"model":"m"}', fallback.body_override)


gateway_values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["1", "20", "21", "0", "original", "none", "[1]", '["a"]', "a, b", "9" * 5000, "²"]),
)


@FUZZ
@given(
    raw=st.dictionaries(
        st.sampled_from(["cache-bucket-max-size", "cache-seed", "cache-ignore-keys", "cache-stream-timing",
                         "retry-num", "retry-factor", "retry-min-timeout", "retry-max-timeout"]),
        gateway_values,
    ),
    cache_control=st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["max-age=60", "s-maxage=99999999999999999999"])),
    body=bodies,
)  # fmt: skip
def test_read_cache_and_retry(raw: dict[str, str], cache_control: str | None, body: bytes) -> None:
    headers = [("cache-control", cache_control)] if cache_control is not None else []
    try:
        policy = read_cache(raw, headers)
    except ValueError:
        policy = CachePolicy(ignore_keys=("model", "x"))
    cache_key(policy, tenant="t", provider="openai", method="POST", url="u", accept_encoding=None, body=body)
    try:
        retry = read_retry(raw)
    except ValueError:
        return
    for attempt in range(retry.num + 1):
        delay = retry.delay_s(attempt, None)
        assert delay is not None and 0 <= delay <= retry.max_timeout_ms / 1000.0


@pytest.mark.parametrize("depth", [250, 260, 1000, 1100])
def test_deep_bodies_in_cache_keys_and_overrides(depth: int) -> None:
    """orjson reads 1024 levels and writes 254: a body between the two raised TypeError (a 500)
    where a bodyKeyOverride or Helicone-Cache-Ignore-Keys wrote it back."""
    body = b'{"model":"m","x":' + b"[" * depth + b"]" * depth + b"}"
    cache_key(
        CachePolicy(ignore_keys=("model",)),
        tenant="t",
        provider="p",
        method="POST",
        url="u",
        accept_encoding=None,
        body=body,
    )
    if depth <= 250:
        assert orjson.loads(override_body(body, {"model": "n"}))["model"] == "n"
    elif depth <= 1000:
        with pytest.raises(ValueError, match="nested too deeply"):
            override_body(body, {"model": "n"})
    else:
        assert override_body(body, {"model": "n"}) is body  # not JSON relaylog can read: as sent
