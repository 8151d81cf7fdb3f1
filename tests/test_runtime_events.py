"""Function URL events in, ASGI requests out; ASGI response headers out as the prelude has them."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from relaylog.runtime.buffered import BufferedResponse
from relaylog.runtime.events import EventError, to_asgi
from relaylog.runtime.invoke import prelude_headers

EVENTS = Path(__file__).resolve().parent.parent / "events"


def _event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def test_a_streamed_chat_request_becomes_an_asgi_scope() -> None:
    event = _event("function_url_stream_chat.json")
    scope, body = to_asgi(event)
    assert scope["type"] == "http" and scope["method"] == "POST" and scope["scheme"] == "https"
    assert scope["path"] == "/v1/chat/completions" and scope["raw_path"] == b"/v1/chat/completions"
    assert scope["query_string"] == b""
    assert scope["client"] == ("203.0.113.7", 0)
    assert scope["server"] == ("abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws", 443)
    headers = dict(scope["headers"])
    assert headers[b"authorization"] == b"Bearer sk-example-not-a-real-key"
    assert headers[b"helicone-session-path"] == b"/plan"
    assert b"cookie" not in headers
    assert json.loads(body)["stream"] is True and body == event["body"].encode()


def test_base64_bodies_cookies_query_strings_and_joined_headers() -> None:
    event = _event("function_url_base64.json")
    scope, body = to_asgi(event)
    assert body == base64.b64decode(event["body"])
    assert json.loads(body)["messages"][0]["content"] == "Grüße"
    assert scope["query_string"] == b"api-version=2024-10-21&trace=a%20b"  # as sent, still encoded
    headers = scope["headers"]
    assert (b"cookie", b"session=abc123; theme=dark") in headers
    assert (b"x-trace", b"first,second") in headers  # Lambda's comma-joined repeats, one header
    assert [name for name, _ in headers].count(b"x-trace") == 1


def test_the_function_urls_own_headers_are_not_the_clients() -> None:
    event = _event("function_url_stream_chat.json")
    event["headers"] |= {"x-amzn-tls-version": "TLSv1.3", "x-amzn-tls-cipher-suite": "TLS_AES_128_GCM_SHA256"}
    names = {name for name, _ in to_asgi(event)[0]["headers"]}
    assert names.isdisjoint(
        {b"x-amzn-trace-id", b"x-forwarded-for", b"x-forwarded-port", b"x-forwarded-proto", b"x-amzn-tls-version",
         b"x-amzn-tls-cipher-suite"}
    )  # fmt: skip
    assert b"authorization" in names and b"helicone-session-path" in names


@pytest.mark.parametrize("cookie_header", [False, True])
def test_cookies_reach_the_app_once_whether_or_not_the_header_stays_beside_the_array(cookie_header: bool) -> None:
    event = _event("function_url_base64.json")
    if cookie_header:
        event["headers"]["cookie"] = "session=abc123; theme=dark"
    cookies = [value for name, value in to_asgi(event)[0]["headers"] if name == b"cookie"]
    assert cookies == [b"session=abc123; theme=dark"]


def test_paths_are_decoded_for_routing_and_kept_raw_for_relaying() -> None:
    event = _event("function_url_stream_chat.json")
    event["rawPath"] = "/azure/my%20res/openai/deployments/x/chat/completions"
    scope, _ = to_asgi(event)
    assert scope["path"] == "/azure/my res/openai/deployments/x/chat/completions"
    assert scope["raw_path"] == b"/azure/my%20res/openai/deployments/x/chat/completions"


def test_header_text_beyond_latin1_is_passed_on_as_utf8() -> None:
    event = _event("function_url_stream_chat.json")
    event["headers"]["helicone-property-city"] = "東京"
    event["headers"]["helicone-property-name"] = "Grüße"
    headers = dict(to_asgi(event)[0]["headers"])
    assert headers[b"helicone-property-city"] == "東京".encode()
    assert headers[b"helicone-property-name"] == "Grüße".encode("latin-1")


def test_an_event_without_a_body_or_headers_is_an_empty_request() -> None:
    event = _event("function_url_stream_chat.json")
    del event["body"], event["headers"]
    event["requestContext"]["http"]["method"] = "get"
    scope, body = to_asgi(event)
    assert body == b"" and scope["headers"] == [] and scope["method"] == "GET"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.pop("requestContext"), "not a Function URL event"),
        (lambda e: e["requestContext"].pop("http"), "not a Function URL event"),
        (lambda e: e.update(headers=["a"]), "not a Function URL event"),
        (lambda e: e.update(body="%%%", isBase64Encoded=True), "not base64"),
    ],
)
def test_events_that_are_not_function_url_requests_are_refused(change: Any, message: str) -> None:
    event = _event("function_url_base64.json")
    change(event)
    with pytest.raises(EventError, match=message):
        to_asgi(event)


def test_prelude_headers_join_repeats_and_keep_cookies_apart() -> None:
    headers, cookies = prelude_headers(
        [
            (b"Content-Type", b"text/event-stream"),
            (b"x-multi", b"a"),
            (b"X-Multi", b"b"),
            (b"set-cookie", b"a=1; Path=/"),
            (b"Set-Cookie", b"b=2"),
            (b"content-length", b"120"),
            (b"transfer-encoding", b"chunked"),
            (b"connection", b"keep-alive"),
        ]
    )
    assert headers == {"content-type": "text/event-stream", "x-multi": "a, b"}
    assert cookies == ["a=1; Path=/", "b=2"]


@pytest.mark.parametrize(
    ("headers", "body", "encoded"),
    [
        ({"content-type": "text/event-stream"}, b"data: hi\n\n", False),
        ({"content-type": "application/json"}, '{"a":"é"}'.encode(), False),
        ({"content-type": "application/json", "content-encoding": "gzip"}, b"\x1f\x8b\x08\x00", True),
        ({"content-type": "application/octet-stream"}, b"\x00\x01", True),
        ({"content-type": "text/plain"}, b"\xff\xfe", True),  # says text, is not UTF-8
    ],
)
def test_a_buffered_result_is_text_only_when_it_is_utf8_text(
    headers: dict[str, str], body: bytes, encoded: bool
) -> None:
    response = BufferedResponse()
    response.status, response.headers, response.chunks = 200, headers, [body[:1], body[1:]]
    result = response.result()
    assert result["isBase64Encoded"] is encoded
    assert (base64.b64decode(result["body"]) if encoded else result["body"].encode()) == body
