"""Reading the Helicone header set and deciding which headers cross the relay."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

# RFC 9110 hop-by-hop headers, plus those the HTTP client recomputes for the upstream connection.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_FORWARDED_UP = _HOP_BY_HOP | {b"host", b"content-length"}
_HOP_BY_HOP_AND_LENGTH = _HOP_BY_HOP | {b"content-length"}
# Encodings relaylog can decode to read usage from a compressed response.
DECODABLE_ENCODINGS = (b"gzip", b"deflate")

_PROPERTY_PREFIX = "helicone-property-"


@dataclass(slots=True)
class HeliconeMeta:
    """The helicone-* headers of one request, parsed once."""

    auth: str | None = None
    request_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    session_path: str | None = None
    session_name: str | None = None
    prompt_id: str | None = None
    model_override: str | None = None
    target_url: str | None = None
    omit_request: bool = False
    omit_response: bool = False
    properties: dict[str, str] = field(default_factory=dict)
    # Gateway headers (cache, rate limit, retries, fallbacks), read by relaylog.gateway.options:
    # lower-cased name without the "helicone-" prefix -> raw value.
    gateway: dict[str, str] = field(default_factory=dict)
    # W3C trace context as received (not helicone-*: forwarded upstream unchanged as well). Read
    # for the record's link to the caller's trace; validated off the hot path (relaylog.otel.context).
    traceparent: str | None = None
    tracestate: str | None = None


# Helicone header -> HeliconeMeta attribute.
_TEXT_HEADERS = {
    "helicone-auth": "auth",
    "helicone-request-id": "request_id",
    "helicone-user-id": "user_id",
    "helicone-session-id": "session_id",
    "helicone-session-path": "session_path",
    "helicone-session-name": "session_name",
    "helicone-prompt-id": "prompt_id",
    "helicone-model-override": "model_override",
    "helicone-target-url": "target_url",
}
_FLAG_HEADERS = {
    "helicone-omit-request": "omit_request",
    "helicone-omit-response": "omit_response",
}
_GATEWAY_PREFIXES = ("helicone-cache-", "helicone-retry-", "helicone-ratelimit-", "helicone-fallbacks")
_TRACE_NAMES = frozenset({"traceparent", "tracestate"})
# What `split_headers` does with a request header, for the few it does not simply forward (or
# read, helicone-*): forwarded and read (trace context), held back, or not forwarded at all.
_KINDS: dict[bytes, Literal["trace", "accept-encoding", "connection", "dropped"]] = {
    b"traceparent": "trace",
    b"tracestate": "trace",
    b"accept-encoding": "accept-encoding",
    **dict.fromkeys(_NOT_FORWARDED_UP, "dropped"),
    b"connection": "connection",
}


def truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def split_headers(raw: list[tuple[bytes, bytes]]) -> tuple[HeliconeMeta, list[tuple[str, str]], bytes | None]:
    """Split request headers into Helicone metadata and the headers forwarded upstream.

    Returns (meta, upstream headers, the client's Accept-Encoding). Accept-Encoding is held back
    so the relay can narrow it to encodings it can decode. Names arrive in lower case (ASGI).
    """
    meta = HeliconeMeta()
    upstream: list[tuple[str, str]] = []
    accept_encoding: bytes | None = None
    connection: list[bytes] | None = None
    traced = False
    # One pass, one dict lookup for most headers: the headers a Connection header names (rare)
    # are taken out after it.
    for name, value in raw:
        kind = _KINDS.get(name)
        if kind is None:
            if name.startswith(b"helicone-"):
                _read_helicone(meta, name.decode("latin-1"), header_text(value))
            else:
                upstream.append((name.decode("latin-1"), header_text(value)))
        elif kind == "dropped":
            continue
        elif kind == "connection":
            connection = [*(connection or ()), value]
        elif kind == "accept-encoding":
            accept_encoding = value
        else:  # "trace"
            upstream.append((name.decode("latin-1"), header_text(value)))
            traced = True
    if connection is not None:
        named = _connection_tokens(connection)
        upstream = [(key, text) for key, text in upstream if key.encode("latin-1") not in named]
    if traced:
        for key, text in upstream:
            if key in _TRACE_NAMES:
                _read_trace(meta, key, text)
    return meta, upstream, accept_encoding


def header_text(value: bytes) -> str:
    """A header value as text: UTF-8 when it is (relay/http1 writes header text as UTF-8, so those
    bytes reach the provider unchanged), else one character per byte. It does not write other
    bytes as they are: such a value reaches the provider as the UTF-8 of those characters."""
    try:
        return value.decode()  # UTF-8; ASCII (nearly every value) reads the same as latin-1
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _read_helicone(meta: HeliconeMeta, name: str, value: str) -> None:
    if name.startswith(_PROPERTY_PREFIX):
        key = name[len(_PROPERTY_PREFIX) :]
        if key:
            meta.properties[key] = value
        return
    if (attribute := _TEXT_HEADERS.get(name)) is not None:
        setattr(meta, attribute, value)
    elif (attribute := _FLAG_HEADERS.get(name)) is not None:
        setattr(meta, attribute, truthy(value))
    elif name.startswith(_GATEWAY_PREFIXES):
        meta.gateway[name[len("helicone-") :]] = value


def _read_trace(meta: HeliconeMeta, name: str, value: str) -> None:
    if name == "traceparent":
        # Two traceparent headers cannot both be the caller: "" keeps neither (it never validates).
        meta.traceparent = value if meta.traceparent is None else ""
    else:
        # tracestate may be split over several header lines, joined as one list (RFC 9110 5.3).
        meta.tracestate = value if meta.tracestate is None else f"{meta.tracestate},{value}"


def request_id(candidate: str | None) -> str:
    """The caller's Helicone-Request-Id when it is a UUID, else a fresh random (version 4) one."""
    if candidate:
        try:
            return str(uuid.UUID(candidate.strip()))
        except ValueError:
            pass
    # uuid.uuid4() without the UUID object: a third of the cost, on every call.
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@functools.lru_cache(maxsize=256)
def narrow_accept_encoding(value: bytes | None) -> str | None:
    """Keep only the encodings relaylog can decode, so usage can be read from any response."""
    if value is None:
        return None
    kept = [part.strip() for part in value.split(b",") if part.split(b";", 1)[0].strip().lower() in DECODABLE_ENCODINGS]
    return b", ".join(kept).decode("latin-1") if kept else "identity"


def response_headers(
    raw: Sequence[tuple[bytes, bytes]], *, keep_length: bool, connection: Sequence[bytes] = ()
) -> list[tuple[bytes, bytes]]:
    """Upstream response headers (names in lower case) as relayed: hop-by-hop removed (with those
    `connection`, the values of its Connection headers, names), everything else unchanged."""
    dropped = _HOP_BY_HOP if keep_length else _HOP_BY_HOP_AND_LENGTH
    if connection:
        dropped = dropped | _connection_tokens(connection)
    return [(name, value) for name, value in raw if name not in dropped]


def _connection_tokens(values: Iterable[bytes]) -> frozenset[bytes]:
    """Headers that a Connection header names are hop-by-hop too (RFC 9110, 7.6.1)."""
    return frozenset(token.strip().lower() for value in values for token in value.split(b","))
