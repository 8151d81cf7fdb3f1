"""What a record keeps for OpenTelemetry: the caller's W3C trace context (validated, and still
forwarded to the provider unchanged), the provider's response id and its finish reasons.

The trace-context cases are worked out by hand from the W3C Trace Context recommendation
(https://www.w3.org/TR/trace-context/); ids and finish reasons are compared with what the real
`openai` and `anthropic` SDKs (and Gemini's JSON, read plainly) report to the caller.
"""

from __future__ import annotations

import uuid

import anthropic
import httpx
import openai
import orjson
import pytest
from relaylog.headers import split_headers
from relaylog.otel.context import parse_traceparent, parse_tracestate, trace_context
from relaylog.providers.outcome import read_outcome
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy, module_proxy

proxy = module_proxy("relaylog-otel-record")

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (PARENT, PARENT),
        ("  " + PARENT + "\t", PARENT),  # optional whitespace around a header value
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        ),
        # A later version may add fields after a dash; version 00's part is what we keep.
        ("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-adds", PARENT),
        ("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", PARENT),
        ("cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x", None),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", None),  # 00 is exactly 55
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),  # forbidden version
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", None),  # all-zero trace id
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", None),  # all-zero parent id
        ("00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", None),  # upper-case hex
        ("00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01", None),  # short trace id
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01", None),  # short parent id
        ("00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01", None),
        ("00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01", None),
        ("", None),
        (None, None),
    ],
)
def test_traceparent_is_validated(value: str | None, expected: str | None) -> None:
    assert parse_traceparent(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        (" rojo=1 ,, congo=2,", "rojo=1,congo=2"),  # empty members and whitespace dropped
        ("fw529a3039@dt=abc,x*/_-9=a b", "fw529a3039@dt=abc,x*/_-9=a b"),  # tenant@system, inner space
        ("rojo=1,rojo=2", None),  # duplicate key
        ("Rojo=1", None),  # keys are lower case
        ("rojo=", None),  # a value has at least one character
        ("rojo=a \t", "rojo=a"),  # whitespace after a value is the list's, not the value's
        ("rojo=a\x01b", None),  # control characters are not allowed
        ("rojo=caf\u00e9", None),  # nor anything beyond ASCII
        ("rojo=a=b", None),  # "=" is not allowed in a value
        (",".join(f"k{i}=v" for i in range(33)), None),  # at most 32 members
        (",".join(f"k{i}=v" for i in range(32)), ",".join(f"k{i}=v" for i in range(32))),
        ("a" * 257 + "=v", None),  # key too long
        ("k=" + "v" * 256, "k=" + "v" * 256),
        ("k=" + "v" * 257, None),
        ("", None),
    ],
)
def test_tracestate_is_validated(value: str, expected: str | None) -> None:
    assert parse_tracestate(value) == expected


def test_tracestate_is_kept_only_beside_a_valid_traceparent() -> None:
    assert trace_context(PARENT, "rojo=1") == (PARENT, "rojo=1")
    assert trace_context(PARENT, "rojo=1,rojo=2") == (PARENT, None)
    assert trace_context("00-garbage", "rojo=1") == (None, None)
    assert trace_context(None, "rojo=1") == (None, None)


def test_trace_headers_are_read_and_still_forwarded_unchanged() -> None:
    raw = [(b"traceparent", PARENT.encode()), (b"tracestate", b"a=1"), (b"tracestate", b"b=2"), (b"x-other", b"y")]
    meta, upstream, _ = split_headers(raw)
    assert (meta.traceparent, meta.tracestate) == (PARENT, "a=1,b=2")
    assert upstream == [("traceparent", PARENT), ("tracestate", "a=1"), ("tracestate", "b=2"), ("x-other", "y")]
    # Two traceparent headers cannot both be the caller's: neither is trusted, both still relayed.
    meta, upstream, _ = split_headers([(b"traceparent", PARENT.encode()), (b"traceparent", PARENT.encode())])
    assert trace_context(meta.traceparent, meta.tracestate) == (None, None)
    assert len(upstream) == 2


def _ids() -> tuple[str, dict[str, str]]:
    request_id = str(uuid.uuid4())
    return request_id, {"Helicone-Request-Id": request_id}


def test_the_record_keeps_a_valid_caller_trace_and_the_provider_sees_it_unchanged(
    proxy: RunningProxy, standin: StandIn
) -> None:
    standin.clear()
    request_id, headers = _ids()
    headers |= {"traceparent": PARENT, "tracestate": "rojo=00f067aa0ba902b7"}
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", default_headers=headers)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    record = proxy.record(request_id)
    assert (record["traceparent"], record["tracestate"]) == (PARENT, "rojo=00f067aa0ba902b7")
    sent = standin.requests[-1]
    assert (sent.header("traceparent"), sent.header("tracestate")) == (PARENT, "rojo=00f067aa0ba902b7")

    request_id, headers = _ids()
    bad = "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"
    headers |= {"traceparent": bad, "tracestate": "rojo=1"}
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", default_headers=headers)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    record = proxy.record(request_id)
    assert (record["traceparent"], record["tracestate"]) == (None, None)
    assert standin.requests[-1].header("traceparent") == bad  # relayed as it came, all the same


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("scenario", ["text", "tool", "long"])
def test_openai_chat_id_and_finish_reason(proxy: RunningProxy, stream: bool, scenario: str) -> None:
    request_id, headers = _ids()
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", default_headers=headers)
    kwargs = {"model": f"standin-{scenario}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **kwargs))
        seen_id = chunks[0].id
        reasons = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    else:
        completion = client.chat.completions.create(**kwargs)
        seen_id, reasons = completion.id, [c.finish_reason for c in completion.choices]
    record = proxy.record(request_id)
    assert record["response_id"] == seen_id and seen_id.startswith("chatcmpl-")
    assert orjson.loads(record["finish_reasons"]) == reasons and len(reasons) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_id_and_stop_reason(proxy: RunningProxy, stream: bool) -> None:
    request_id, headers = _ids()
    client = anthropic.Anthropic(base_url=proxy.url + "/anthropic", api_key="sk-ant-test", default_headers=headers)
    kwargs = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        with client.messages.stream(**kwargs) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**kwargs)
    record = proxy.record(request_id)
    assert record["response_id"] == message.id and message.id.startswith("msg_")
    assert orjson.loads(record["finish_reasons"]) == [message.stop_reason]


@pytest.mark.parametrize("action", ["generateContent", "streamGenerateContent?alt=sse", "streamGenerateContent"])
def test_gemini_response_id_and_finish_reason(proxy: RunningProxy, action: str) -> None:
    request_id, headers = _ids()
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    url = f"{proxy.url}/gemini/v1beta/models/gemini-2.0-flash:{action}"
    reply = httpx.post(url, json=body, headers=headers | {"x-goog-api-key": "g-test"}, timeout=10)
    assert reply.status_code == 200
    if action.endswith("alt=sse"):
        chunks = [orjson.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    else:
        parsed = reply.json()
        chunks = parsed if isinstance(parsed, list) else [parsed]
    record = proxy.record(request_id)
    assert record["response_id"] == chunks[0]["responseId"]
    last = [c["finishReason"] for chunk in chunks for c in chunk.get("candidates", []) if c.get("finishReason")]
    assert orjson.loads(record["finish_reasons"]) == last[-1:]


def test_openai_responses_api_id(proxy: RunningProxy) -> None:
    request_id, headers = _ids()
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", default_headers=headers)
    response = client.responses.create(model="gpt-4o-mini", input="hi")
    record = proxy.record(request_id)
    assert record["response_id"] == response.id and response.id.startswith("resp_")
    assert record["finish_reasons"] is None  # the Responses API names none for a complete answer

    request_id, headers = _ids()
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", default_headers=headers)
    events = list(client.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=3, stream=True))
    assert events[-1].type == "response.incomplete"
    final = events[-1].response
    record = proxy.record(request_id)
    assert record["response_id"] == final.id
    assert final.incomplete_details is not None
    assert orjson.loads(record["finish_reasons"]) == [final.incomplete_details.reason]


def test_several_choices_are_reported_in_index_order() -> None:
    # Choice 1 finishes before choice 0 in the stream; the reasons follow the choices' order.
    events = [
        {"id": "chatcmpl-9", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]},
        {"id": "chatcmpl-9", "choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]},
        {
            "id": "chatcmpl-9",
            "choices": [{"index": 0, "delta": {"content": '"finish_reason":"x"'}, "finish_reason": None}],
        },
        {"id": "chatcmpl-9", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    body = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    assert read_outcome("openai", "/v1/chat/completions", body) == ("chatcmpl-9", ("stop", "length"))


def test_unreadable_or_foreign_bodies_give_nothing() -> None:
    assert read_outcome("openai", "/v1/chat/completions", b'{"id": "chatcmpl-1", "choi') == (None, None)
    assert read_outcome("openai", "/v1/embeddings", b'{"object":"list","data":[],"model":"m"}') == (None, None)
    assert read_outcome("anthropic", "/v1/messages", b"event: ping\ndata: {}\n\n") == (None, None)
    assert read_outcome("gemini", "/v1beta/models/x:generateContent", b"\x00\xff") == (None, None)
