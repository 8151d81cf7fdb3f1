"""Asking OpenAI-style chat streams for usage, and hiding the answer from the client.

With `stream_options.include_usage` the provider adds `"usage":null` to every chunk and one last
chunk with `"choices":[]` and the usage. relaylog asks for it when the client did not, then removes
exactly those additions, so the client receives the bytes it would have received directly.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..providers.sse import SSESplitter

_USAGE_KEY = b'"usage"'
_USAGE_NULL = b'"usage":null'


def inject(body: bytes, parsed: dict[str, Any]) -> bytes | None:
    """The request body with stream usage asked for, or None when nothing needs to change."""
    options = parsed.get("stream_options")
    if options is None and "stream_options" not in parsed:
        # Append the field before the closing brace so the rest of the body stays byte-identical.
        end = body.rstrip()
        if not end.endswith(b"}"):
            return None
        head = end[:-1].rstrip()
        separator = b"" if head.endswith(b"{") else b","
        return head + separator + b'"stream_options":{"include_usage":true}}'
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    if options is not None and not isinstance(options, dict):
        return None  # malformed: let the provider answer it as the client sent it
    merged = dict(parsed)
    merged["stream_options"] = {**(options or {}), "include_usage": True}
    try:
        return orjson.dumps(merged)
    except orjson.JSONEncodeError:
        return None  # nested deeper than orjson writes: relay it as sent rather than fail the call


class UsageStripper:
    """Feeds on the provider's SSE bytes; returns what the client would have received directly.
    What it removes is appended to `withheld` (the exchange's own list, so usage withheld before a
    cut is still read)."""

    __slots__ = ("_null_on_top", "_splitter", "withheld")

    def __init__(self, withheld: list[bytes] | None = None) -> None:
        self._splitter = SSESplitter()
        self.withheld: list[bytes] = withheld if withheld is not None else []
        # This stream has shown, in a chunk read whole, the `"usage":null` member every chunk carries
        # at its top level once usage is asked for ("All other chunks will also include a usage
        # field, but with a null value", OpenAI's stream_options reference).
        self._null_on_top = False

    def feed(self, chunk: bytes) -> bytes:
        events = self._splitter.feed(chunk)
        if len(events) == 1:  # a read usually holds one event
            return self._event(events[0])
        return b"".join([self._event(event) for event in events])

    def finish(self) -> bytes:
        rest, self._splitter = self._splitter.rest, SSESplitter()
        return self._event(rest) if rest else b""

    def _event(self, event: bytes) -> bytes:
        if self._null_on_top:
            # Once the stream has shown its usage member, a chunk whose only "usage" is a compact
            # `"usage":null` has it at the top level (inside a JSON string the quotes would be
            # escaped): cut without reading the chunk, which cost more than all the rest of
            # relaying an event (about 42k instructions of 46k, callgrind).
            cut = _cut_compact_null(event) if event.startswith(b"data:") else None
            if cut is not None:
                return cut
        # find, not `in`: bytes' `in` first tries its operand as an integer, and builds and drops a
        # TypeError for a bytes one (about 2k instructions, callgrind).
        if event.find(_USAGE_KEY) < 0 or not event.startswith(b"data:"):
            return event
        start = 6 if event.startswith(b"data: ") else 5
        end = len(event.rstrip(b"\r\n"))
        payload = event[start:end]
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(chunk, dict) or "usage" not in chunk:
            return event
        if chunk["usage"] is not None and chunk.get("choices") == []:
            self.withheld.append(event)
            return b""
        if chunk["usage"] is not None:
            self.withheld.append(event)
        else:
            self._null_on_top = True
        return event[:start] + _without_usage(payload) + event[end:]


def _cut_compact_null(data: bytes) -> bytes | None:
    """`data` without its compact `"usage":null` member and one neighbouring comma, when that is
    its only "usage"; None when it has none, another "usage", or the member sits any other way
    (neither between two members nor last after one)."""
    at = data.find(_USAGE_NULL)
    if at == -1 or data.count(_USAGE_KEY) != 1:
        return None
    end = at + len(_USAGE_NULL)
    following = data[end : end + 1]
    if following == b",":
        return data[:at] + data[end + 1 :]
    if following == b"}" and data[at - 1 : at] == b",":
        return data[: at - 1] + data[end:]
    return None


def _without_usage(payload: bytes) -> bytes:
    """`payload` (a JSON object with a top-level "usage") without that member. Every chunk but the
    last carries it as compact `"usage":null` between two members or last: cut those bytes directly
    (what remove_top_level_key would cut, at a third of its cost); anything else goes the long way."""
    cut = _cut_compact_null(payload)
    return cut if cut is not None else remove_top_level_key(payload, _USAGE_KEY)


def remove_top_level_key(data: bytes, key: bytes) -> bytes:
    """Remove `key` and its value from the text of a JSON object that has `key` at its top level,
    leaving every other byte alone."""
    if data.count(key) == 1:
        # The top-level member is in the text, so the only occurrence is that member.
        return _cut_member(data, data.index(key))
    position = 0
    while (at := data.find(key, position)) != -1:
        if data[at + len(key) :].lstrip().startswith(b":") and _depth_at(data, at) == 1:
            return _cut_member(data, at)
        position = at + 1
    return data


def _depth_at(data: bytes, index: int) -> int:
    """Object/array nesting depth at `index`, or -1 when `index` is inside a string."""
    depth = 0
    in_string = False
    escaped = False
    for i in range(index):
        byte = data[i]
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):
            depth += 1
        elif byte in (0x7D, 0x5D):
            depth -= 1
    return -1 if in_string else depth


def _cut_member(data: bytes, key_at: int) -> bytes:
    """Cut `"key": value` starting at key_at together with one neighbouring comma."""
    colon = data.index(b":", key_at + 1)
    value_end = _value_end(data, colon + 1)
    before = data[:key_at].rstrip()
    after = data[value_end:].lstrip()
    if after.startswith(b","):
        return data[:key_at] + after[1:].lstrip()
    if before.endswith(b","):
        return before[:-1] + data[value_end:]
    return data[:key_at] + data[value_end:]


def _value_end(data: bytes, start: int) -> int:
    depth = 0
    in_string = False
    escaped = False
    for i in range(start, len(data)):
        byte = data[i]
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
                if depth == 0:
                    return i + 1
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):
            depth += 1
        elif byte in (0x7D, 0x5D):
            if depth == 0:
                return i
            depth -= 1
            if depth == 0:
                return i + 1
        elif byte == 0x2C and depth == 0:
            return i
    return len(data)
