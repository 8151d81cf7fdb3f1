"""Asking for stream usage and hiding it again, byte for byte."""

from __future__ import annotations

import orjson
import pytest
from relaylog.relay.stream_usage import UsageStripper, inject, remove_top_level_key


def _chunk(content: str | None, *, with_usage: bool, usage: dict[str, int] | None = None, empty: bool = False) -> bytes:
    choices = [] if empty else [{"index": 0, "delta": {"content": content}, "logprobs": None, "finish_reason": None}]
    text = (
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
        '"system_fingerprint":"fp_1","choices":' + orjson.dumps(choices).decode()
    )
    if with_usage:
        text += ',"usage":' + orjson.dumps(usage).decode()
    text += ',"obfuscation":"x\\"usage\\":1"}'
    return b"data: " + text.encode() + b"\n\n"


def _stream(with_usage: bool) -> bytes:
    parts = [_chunk(word, with_usage=with_usage) for word in ("Hel", "lo ", '"usage":null')]
    if with_usage:
        usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
        parts.append(_chunk(None, with_usage=True, usage=usage, empty=True))
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_stripper_gives_back_the_stream_without_usage(size: int) -> None:
    upstream = _stream(with_usage=True)
    stripper = UsageStripper()
    out = b"".join(stripper.feed(upstream[i : i + size]) for i in range(0, len(upstream), size))
    out += stripper.finish()
    assert out == _stream(with_usage=False)
    assert len(stripper.withheld) == 1
    assert b'"prompt_tokens":9' in stripper.withheld[0]


def test_stripper_passes_other_events_untouched() -> None:
    text = b': keep-alive\n\nevent: ping\ndata: {}\n\ndata: not json "usage"\r\n\r\n'
    stripper = UsageStripper()
    assert stripper.feed(text) + stripper.finish() == text
    assert stripper.withheld == []


def test_usage_inside_a_content_chunk_is_read_and_removed() -> None:
    event = b'data: {"id":"x","choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1},"x_groq":{"usage":{"a":1}}}\n\n'
    stripper = UsageStripper()
    assert stripper.feed(event) == b'data: {"id":"x","choices":[{"index":0,"delta":{}}],"x_groq":{"usage":{"a":1}}}\n\n'
    assert stripper.withheld == [event]


def test_after_the_first_top_level_null_the_shortcut_still_cuts_only_that_member() -> None:
    """Once a chunk read whole has shown the top-level `"usage":null`, later chunks are cut without
    being read; a chunk with a second "usage" anywhere, or the member not in its compact form, is
    still read, so only the top-level member goes."""
    first = b'data: {"id":"a","choices":[],"usage":null,"o":"x"}\n\n'
    later = [
        (b'data: {"id":"b","usage":null}\n\n', b'data: {"id":"b"}\n\n'),
        (b'data: {"usage":null,"id":"c"}\n\n', b'data: {"id":"c"}\n\n'),
        (b'data: {"d":{"usage":null},"usage":null}\n\n', b'data: {"d":{"usage":null}}\n\n'),
        (b'data: {"usage":null,"d":{"usage":null}}\n\n', b'data: {"d":{"usage":null}}\n\n'),
        (b'data: {"d":{"a":1,"usage":null},"usage":null}\n\n', b'data: {"d":{"a":1,"usage":null}}\n\n'),
        (b'data: {"d":{"usage":null,"a":1},"usage":null}\n\n', b'data: {"d":{"usage":null,"a":1}}\n\n'),
        (b'data: {"id":"e", "usage": null}\n\n', b'data: {"id":"e"}\n\n'),
        (b'data: {"s":"\\"usage\\":null","usage":null}\n\n', b'data: {"s":"\\"usage\\":null"}\n\n'),
    ]
    stripper = UsageStripper()
    assert stripper.feed(first) == b'data: {"id":"a","choices":[],"o":"x"}\n\n'
    assert [stripper.feed(event) for event, _ in later] == [expected for _, expected in later]
    for event, expected in later:  # the same without the shortcut
        assert UsageStripper().feed(event) == expected


def test_a_nested_usage_null_is_not_cut_in_a_stream_that_showed_no_top_level_one() -> None:
    event = b'data: {"id":"a","x":{"b":1,"usage":null}}\n\n'
    stripper = UsageStripper()
    assert [stripper.feed(event), stripper.feed(event)] == [event, event]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'{"a":1,"usage":null,"b":2}', b'{"a":1,"b":2}'),
        (b'{"a":1,"usage":null}', b'{"a":1}'),
        (b'{"usage":null,"a":1}', b'{"a":1}'),
        (b'{"usage":{"x":[1,{"y":"}"}]}}', b"{}"),
        (b'{"n":{"usage":1},"usage":"s,t"}', b'{"n":{"usage":1}}'),
        (b'{"s":"\\"usage\\":null","usage":null}', b'{"s":"\\"usage\\":null"}'),
        (b'{"a":1, "usage":null}', b'{"a":1}'),
        (b'{"a":1,"usage":null }', b'{"a":1}'),
        (b'{"a":1,"usage": null,"b":2}', b'{"a":1,"b":2}'),
        (b'{"a":{"usage":null},"usage":null}', b'{"a":{"usage":null}}'),
        (b'{"a":{"b":1,"usage":null},"usage":null,"c":3}', b'{"a":{"b":1,"usage":null},"c":3}'),
    ],
)
def test_remove_top_level_key(text: bytes, expected: bytes) -> None:
    assert remove_top_level_key(text, b'"usage"') == expected
    assert orjson.loads(expected) == {k: v for k, v in orjson.loads(text).items() if k != "usage"}
    if orjson.loads(text)["usage"] is None:
        # The stripper's shortcut for the common `"usage":null` cuts exactly the same bytes.
        assert UsageStripper().feed(b"data: " + text + b"\n\n") == b"data: " + expected + b"\n\n"


def test_inject_appends_without_touching_the_rest() -> None:
    body = b'{"model":"gpt-4o-mini", "stream": true, "messages":[]}\n'
    injected = inject(body, orjson.loads(body))
    assert injected == b'{"model":"gpt-4o-mini", "stream": true, "messages":[],"stream_options":{"include_usage":true}}'
    assert orjson.loads(injected)["stream_options"] == {"include_usage": True}


def test_inject_respects_what_the_client_asked() -> None:
    asked = {"stream": True, "stream_options": {"include_usage": True}}
    assert inject(orjson.dumps(asked), asked) is None
    declined = {"stream": True, "stream_options": {"include_usage": False, "x": 1}}
    assert orjson.loads(inject(orjson.dumps(declined), declined) or b"")["stream_options"] == {
        "include_usage": True,
        "x": 1,
    }
    malformed = {"stream": True, "stream_options": "yes"}
    assert inject(orjson.dumps(malformed), malformed) is None


def test_inject_gives_up_on_bodies_too_deep_to_rewrite() -> None:
    deep: object = 1
    for _ in range(300):
        deep = [deep]
    parsed = {"stream": True, "stream_options": {"include_usage": False}, "x": deep}
    assert inject(b"{}", parsed) is None
