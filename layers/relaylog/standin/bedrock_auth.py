"""The stand-in's Bedrock authentication: a SigV4 signature recomputed with botocore's signer for the
stand-in's own fake identities, or a Bedrock API key (`Authorization: Bearer`).

SigV4 (docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html): the
`Authorization` header names the access key, the scope (date/region/service/aws4_request), the
signed headers and the signature; the canonical request is rebuilt from the signed headers as
received, the path, the query and the SHA-256 of the body, and signed again with the identity's
secret. A request signed by anything else than one of IDENTITIES, or with other bytes than it
carries, is refused the way AWS refuses it (403, `x-amzn-ErrorType`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from .wire import Request


@dataclass(frozen=True, slots=True)
class Identity:
    access_key: str
    secret_key: str
    token: str | None = None


# The only AWS identities the stand-in knows: long-term keys, and temporary ones with a session
# token (what a Lambda function's role hands out). Tests export them as AWS_ACCESS_KEY_ID etc.
LONG_TERM = Identity("AKIASTANDINRELAYLOG0", "standin/long-term/secret/key/relaylog00000")
TEMPORARY = Identity("ASIASTANDINRELAYLOG1", "standin/temporary/secret/key/relaylog1111", "standin-session-token-1111")
IDENTITIES = {identity.access_key: identity for identity in (LONG_TERM, TEMPORARY)}
# A Bedrock API key the stand-in refuses; any other bearer token passes (it never checks keys).
BAD_API_KEY = "bad-key"

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r" ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?Signature=(?P<signature>[0-9a-f]{64})"
)
# SigV4 signatures are accepted within 15 minutes of the time they were made.
_SKEW_S = 15 * 60


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int
    error_type: str
    message: str


@dataclass(frozen=True, slots=True)
class Signed:
    """What a valid signature said (tests read it back from the recorded request)."""

    access_key: str
    region: str
    signed_headers: tuple[str, ...]


def check(req: Request) -> Refusal | Signed | None:
    """A refusal, what a valid SigV4 signature said, or None for a Bedrock API key."""
    auth = req.header("authorization")
    if auth is None:
        return Refusal(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    if auth.startswith("Bearer "):
        if auth[7:].strip() == BAD_API_KEY:
            return Refusal(
                403, "AccessDeniedException", "Authentication failed: Please make sure your API Key is valid."
            )
        return None
    m = _AUTHORIZATION.fullmatch(auth)
    if m is None:
        return Refusal(
            400,
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        )
    identity = IDENTITIES.get(m["key"])
    if identity is None or req.header("x-amz-security-token") != identity.token:
        return Refusal(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    if m["service"] != "bedrock":
        return Refusal(403, "InvalidSignatureException", "Credential should be scoped to correct service: 'bedrock'. ")
    signed = tuple(m["signed"].split(";"))
    amz_date = req.header("x-amz-date") or ""
    if "host" not in signed or "x-amz-date" not in signed or not amz_date.startswith(m["date"]):
        return Refusal(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        )
    try:
        made = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        made = 0.0
    if abs(time.time() - made) > _SKEW_S:
        return Refusal(
            403, "InvalidSignatureException", f"Signature expired: {amz_date} is now earlier than the allowed window."
        )
    if _signature(req, identity, m["region"], signed, amz_date) != m["signature"]:
        return Refusal(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        )
    return Signed(identity.access_key, m["region"], signed)


def _signature(req: Request, identity: Identity, region: str, signed: tuple[str, ...], amz_date: str) -> str:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    headers = {name: ",".join(v for k, v in req.headers if k.lower() == name) for name in signed}
    request = AWSRequest(
        method=req.method, url=f"http://{headers.get('host', '')}{req.path}", headers=headers, data=req.body
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(identity.access_key, identity.secret_key, identity.token), "bedrock", region)
    return signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
