"""The stages asked over HTTP, the same locally and on AWS: the proxy's echo route, the query API, the dashboard.

The relaylog key travels in request headers only: never in a message, a check or the report.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from relaylog import __version__
from relaylog.config import KEY_ENV
from relaylog.relay import echo

from .stages import StageFailed, Trail, poll

_USER_AGENT = f"relaylog-verify/{__version__}"
# One HTTP exchange may take at most this long (and never past the stage's deadline).
_REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def error(self) -> str:
        """relaylog's own `{"error": {"type", "message"}}`, or the start of whatever else came."""
        found = self.json()
        if isinstance(found, dict) and isinstance(found.get("error"), dict):
            return f"{found['error'].get('type')}: {found['error'].get('message')}"
        return self.body[:200].decode("utf-8", errors="replace")


class Unreachable(Exception):
    """No HTTP answer at all (refused, reset, timed out, TLS, DNS)."""


def fetch(
    method: str, url: str, deadline: float, headers: dict[str, str] | None = None, body: bytes | None = None
) -> Answer:
    request = urllib.request.Request(
        url, data=body, method=method, headers={"User-Agent": _USER_AGENT, **(headers or {})}
    )
    timeout = max(0.1, min(_REQUEST_TIMEOUT_S, deadline - time.monotonic()))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) URLs only, see command.py)
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as error:  # a 4xx/5xx is an answer too
        with error:
            return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise Unreachable(f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__) from None


def _auth(key: str | None, header: str) -> dict[str, str]:
    return {header: f"Bearer {key}"} if key else {}


def proxy(trail: Trail, proxy_url: str, key: str | None, logs: str | None, deadline: float) -> str:
    """POST the echo route; it must answer 200 with our request id and our body."""
    url = proxy_url.rstrip("/") + echo.PATH
    body = orjson.dumps({"verify": trail.request_id})
    headers = {
        "Content-Type": "application/json",
        "Helicone-Request-Id": trail.request_id,
        **_auth(key, "Helicone-Auth"),
    }
    trail.sent_at = datetime.now(UTC)
    unreachable: list[str] = []

    def attempt() -> Answer | None:
        try:
            return fetch("POST", url, deadline, headers, body)
        except Unreachable as error:  # a server still starting: try again until the deadline
            unreachable[:] = [str(error)]
            return None

    answer = poll(deadline, attempt)
    see_logs = [f"the proxy function's log group {logs}"] if logs else []
    if answer is None:
        raise StageFailed(
            f"no answer from {url}: {unreachable[-1] if unreachable else 'timed out'}",
            ["the URL (is `relaylog serve` running there? is the stack deployed?)", *see_logs],
        )
    if answer.status == 401:
        raise _unauthorized("the proxy", answer, key, "relaylog keys exist here")
    if answer.status == 404 and b"unknown_provider" in answer.body:
        raise StageFailed(
            "the proxy has no echo route: it runs a relaylog from before `relaylog verify`",
            ["redeploy (sam build && sam deploy) or restart relaylog serve with this version"],
        )
    if answer.status != 200:
        raise StageFailed(f"the echo route answered {answer.status}: {answer.error()}", see_logs)
    got = answer.json()
    if (
        answer.headers.get("helicone-id") != trail.request_id
        or not isinstance(got, dict)
        or got.get("echo") != body.decode()
    ):
        raise StageFailed(
            f"{url} answered 200, but not with relaylog's echo of this call",
            ["is the URL relaylog's? a proxy or gateway in between may answer for it"],
        )
    return "the echo route answered 200 (no provider called)"


def query_api(trail: Trail, api_url: str, key: str | None, logs: str | None, deadline: float) -> str:
    """The record through the query API by its id, then counted in the stats of its hour."""
    base = api_url.rstrip("/")
    headers = _auth(key, "Authorization")
    see_logs = [f"the query function's log group {logs}"] if logs else []

    def attempt() -> Answer | None:
        try:
            answer = fetch("GET", f"{base}/requests/{quote(trail.request_id)}", deadline, headers)
        except Unreachable as error:
            raise StageFailed(f"no answer from {base}/: {error}", see_logs) from None
        if answer.status == 404 and b"unknown_provider" in answer.body:
            raise StageFailed(
                f"{base}/ is a relaylog proxy without the query API",
                ["for a deployed stack use --stack NAME: its query API is another function"],
            )
        return None if answer.status == 404 else answer  # not written yet (locally, a second or so)

    answer = poll(deadline, attempt)
    if answer is None:
        raise StageFailed(f"the query API does not find request {trail.request_id} (404)", see_logs)
    _refused(answer, key, see_logs)
    record = (answer.json() or {}).get("data") or {}
    if record.get("request_id") != trail.request_id or record.get("provider") != echo.PROVIDER.name:
        raise StageFailed(f"the query API answered {answer.status} without the echo's record", see_logs)
    trail.record = record
    hour = datetime.fromisoformat(record["created_at"]).replace(minute=0, second=0, microsecond=0)
    query = urlencode({"provider": echo.PROVIDER.name, "since": hour.strftime("%Y-%m-%dT%H:%M:%SZ"), "bucket": "hour"})
    try:
        stats = fetch("GET", f"{base}/stats?{query}", deadline, headers)
    except Unreachable as error:
        raise StageFailed(f"no answer from {base}/stats: {error}", see_logs) from None
    _refused(stats, key, see_logs)
    total = ((stats.json() or {}).get("data") or {}).get("total") or {}
    counted = total.get("requests")
    if not isinstance(counted, int) or counted < 1:
        raise StageFailed(f"/stats counts {counted!r} {echo.PROVIDER.name} requests since {hour:%H}:00 UTC", see_logs)
    return f"/requests/{{id}} shows the record; /stats counts {counted} {echo.PROVIDER.name} request(s) this hour"


def _unauthorized(what: str, answer: Answer, key: str | None, why_a_key: str) -> StageFailed:
    if key:
        check = "the key given was refused: is it revoked, mistyped, or another stack's or data dir's?"
    else:
        check = f"{why_a_key}: pass one with --key or the {KEY_ENV} environment variable"
    return StageFailed(f"{what} refused the call (401 {answer.error()})", [check])


def _refused(answer: Answer, key: str | None, see_logs: list[str]) -> None:
    if answer.status == 401:
        raise _unauthorized("the query API", answer, key, "the query API needs a relaylog key (on AWS, always)")
    if answer.status != 200:
        raise StageFailed(f"the query API answered {answer.status}: {answer.error()}", see_logs)


def dashboard(dashboard_url: str, logs: str | None, deadline: float) -> str:
    see_logs = [f"the query function's log group {logs}"] if logs else []
    try:
        answer = fetch("GET", dashboard_url, deadline)
    except Unreachable as error:
        raise StageFailed(f"no answer from {dashboard_url}: {error}", see_logs) from None
    kind = answer.headers.get("content-type", "")
    if answer.status != 200 or not kind.startswith("text/html"):
        raise StageFailed(
            f"{dashboard_url} answered {answer.status} ({kind or 'no content type'}), not the dashboard", see_logs
        )
    return f"{dashboard_url} answers 200 ({kind.split(';')[0]})"
