"""A response past the capture limit: stored cut, yet a stream's usage and finish reasons, which
come last, are read from the end relaylog still keeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web
from relaylog.config import Settings
from relaylog.headers import HeliconeMeta
from relaylog.observe import TAIL_BYTES, Exchange
from relaylog.providers.registry import PROVIDERS
from relaylog.providers.sse import complete_suffix
from relaylog.recording import build_record

from tests.support.proxy import RunningProxy
from tests.support.records import NamedBodies
from tests.support.upstream import AiohttpUpstream

MESSAGES = [{"role": "user", "content": "Say hello"}]
LONG = {"x-standin-scenario": "long", "anthropic-version": "2023-06-01"}
USAGE = ("input_tokens", "output_tokens", "cost_usd", "finish_reasons", "usage_source", "response_model")


def _stream(url: str, body: object, headers: dict[str, str]) -> tuple[bytes, str]:
    with httpx.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200
        return response.read(), response.headers["helicone-id"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
        ),
        ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "Say hello", "stream": True}),
        (
            "/anthropic/v1/messages",
            {"model": "claude-sonnet-4-5", "max_tokens": 900, "stream": True, "messages": MESSAGES},
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]},
        ),
    ],
    ids=["chat-usage-asked", "chat-usage-withheld", "responses", "anthropic", "gemini"],
)
def test_a_stream_past_the_capture_limit_keeps_its_usage(
    make_proxy: Callable[..., RunningProxy], path: str, body: object
) -> None:
    whole = make_proxy()
    cut = make_proxy(max_capture_bytes=1000)
    sent, whole_id = _stream(whole.url + path, body, LONG)
    received, cut_id = _stream(cut.url + path, body, LONG)
    assert len(received) > 3000 and received.count(b"\n\n") == sent.count(b"\n\n")
    expected, record = whole.record(whole_id), cut.record(cut_id)
    assert expected["output_tokens"] and expected["cost_usd"]
    assert {name: record[name] for name in USAGE} == {name: expected[name] for name in USAGE}
    assert record["error_type"] is None and record["response_bytes"] == expected["response_bytes"]
    # Stored cut at the limit, and said so: the stream's start as the client received it.
    assert record["parse_error"] == "response: body larger than the capture limit, stored truncated"
    assert record["response_body"].encode() == received[:1000]


@pytest.mark.parametrize("encoding", ["gzip", "identity"])
def test_an_answer_within_the_kept_end_of_the_limit_is_read_whole(
    make_proxy: Callable[..., RunningProxy], encoding: str
) -> None:
    """Not a stream: usage sits at the end of one JSON document, read whole when no byte was
    dropped between the stored start and the kept end (compressed or not)."""
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    headers = {**LONG, "accept-encoding": encoding}
    whole, cut = make_proxy(), make_proxy(max_capture_bytes=200)
    sent = httpx.post(whole.url + "/v1/chat/completions", json=body, headers=headers)
    relayed = httpx.post(cut.url + "/v1/chat/completions", json=body, headers=headers)
    assert relayed.content == sent.content and relayed.headers.get("content-encoding") == (
        "gzip" if encoding == "gzip" else None
    )
    assert int(relayed.headers["content-length"]) > 400
    expected = whole.record(sent.headers["helicone-id"])
    record = cut.record(relayed.headers["helicone-id"])
    assert expected["output_tokens"] and expected["cost_usd"]
    assert {name: record[name] for name in USAGE} == {name: expected[name] for name in USAGE}
    assert record["parse_error"] == "response: body larger than the capture limit, stored truncated"


def test_a_stream_far_past_the_limit_is_read_from_its_last_whole_events(
    make_proxy: Callable[..., RunningProxy],
) -> None:
    """More than the kept end lies past the limit: the events in between are gone, and the cut
    event at the start of what is kept is not read."""
    events = 400
    content = "y" * 900

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for index in range(events):
            delta = {"content": content} if index else {"role": "assistant", "content": ""}
            chunk = {"id": "c", "model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "delta": delta}]}
            await response.write(b"data: " + orjson.dumps({**chunk, "usage": None}) + b"\n\n")
        stop = {
            "id": "c",
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        usage = {"prompt_tokens": 9, "completion_tokens": 399, "total_tokens": 408}
        await response.write(b"data: " + orjson.dumps({**stop, "usage": None}) + b"\n\n")
        last = {"id": "c", "model": "gpt-4o-mini-2024-07-18", "choices": [], "usage": usage}
        await response.write(b"data: " + orjson.dumps(last) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    with AiohttpUpstream(chat) as upstream:
        proxy = make_proxy(upstream, max_capture_bytes=16 * 1024)
        received, request_id = _stream(proxy.url + "/v1/chat/completions", body, {})
    assert len(received) > 16 * 1024 + 2 * TAIL_BYTES  # more past the limit than is kept
    record = proxy.record(request_id)
    assert (record["input_tokens"], record["output_tokens"]) == (9, 399)
    assert record["finish_reasons"] == '["stop"]' and record["usage_source"] == "provider"
    assert record["cost_usd"] and record["response_model"] == "gpt-4o-mini-2024-07-18"
    assert record["parse_error"] == "response: body larger than the capture limit, stored truncated"


def test_the_kept_end_is_bounded_whatever_the_chunks(tmp_path: Path) -> None:
    exchange = Exchange("r", time.time(), time.perf_counter(), "POST", "/v1/chat/completions", HeliconeMeta(), 100)
    sizes = [7, 3000, 1, 70_000, 5, 200_000, 13, 65_536, 2]
    for size in sizes:
        assert exchange.chunk_sent(b"x" * (size - 1) + b"\n")
        if exchange.response_bytes <= 100:
            assert exchange.response_tail is None and exchange.tail_bytes == 0
            continue
        assert exchange.response_tail is not None
        assert exchange.tail_bytes == sum(map(len, exchange.response_tail))
        # At least TAIL_BYTES once that many came past the limit, never twice as much.
        assert min(TAIL_BYTES, exchange.response_bytes - 100) <= exchange.tail_bytes <= 2 * TAIL_BYTES
    assert exchange.response_bytes == sum(sizes)
    assert b"".join(exchange.response_chunks) == b"x" * 6 + b"\n" + b"x" * 93  # the start, to the limit
    sent = b"".join(b"x" * (size - 1) + b"\n" for size in sizes)
    assert exchange.response_tail is not None
    assert b"".join(exchange.response_tail) == sent[-exchange.tail_bytes :]  # the very end, in order
    # A response that is not an event stream is stored cut and read as such (no usage invented).
    exchange.provider, exchange.endpoint = PROVIDERS["openai"], "/v1/chat/completions"
    exchange.response_described("application/json", None)
    exchange.upstream_started = exchange.finished = time.perf_counter()
    record = build_record(exchange, Settings(data_dir=tmp_path), NamedBodies())
    assert record["usage_source"] == "absent" and record["input_tokens"] is None


@pytest.mark.parametrize(
    ("tail", "events"),
    [
        (b'": 1}\n\ndata: {"a": 2}\n\ndata: [DONE]\n\n', b'data: {"a": 2}\n\ndata: [DONE]\n\n'),
        (b"\r\n\r\nevent: x\r\ndata: 1\r\n\r\n", b"event: x\r\ndata: 1\r\n\r\n"),
        (b"a\r\rdata: 1\r\r", b"data: 1\r\r"),
        (b"a\n\r\ndata: 1\n\n", b"data: 1\n\n"),
        (b"no blank line at all", b""),
        (b"", b""),
    ],
)
def test_complete_suffix_starts_at_the_first_whole_event(tail: bytes, events: bytes) -> None:
    assert complete_suffix(tail) == events
