"""Who authenticates a Bedrock call, and SigV4 signing with relaylog's own AWS identity.

Two ways, chosen by what the client sends:

- `Authorization: Bearer <Bedrock API key>`: the client's own key, passed through untouched (the
  relaylog key rules are those of every provider).
- anything else (no Authorization, or a SigV4 signature the client's SDK made for relaylog's
  host, which AWS could never accept): relaylog signs. Its own identity may call Bedrock, so the
  call needs a valid relaylog key (`Helicone-Auth`) even when no relaylog keys exist at all: a
  relaylog without keys is open for calls that carry their own credentials, never for calls paid
  with its identity. The client's signature headers are dropped and the call is signed again for
  the host it goes to, on every attempt (a retry gets a fresh date). The admission step that
  decides this is `relay/admission.py`'s `bedrock_signer`; each attempt signs in `relay/attempts.py`.

Credentials come from botocore's standard chain (environment, shared files, SSO, container or
instance role; on Lambda the function's role through its environment). Resolving the chain can
reach the instance metadata service and refreshing temporary credentials is an HTTP call, so both
run in a thread, never on the event loop; a call in hand takes frozen credentials valid for at
least botocore's mandatory refresh window (10 minutes), enough for its retries.

Signing is SigV4 (docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html)
written out here rather than botocore's SigV4Auth, which cost 500-570 µs a signature on this machine
under load (its request object, email-style header maps, URL re-parsing): this code takes 12-20 µs
for a small body, checked against SigV4Auth's signatures in tests/test_bedrock_auth.py and by the
stand-in, which verifies with botocore. The path is canonicalised by botocore's own
`normalize_url_path` and encoded again (AWS double-encodes paths outside S3), once per path; the
signing key is derived once per secret, day and region. Only `host`, `x-amz-date` and
`x-amz-security-token` are signed, so nothing a proxy on the way may add or rewrite can break the
signature; the body's SHA-256 is (1 MB costs about 2 ms). Credentials and signatures are never
logged, stored or shown: the identity's repr names nothing, the signer's its region.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from yarl import URL

if TYPE_CHECKING:
    from .routing import Route

log = logging.getLogger("relaylog.bedrock")

AuthMode = Literal["api_key", "relaylog_signs"]
# What a client's own SigV4 signature consists of (made for relaylog's host: useless upstream).
SIGNATURE_HEADERS = frozenset({"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"})
SERVICE = "bedrock"  # Bedrock Runtime's signing name (bedrock-runtime's service model, `signingName`)
# A chain that found nothing is asked again after this long (an operator may add credentials).
_RETRY_RESOLVE_S = 30.0


def auth_mode(headers: list[tuple[str, str]]) -> AuthMode:
    for name, value in headers:
        if name == "authorization" and value[:7].lower() == "bearer ":
            return "api_key"
    return "relaylog_signs"


def unsigned(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers without the client's own SigV4 signature (made for relaylog's host)."""
    return [(name, value) for name, value in headers if name not in SIGNATURE_HEADERS]


class AwsIdentity:
    """relaylog's AWS credentials, resolved once (off the event loop) and refreshed before expiry."""

    def __init__(self) -> None:
        self._credentials: Any = None  # botocore Credentials or RefreshableCredentials
        self._looked_at = -_RETRY_RESOLVE_S
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return "<AwsIdentity>"

    async def frozen(self) -> Any:
        """Frozen credentials (botocore ReadOnlyCredentials), or None when the chain has none."""
        credentials = self._credentials
        if credentials is None:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                if self._credentials is None and time.monotonic() - self._looked_at >= _RETRY_RESOLVE_S:
                    self._credentials = await asyncio.to_thread(_resolve)
                    self._looked_at = time.monotonic()
            credentials = self._credentials
            if credentials is None:
                return None
        refresh_needed = getattr(credentials, "refresh_needed", None)
        if refresh_needed is not None and refresh_needed():
            # Temporary credentials near their expiry: botocore refreshes them (an HTTP call) here.
            return await asyncio.to_thread(credentials.get_frozen_credentials)
        return credentials.get_frozen_credentials()


def _resolve() -> Any:
    import botocore.session

    try:
        return botocore.session.get_session().get_credentials()
    except Exception as error:  # noqa: BLE001 - a broken profile: no identity, say why (no secrets in it)
        log.warning("relaylog cannot load AWS credentials for Bedrock: %s", type(error).__name__)
        return None


@dataclass(frozen=True, slots=True, repr=False)
class Signer:
    """Signs the attempts of one call with credentials taken when the call was admitted."""

    _credentials: Any
    # The region the call's path names: what an origin without one in its host (an operator's
    # RELAYLOG_UPSTREAM_BEDROCK, or a fallback to it) is signed for.
    region: str

    def __repr__(self) -> str:
        return f"<Signer {self.region}>"

    def headers(self, method: str, route: Route, url: URL, body: bytes) -> list[tuple[str, str]]:
        """SigV4 headers for one attempt, or none for a target that is not Bedrock (a fallback
        elsewhere is never signed with relaylog's identity)."""
        if route.provider.name != "bedrock":
            return []
        return sign(self._credentials, route.resource or self.region, method, url, body)


def sign(
    credentials: Any, region: str, method: str, url: URL, body: bytes, now: float | None = None
) -> list[tuple[str, str]]:
    """`authorization`, `x-amz-date` and (for temporary credentials) `x-amz-security-token` for a
    request to `url` as the relay sends it (encoded path and query kept as they are)."""
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    day = amz_date[:8]
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    if not url.is_default_port():
        host = f"{host}:{url.port}"
    token = credentials.token
    names = "host;x-amz-date;x-amz-security-token" if token else "host;x-amz-date"
    canonical = "\n".join(
        (
            method,
            _canonical_path(url.raw_path),
            _canonical_query(url.raw_query_string),
            f"host:{host}\nx-amz-date:{amz_date}\n"
            + (f"x-amz-security-token:{' '.join(token.split())}\n" if token else ""),
            names,
            hashlib.sha256(body).hexdigest(),
        )
    )
    scope = f"{day}/{region}/{SERVICE}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(
        _signing_key(credentials.secret_key, day, region), to_sign.encode(), hashlib.sha256
    ).hexdigest()
    out = [
        (
            "authorization",
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature}",
        ),
        ("x-amz-date", amz_date),
    ]
    if token:
        out.append(("x-amz-security-token", token))
    return out


@functools.lru_cache(maxsize=64)
def _canonical_path(raw_path: str) -> str:
    from botocore.utils import normalize_url_path

    return quote(normalize_url_path(raw_path), safe="/~")


def _canonical_query(raw_query: str) -> str:
    if not raw_query:
        return ""
    pairs = sorted(pair.partition("=")[::2] for pair in raw_query.split("&"))
    return "&".join(f"{key}={value}" for key, value in pairs)


@functools.lru_cache(maxsize=16)
def _signing_key(secret: str, day: str, region: str) -> bytes:
    key = hmac.digest(f"AWS4{secret}".encode(), day.encode(), "sha256")
    for part in (region, SERVICE, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key
