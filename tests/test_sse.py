"""SSE framing: the incremental splitter the relay uses, and the reader behind parse_response."""

from __future__ import annotations

import random
import re

import pytest
from relaylog.providers.sse import SSEBody, SSESplitter, sse_events

OPENAI = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"role":"assistant",'
    b'"content":""},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"Hi"},'
    b'"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1741570283,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":9,'
    b'"completion_tokens":1,"total_tokens":10}}\n\n'
    b"data: [DONE]\n\n"
)

ANTHROPIC = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
    b'"content":[],"model":"claude-sonnet-4-5-20250929","usage":{"input_tokens":25,"output_tokens":1}}}\n\n'
    b"event: ping\n"
    b'data: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)

GEMINI = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"},"index": 0}],'
    b'"usageMetadata": {"promptTokenCount": 9,"totalTokenCount": 9},"modelVersion": "gemini-2.5-flash"}'
    b"\r\n\r\n"
    b'data: {"candidates": [{"content": {"parts": [{"text": " end."}],"role": "model"},'
    b'"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 9,'
    b'"candidatesTokenCount": 12,"totalTokenCount": 21},"modelVersion": "gemini-2.5-flash"}'
    b"\r\n\r\n"
)

# Every line-end style the SSE spec allows, mixed, with comments, ids, retry and multi-line data.
MIXED = (
    b": keep-alive comment\n\n"
    b"event: a\r\ndata: one\r\n\r\n"
    b"id: 7\rdata: two\r\r"
    b"retry: 1000\ndata: three\n\r\n"
    b"data: four-1\r\ndata: four-2\r\n\n"
    b"data: five\n\n"
)
MIXED_EVENTS = [
    b": keep-alive comment\n\n",
    b"event: a\r\ndata: one\r\n\r\n",
    b"id: 7\rdata: two\r\r",
    b"retry: 1000\ndata: three\n\r\n",
    b"data: four-1\r\ndata: four-2\r\n\n",
    b"data: five\n\n",
]

STREAMS = {"openai": OPENAI, "anthropic": ANTHROPIC, "gemini": GEMINI, "mixed": MIXED}


def split_all(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    splitter = SSESplitter()
    events: list[bytes] = []
    for chunk in chunks:
        events += splitter.feed(chunk)
    return events, splitter.rest


def test_mixed_delimiters_in_one_feed() -> None:
    events, rest = split_all([MIXED])
    assert events == MIXED_EVENTS
    assert rest == b""


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_split_at_every_offset_gives_the_same_events(name: str) -> None:
    body = STREAMS[name]
    whole, rest = split_all([body])
    assert b"".join(whole) == body and rest == b""
    for i in range(len(body) + 1):
        events, rest = split_all([body[:i], body[i:]])
        assert events == whole, f"split at {i}"
        assert rest == b""


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_byte_by_byte_and_random_chunks(name: str) -> None:
    body = STREAMS[name]
    whole, _ = split_all([body])
    events, rest = split_all([body[i : i + 1] for i in range(len(body))])
    assert events == whole and rest == b""
    rng = random.Random(name)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(body)), rng.randint(1, 12)))
        chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        events, rest = split_all(chunks)
        assert events == whole and rest == b""


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_prefix_concatenation_is_lossless(name: str) -> None:
    # A cut stream: everything returned plus rest is exactly what came in, at every cut.
    body = STREAMS[name]
    for i in range(len(body) + 1):
        for step in (1, 5, 64):
            prefix = body[:i]
            events, rest = split_all([prefix[j : j + step] for j in range(0, len(prefix), step)])
            assert b"".join(events) + rest == prefix


def test_crlf_delimiter_split_across_chunks() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: x\r\n") == []
    assert splitter.feed(b"\r") == []  # could still become "\r\n"
    assert splitter.rest == b"data: x\r\n\r"
    assert splitter.feed(b"\n") == [b"data: x\r\n\r\n"]
    assert splitter.rest == b""


def test_lone_cr_delimiter_waits_for_next_byte() -> None:
    splitter = SSESplitter()
    assert splitter.feed(b"data: x\r\r") == []
    # The next byte is not "\n", so "\r\r" was the whole delimiter.
    assert splitter.feed(b"data: y\r\r") == [b"data: x\r\r"]
    assert splitter.rest == b"data: y\r\r"


def test_crlf_is_one_line_end_not_two() -> None:
    events, rest = split_all([b"data: a\r\ndata: b\r\n\r\n"])
    assert events == [b"data: a\r\ndata: b\r\n\r\n"]
    events, rest = split_all([b"data: a\r\n", b"data: b\r\n", b"\r\n"])
    assert events == [b"data: a\r\ndata: b\r\n\r\n"] and rest == b""


def test_unfinished_event_stays_in_rest() -> None:
    splitter = SSESplitter()
    assert splitter.feed(OPENAI[:-2]) != []
    assert splitter.rest == b"data: [DONE]"
    assert splitter.feed(OPENAI[-2:]) == [b"data: [DONE]\n\n"]


def test_accepts_bytearray_and_memoryview() -> None:
    splitter = SSESplitter()
    events = splitter.feed(bytearray(b"data: 1\n\n")) + splitter.feed(memoryview(b"data: 2\n\n"))
    assert events == [b"data: 1\n\n", b"data: 2\n\n"]
    assert all(type(e) is bytes for e in events)


def test_large_event_in_small_chunks_is_linear() -> None:
    payload = b"data: " + b"x" * 400_000 + b"\n\n"
    events, rest = split_all([payload[i : i + 100] for i in range(0, len(payload), 100)])
    assert events == [payload] and rest == b""


# ---------------------------------------------------------------------------------------------
# Reading a complete (or cut) body


def test_sse_events_fields() -> None:
    assert sse_events(MIXED) == [
        (b"a", b"one"),
        (b"", b"two"),
        (b"", b"three"),
        (b"", b"four-1\nfour-2"),
        (b"", b"five"),
    ]


def test_sse_events_both_directions_agree() -> None:
    for body in STREAMS.values():
        reader = SSEBody(body)
        assert list(reader.backward()) == list(reversed(list(reader.forward())))


def test_sse_events_data_without_space_and_bom() -> None:
    assert sse_events(b"\xef\xbb\xbfdata:{}\n\nevent:x\ndata:1\n\n") == [(b"", b"{}"), (b"x", b"1")]


def test_sse_events_ignores_a_cut_last_line() -> None:
    assert sse_events(b'data: 1\n\ndata: {"a": 1') == [(b"", b"1")]
    # The line is complete, only the blank line after it is missing: keep it.
    assert sse_events(b"data: 1\n\ndata: 2\n") == [(b"", b"1"), (b"", b"2")]


def test_sse_events_extra_blank_lines() -> None:
    assert sse_events(b"\n\n\ndata: 1\n\n\n\ndata: 2\n\n\n") == [(b"", b"1"), (b"", b"2")]
    reader = SSEBody(b"\n\n\ndata: 1\n\n\n\ndata: 2\n\n\n")
    assert list(reader.backward()) == [(b"", b"2"), (b"", b"1")]


def test_prefix_reads_as_the_cut_body_does() -> None:
    bodies = [body for body in STREAMS.values() if b"\r" not in body]
    bodies += [
        b"\xef\xbb\xbfdata: 1\n\nevent: x\ndata: 2\ndata: 3\n\n: c\n\ndata: 4",
        b"\n\n\ndata: 1\n\n\n\ndata: 2\n\n\n",
    ]
    assert len(bodies) > 2
    for body in bodies:
        whole = SSEBody(body)
        assert whole.as_given
        for size in range(len(body) + 1):
            cut, fresh = whole.prefix(size), SSEBody(body[:size])
            assert list(cut.forward()) == list(fresh.forward()), (body, size)
            assert list(cut.backward()) == list(fresh.backward()), (body, size)


def test_prefix_refuses_a_body_with_rewritten_line_ends() -> None:
    reader = SSEBody(b"data: 1\r\n\r\ndata: 2\r\n\r\n")
    assert not reader.as_given
    with pytest.raises(ValueError):
        reader.prefix(5)


def _reference_events(body: bytes) -> list[tuple[bytes, bytes]]:
    """The slow, obvious reading of an SSE body, line by line as the spec describes it: an
    unterminated last line is ignored, and an event whose lines all arrived counts without its
    blank line."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    lines = re.split(rb"\r\n|\r|\n", body)[:-1]
    events: list[tuple[bytes, bytes]] = []
    name, data = b"", list[bytes]()
    for line in [*lines, b""]:
        if not line:
            if data:
                events.append((name, b"\n".join(data)))
            name, data = b"", list[bytes]()
        elif line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[7:] if line[6:7] == b" " else line[6:]
    return events


def test_events_read_as_the_spec_reads_them() -> None:
    rng = random.Random(17)
    pieces = [b"event: message_delta", b"event:x", b"event:", b"data: {\"a\": 1}", b"data:{}", b"data:", b"data: ",
              b": ping", b"id: 7", b"retry: 10", b"", b"eventful", b"datum"]  # fmt: skip
    for _ in range(400):
        end = rng.choice([b"\n", b"\n", b"\r\n", b"\r"])
        body = (b"\xef\xbb\xbf" if rng.random() < 0.1 else b"") + b"".join(
            rng.choice(pieces) + end for _ in range(rng.randint(0, 12))
        )
        reader = SSEBody(body)
        for size in range(len(body) + 1):
            expected = _reference_events(body[:size])
            assert list(SSEBody(body[:size]).forward()) == expected, body[:size]
            if reader.as_given:
                assert list(reader.prefix(size).backward()) == expected[::-1], (body, size)
