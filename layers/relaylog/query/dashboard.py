"""The dashboard's static files (plain HTML, CSS and JavaScript: no build step, no CDN).

Read once from the package and served from memory; they hold no data, which comes from the API.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from relaylog.asgi import Send

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}
# The page may load only its own files and call only its own API.
_CSP = (
    b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@cache
def files() -> dict[str, tuple[bytes, bytes, bytes]]:
    """name -> (content type, body, etag)"""
    found = {}
    for entry in resources.files("relaylog").joinpath("dashboard").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _TYPES:
            body = entry.read_bytes()
            etag = b'"' + hashlib.sha256(body).hexdigest()[:16].encode() + b'"'
            found[entry.name] = (_TYPES[suffix], body, etag)
    return found


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def serve(path: str, method: str, send: Send) -> None:
    if path == "/dashboard":
        await _send(send, 308, [(b"location", b"/dashboard/"), (b"content-length", b"0")], b"")
        return
    name = path[len("/dashboard/") :] or "index.html"
    found = files().get(name)
    if method not in ("GET", "HEAD") or found is None:
        status = 405 if found is not None else 404
        body = b'{"error":{"type":"not_found","message":"no such dashboard file"}}' if status == 404 else b""
        await _send(
            send, status, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())], body
        )
        return
    kind, body, etag = found
    headers = [
        (b"content-type", kind),
        (b"content-length", str(len(body)).encode()),
        (b"etag", etag),
        (b"cache-control", b"no-cache"),
        (b"content-security-policy", _CSP),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]
    await _send(send, 200, headers, b"" if method == "HEAD" else body)
