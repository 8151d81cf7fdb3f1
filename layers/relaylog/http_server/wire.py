"""The bytes the server writes on its own: status lines and its few whole answers."""

from __future__ import annotations

import http

import orjson


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""  # a status with no registered phrase (Anthropic's 529) keeps the space
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _closing(status: int, content_type: bytes, body: bytes) -> bytes:
    """A whole response that closes the connection."""
    head = b"content-type: %b\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % (content_type, len(body))
    return STATUS_LINES[status] + head + body


BAD_REQUEST = _closing(400, b"text/plain; charset=utf-8", b"Invalid HTTP request received.")
INTERNAL_ERROR = _closing(500, b"text/plain; charset=utf-8", b"Internal Server Error")


def json_error(status: int, error_type: str, message: str) -> bytes:
    """A whole response with relaylog's JSON error, closing the connection."""
    return _closing(status, b"application/json", orjson.dumps({"error": {"type": error_type, "message": message}}))
