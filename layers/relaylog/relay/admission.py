"""Admission: what a call must pass before relaylog calls a provider. A relaylog key (failing
closed while the keys cannot be read), for a Bedrock call relaylog signs a valid relaylog key and
AWS credentials, a request body within its size and time limits, and the rate limits: the key's
own, then the Helicone-RateLimit-Policy header's. Whatever fails raises `Refusal`, which the app
answers with relaylog's own JSON error.
"""

from __future__ import annotations

import asyncio
import logging

from ..asgi import ClientGone, Receive, Scope
from ..config import Settings
from ..gateway.policy import PolicyError, rate_policy
from ..gateway.ratelimit import RateLimiter, RatePolicy, segment_value
from ..headers import bearer
from ..keys import KeysUnavailable, KeyVerifier
from ..observe import Exchange, Header
from ..providers.bedrock_auth import AwsIdentity, Signer, auth_mode, unsigned
from ..record import ErrorType, Record
from .deadlines import Deadlines

log = logging.getLogger("relaylog.relay")

_CLOSE: tuple[Header, ...] = ((b"connection", b"close"),)


class Refusal(Exception):
    """relaylog refuses the call (`status`, `error_type`, a message for the client, headers to add)."""

    def __init__(self, status: int, error_type: ErrorType, message: str, headers: tuple[Header, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.error_type: ErrorType = error_type
        self.message = message
        self.headers = headers


def authenticate(keys: KeyVerifier, exchange: Exchange) -> None:
    """Once any key exists, a call needs a valid one; a store never read refuses every call."""
    try:
        required = keys.active_count() > 0
    except KeysUnavailable:
        raise Refusal(503, "keys_unavailable", "relaylog cannot read its keys yet; try again shortly") from None
    if not required:
        return
    key_id = keys.verify(bearer(exchange.meta.auth) or "")
    if key_id is None:
        raise Refusal(401, "unauthorized", "Missing or invalid Helicone-Auth: Bearer <relaylog key>")
    exchange.authenticated(key_id)


async def bedrock_signer(
    keys: KeyVerifier, exchange: Exchange, headers: list[tuple[str, str]], identity: AwsIdentity, region: str
) -> Signer | None:
    """How a Bedrock call authenticates. The client's own Bedrock API key (`Authorization: Bearer`)
    passes through like any provider's key: None. Otherwise relaylog signs with its own AWS
    identity, which may call Bedrock, so the call needs a valid relaylog key even where no keys
    exist (a relaylog without keys is open for calls that carry their own credentials, never for
    calls paid with its identity); the client's own signature headers are dropped from `headers`."""
    if auth_mode(headers) == "api_key":
        return None
    if exchange.key_id is None:
        key_id = keys.verify(bearer(exchange.meta.auth) or "")
        if key_id is None:
            raise Refusal(
                401,
                "unauthorized",
                "relaylog signs Bedrock calls with its own AWS identity only for a valid relaylog key "
                "(Helicone-Auth: Bearer <relaylog key>; `relaylog keys create`), even with no keys set up; "
                "or send your own Bedrock API key as Authorization: Bearer <key>",
            )
        exchange.authenticated(key_id)
    headers[:] = unsigned(headers)
    credentials = await identity.frozen()
    if credentials is None:
        raise Refusal(
            503,
            "aws_credentials_unavailable",
            "relaylog has no AWS credentials to sign Bedrock calls with (the standard AWS credential chain "
            "found none); send your own Bedrock API key as Authorization: Bearer <key>",
        )
    return Signer(credentials, region)


async def read_body(
    exchange: Exchange, scope: Scope, receive: Receive, settings: Settings, deadlines: Deadlines
) -> bytes:
    """The whole request body, noted on the exchange. uvicorn has no body timeout of its own, so a
    client trickling a body (slowloris) would hold the call open for ever: it must all arrive
    within `body_timeout_s` of the request. A body refused before it was read to its end leaves
    bytes on the connection, which is closed behind the answer."""
    limit = settings.max_request_bytes
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refusal(413, "body_too_large", f"Request body is larger than {limit} bytes", _CLOSE)
    task = deadlines.enter(exchange.started + settings.body_timeout_s)
    try:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        first: bytes = message.get("body", b"")
        body = await _receive_rest(receive, first, limit) if message.get("more_body", False) else first
    except asyncio.CancelledError:
        if deadlines.expired(task):
            waited = f"The request body did not arrive within {settings.body_timeout_s:g} s"
            raise Refusal(408, "request_timeout", waited, _CLOSE) from None
        raise
    finally:
        deadlines.leave(task)
    if body is None or len(body) > limit:
        raise Refusal(413, "body_too_large", f"Request body is larger than {limit} bytes", _CLOSE)
    exchange.request_read(body, _header(scope, b"content-type"))
    return body


async def _receive_rest(receive: Receive, first: bytes, limit: int) -> bytes | None:
    """The body sent in several messages (the first one's body given); None once over `limit`."""
    parts = [first]
    size = len(first)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def key_policy(keys: KeyVerifier, key_id: str | None) -> RatePolicy | None:
    """The relaylog key's own rate limit (`relaylog keys create --limit`), if it has one."""
    text = keys.limit(key_id) if key_id is not None else None
    if text is None:
        return None
    try:
        return rate_policy(text)
    except ValueError as error:  # checked at `keys create`; a hand-edited file can still be wrong
        raise PolicyError(f"the relaylog key's own limit is invalid: {error}") from None


async def admit(
    limiter: RateLimiter, exchange: Exchange, tenant: str, header_policy: RatePolicy | None, own: RatePolicy | None
) -> None:
    """Count the call against the key's limit, then the header's; a Refusal (429) when over. The
    response shows the state of the limit closest to running out."""
    checks: list[tuple[RatePolicy, str]] = []
    if own is not None:
        checks.append((own, f"key-limit:{exchange.key_id}"))
    if header_policy is not None:
        checks.append((header_policy, tenant))
    shown = None
    for policy, scope in checks:
        decision = await limiter.check(policy, scope, segment_value(policy, exchange.user, exchange.meta.properties))
        if not decision.allowed:
            unit = "requests" if policy.unit == "request" else "cents"
            raise Refusal(
                429,
                "rate_limited",
                f"Rate limit reached: {policy.quota:g} {unit} per {policy.window_s} s "
                f"(policy {policy.text}); retry in {decision.reset_s} s",
                (*decision.headers(), (b"retry-after", str(decision.reset_s).encode())),
            )
        if decision.counter is not None:  # a cents policy, charged after the call
            exchange.charge_later(decision)
        if shown is None or decision.remaining / decision.policy.quota < shown.remaining / shown.policy.quota:
            shown = decision
    if shown is not None:
        exchange.add_headers(*shown.headers())


def charge(limiter: RateLimiter, exchange: Exchange, record: Record) -> None:
    """Deduct the call's real cost from the cents policies it passed."""
    for decision in exchange.rate_decisions:
        try:
            limiter.deduct(decision, record["cost_usd"])
        except Exception:  # the call is over; a counter store failure must not surface here
            log.exception("request %s: could not charge its cost to a rate limit", exchange.request_id)


def _header(scope: Scope, name: bytes) -> str | None:
    key: bytes
    value: bytes
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
