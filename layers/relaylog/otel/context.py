"""W3C Trace Context (`traceparent`, `tracestate`): what a record keeps of the caller's trace.

Pure Python and cheap: it runs for every record, whether spans are exported or not. A malformed
header is never trusted: an invalid `traceparent` keeps neither header, an invalid `tracestate`
is dropped on its own (https://www.w3.org/TR/trace-context/#processing-model).
"""

from __future__ import annotations

import functools
import re

# version "-" trace-id "-" parent-id "-" trace-flags, lower-case hex only (W3C 3.2.2).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16
_MAX_MEMBERS = 32


@functools.cache
def _member() -> re.Pattern[str]:
    """list-member = key "=" value (W3C 3.3.1.3); a key is a simple key or tenant@system.
    Compiled on first use: a few ms that a Lambda cold start without trace headers never pays."""
    return re.compile(
        r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
        r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
    )


def parse_traceparent(value: str | None) -> str | None:
    """The header normalised to its version-00 form, or None when absent or malformed."""
    if not value:
        return None
    text = value.strip(" \t")
    m = _TRACEPARENT.match(text)
    if m is None:
        return None
    version, trace_id, parent_id, flags = m.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    if version == "00" and len(text) != 55:
        return None
    # A later version may append fields after a "-"; what version 00 defines is kept.
    if len(text) > 55 and text[55] != "-":
        return None
    return f"00-{trace_id}-{parent_id}-{flags}"


def parse_tracestate(value: str | None) -> str | None:
    """The header with empty members removed, or None when absent, empty or malformed."""
    if not value:
        return None
    members = [part.strip(" \t") for part in value.split(",")]
    members = [m for m in members if m]
    if not members or len(members) > _MAX_MEMBERS:
        return None
    keys: set[str] = set()
    for member in members:
        if _member().fullmatch(member) is None:
            return None
        key = member.split("=", 1)[0]
        if key in keys:
            return None  # duplicate keys make the whole header invalid
        keys.add(key)
    return ",".join(members)


def trace_context(traceparent: str | None, tracestate: str | None) -> tuple[str | None, str | None]:
    """(traceparent, tracestate) as a record stores them; tracestate only beside a valid parent."""
    parent = parse_traceparent(traceparent)
    if parent is None:
        return None, None
    return parent, parse_tracestate(tracestate)
