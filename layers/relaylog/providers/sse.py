"""Server-sent events framing: cutting a byte stream into events, and reading a stored one back.

Pure byte work that knows nothing of any provider: the relay splits what it forwards with
`SSESplitter` (hot path, per chunk), the parsers and the dashboard read a whole or cut body with
`SSEBody`. Line ends follow the SSE spec: "\\n", "\\r\\n" and "\\r", mixed freely. Nothing here
raises on any bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["SSEBody", "SSESplitter", "complete_prefix", "complete_suffix", "looks_like_sse", "sse_events"]

# A blank line: two line terminators in a row, where "\r\n" is ONE terminator. The lookahead stops
# "\r\n" from being read as "\r" then "\n" (which would split an event at every line end).
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
# The same blank lines as plain byte strings, for rfind from the end.
_BLANK_LINES = (b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r\n", b"\r\n\n")
_BOM = b"\xef\xbb\xbf"
# How an event stream's first line can begin (a field or a comment).
_STARTS = (b"data:", b"event:", b":", b"id:", b"retry:", _BOM)
_CR = 13
_SPACE = 32


class SSESplitter:
    """Cuts a byte stream into raw SSE events as chunks arrive.

    Every returned event keeps its bytes exactly, terminating blank line included, so the relay can
    forward (or drop) whole events and `b"".join(all returned) + rest` is the input unchanged.
    """

    __slots__ = ("_buf", "_scan")

    def __init__(self) -> None:
        # The unfinished tail. A bytearray, so a big event arriving in many small chunks grows it
        # in place instead of being copied again on every chunk.
        self._buf = bytearray()
        # Where the next search starts: earlier bytes are known to hold no complete delimiter, so
        # a big event is not rescanned from its start on every chunk either.
        self._scan = 0

    @property
    def rest(self) -> bytes:
        """Bytes received after the last complete event (an unfinished event, or nothing)."""
        return bytes(self._buf)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[bytes]:
        buf = self._buf
        if (
            not buf
            and type(chunk) is bytes
            and chunk.endswith(b"\n\n")
            and chunk.find(b"\n\n") == len(chunk) - 2
            and _CR not in chunk  # (a byte's value: `b"\r" in` would first fail as an integer)
        ):
            # The common read: exactly one whole event with "\n" line ends (OpenAI, Anthropic),
            # handed on as it is without the general search below.
            return [chunk]
        if buf:
            buf += chunk
            data: bytes | bytearray = buf
        else:
            # Nothing pending (reads usually end on an event boundary): search the chunk itself.
            data = chunk if type(chunk) is bytes else bytes(chunk)
        n = len(data)
        events: list[bytes] = []
        start = 0
        pos = self._scan
        crs = data.count(b"\r", pos) if _CR in data else 0  # one memchr: most streams have none
        if crs == 0 or crs == data.count(b"\r\n", pos) == data.count(b"\n", pos):
            # Fast paths for one line-end style: "\n" only (OpenAI, Anthropic) or "\r\n" only
            # (Gemini), where a blank line is always the same bytes.
            delimiter = b"\r\n\r\n" if crs else b"\n\n"
            find = data.find
            while (i := find(delimiter, pos)) >= 0:
                end = i + len(delimiter)
                # The whole chunk is one event: hand it on uncopied (bytes only: the buffer changes).
                events.append(data if end == n and not start and type(data) is bytes else bytes(data[start:end]))
                start = pos = end
        else:
            search = _BLANK_LINE.search
            while (m := search(data, pos)) is not None:
                end = m.end()
                if end == n and data[-1] == _CR:
                    break  # the final "\r" may be the first half of "\r\n": wait for more bytes
                events.append(bytes(data[start:end]))
                start = pos = end
        if data is buf:
            if start:
                del buf[:start]
        elif start < n:
            self._buf = buf = bytearray(data[start:])
        # A delimiter is at most 4 bytes ("\r\n\r\n"), so one that completes in the next chunk
        # starts in the last 3 bytes of this one.
        self._scan = max(0, len(buf) - 3)
        return events


class SSEBody:
    """A complete or cut SSE body, read lazily event by event from either end.

    Usage sits in the last events of a stream (and the model in the first), so a parser walking
    from the end decodes a few events, not one per token.
    """

    __slots__ = ("_body", "_end", "_start", "as_given")

    def __init__(self, body: bytes) -> None:
        # Whether the body is read as given (no CR in it): then `prefix` can cut it without a copy.
        self.as_given = _CR not in body
        if not self.as_given:
            # Every line-end style becomes "\n" (JSON payloads never hold raw CR/LF in strings).
            body = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self._body = body
        self._start = 3 if body.startswith(_BOM) else 0
        # A last line without its terminator was cut: ignored, as the SSE spec says.
        self._end = body.rfind(b"\n") + 1

    def prefix(self, size: int) -> SSEBody:
        """What `SSEBody(body[:size])` reads, sharing this one's bytes (a body read `as_given`
        only: once line ends are rewritten, offsets no longer match the bytes given)."""
        if not self.as_given:
            raise ValueError("prefix of a body whose line ends were rewritten")
        cut = object.__new__(SSEBody)
        cut.as_given = True
        cut._body = self._body
        cut._start = self._start if size >= self._start else 0
        cut._end = self._body.rfind(b"\n", 0, size) + 1
        return cut

    def forward(self) -> Iterator[tuple[bytes, bytes]]:
        """(event name, data) of each event that has data, first to last."""
        body, end, pos = self._body, self._end, self._start
        while pos < end:
            i = body.find(b"\n\n", pos, end)
            stop = end if i < 0 else i
            if stop > pos and (event := _event(body, pos, stop)) is not None:
                yield event
            if i < 0:
                return
            pos = i + 2

    def backward(self) -> Iterator[tuple[bytes, bytes]]:
        """(event name, data) of each event that has data, last to first."""
        body, lo, end = self._body, self._start, self._end
        while end > lo:
            i = body.rfind(b"\n\n", lo, end)
            start = lo if i < 0 else i + 2
            if end > start and (event := _event(body, start, end)) is not None:
                yield event
            if i < 0:
                return
            end = i


def _event(body: bytes, start: int, end: int) -> tuple[bytes, bytes] | None:
    """(name, data) of the event in body[start:end]; multi-line data joined with "\n"; comments and
    `id:`/`retry:` fields dropped; None when it has no data."""
    newline = body.find(b"\n", start, end)
    if newline < 0:
        if body.startswith(b"data:", start):
            # Fast path: the common one-line event (OpenAI, Gemini).
            start += 5
            if start < end and body[start] == _SPACE:
                start += 1
            return b"", body[start:end]
    elif (
        body.startswith(b"event:", start)
        and body.startswith(b"data:", newline + 1, end)
        and body.find(b"\n", newline + 1, end) < 0
    ):
        # Fast path: an event line and one data line (Anthropic, Bedrock transcripts).
        start += 6
        if body[start] == _SPACE:
            start += 1
        data = newline + 6
        if data < end and body[data] == _SPACE:
            data += 1
        return body[start:newline], body[data:end]
    name = b""
    parts: list[bytes] = []
    for line in body[start:end].split(b"\n"):
        if line.startswith(b"data:"):
            parts.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[7:] if line[6:7] == b" " else line[6:]
    if not parts:
        return None
    return name, parts[0] if len(parts) == 1 else b"\n".join(parts)


def sse_events(body: bytes) -> list[tuple[bytes, bytes]]:
    """(event name, data) for each event of a complete or cut SSE body that has data."""
    return list(SSEBody(body).forward())


def complete_prefix(body: bytes) -> bytes:
    """`body` up to the end of its last complete event: an event has been delivered once its blank
    line has, and bytes after it are an unfinished one."""
    end = max((i + len(blank) for blank in _BLANK_LINES if (i := body.rfind(blank)) >= 0), default=0)
    return body[:end]


def complete_suffix(body: bytes) -> bytes:
    """`body` from the end of its first blank line: the bytes before it may end an event whose
    start was not kept."""
    start = min((i + len(blank) for blank in _BLANK_LINES if (i := body.find(blank)) >= 0), default=len(body))
    return body[start:]


def looks_like_sse(body: bytes, at: int = 0) -> bool:
    """Whether the text from `at` (past any leading whitespace) begins the way an event stream does."""
    return body.startswith(_STARTS, at)
