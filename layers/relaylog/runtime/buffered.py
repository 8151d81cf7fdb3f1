"""A plain managed-runtime handler: the same relay, its response buffered into one return value.

The proxy function runs `loop` through its exec wrapper and streams; this handler is what the
managed runtime calls when the wrapper is not set (and what `sam local invoke` runs). Streams still
work, only the client receives them all at once at the end.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from .events import EventError, to_asgi
from .factory import create_app
from .invoke import Closed, error_body, invoke

_TEXT_TYPES = ("text/", "application/json", "application/x-ndjson", "application/xml")
_JSON_HEADERS = {"content-type": "application/json"}
# A response that failed after it started can still be an error here: nothing reached the client.
_FAILED_STATUS = {"Relay.internal_error": 500, "Relay.function_timeout": 504}


class BufferedResponse:
    """A ResponseStream that keeps everything for a Function URL result."""

    def __init__(self) -> None:
        self._closed = Closed()
        self.status = 500
        self.headers: dict[str, str] = {}
        self.cookies: list[str] = []
        self.chunks: list[bytes] = []
        self.failed: tuple[str, str] | None = None

    @property
    def closed(self) -> Closed:
        return self._closed

    async def start(self, status: int, headers: dict[str, str], cookies: list[str]) -> None:
        self.status, self.headers, self.cookies = status, headers, cookies

    async def write(self, chunk: bytes) -> None:
        self.write_now(chunk)

    def write_now(self, chunk: bytes) -> bool:
        self.chunks.append(chunk)
        return True

    async def finish(self, last: bytes = b"") -> None:
        if last:
            self.chunks.append(last)

    async def fail(self, error_type: str, message: str) -> None:
        self.failed = (error_type, message)

    def result(self) -> dict[str, Any]:
        if self.failed is not None:
            error_type, message = self.failed
            self.status, self.headers, self.cookies = _FAILED_STATUS.get(error_type, 502), dict(_JSON_HEADERS), []
            self.chunks = [error_body(error_type.removeprefix("Relay."), message)]
        body = b"".join(self.chunks)
        content_type = self.headers.get("content-type", "")
        text = content_type.startswith(_TEXT_TYPES) and "content-encoding" not in self.headers
        if text:
            try:
                return self._shape(body.decode("utf-8"), False)
            except UnicodeDecodeError:
                pass
        return self._shape(base64.b64encode(body).decode("ascii"), True)

    def _shape(self, body: str, encoded: bool) -> dict[str, Any]:
        return {
            "statusCode": self.status,
            "headers": self.headers,
            "cookies": self.cookies,
            "body": body,
            "isBase64Encoded": encoded,
        }


class _Host:
    """The app and its event loop, created on the first call and kept for the environment's life
    (the pooled upstream connections belong to the loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = create_app()
        self.loop.run_until_complete(self.app.startup())


_host: _Host | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _host
    if _host is None:
        _host = _Host()
    try:
        scope, body = to_asgi(event)
    except EventError as exc:
        failed = BufferedResponse()
        failed.status, failed.headers = 400, dict(_JSON_HEADERS)
        failed.chunks = [error_body("invalid_request", str(exc))]
        return failed.result()
    response = BufferedResponse()
    _host.loop.run_until_complete(invoke(_host.app, scope, body, response))
    remaining_ms = context.get_remaining_time_in_millis() if context is not None else 30_000
    _host.app.sink.flush(max(remaining_ms / 1000 - 0.5, 0.0))
    return response.result()
