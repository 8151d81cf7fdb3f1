"""What a Lambda Function URL makes of an HTTP request: the payload 2.0 event, the headers it adds,
and the size it refuses. Each rule names the AWS page it follows; where AWS says nothing, the
choice is a parameter so tests can run both ways.

- The event is API Gateway's payload format 2.0: `rawPath`, `rawQueryString`, `queryStringParameters`,
  `cookies`, `headers`, `requestContext.http`, a body base64-encoded when its content type is
  binary (https://docs.aws.amazon.com/lambda/latest/dg/urls-invocation.html). Repeated headers and
  repeated query parameters are joined with commas; cookie headers become the `cookies` array
  (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html).
  Undocumented, so `Front` options: which content types count as text (`binary`: "by_type" or
  "always"), and whether the `cookie` header stays in `headers` as well (`cookie_header`; AWS's Rust
  runtime keeps a captured Function URL event with both:
  https://docs.rs/crate/lambda_http/1.1.2/source/tests/data/lambda_function_url_request.json).
- The Function URL adds `x-amzn-trace-id`, `x-forwarded-for`, `x-forwarded-proto`, `x-forwarded-port`,
  `x-amzn-tls-version`, `x-amzn-tls-cipher-suite`, and `host` is its own domain: the sample event
  captured from a Function URL in AWS's Powertools documentation
  (https://docs.aws.amazon.com/powertools/typescript/latest/api/variables/_aws-lambda-powertools_parser.schemas.LambdaFunctionUrlSchema.html).
  Which client headers it drops is not documented: it forwards them all here.
- A synchronous invocation's request payload (the whole event: headers, context and the encoded
  body) is at most 6 MB, and Lambda's MB is 1,024 KB
  (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html); Invoke refuses a larger
  one with 413 RequestTooLargeException before any function runs
  (https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html). What a Function URL client
  receives then is not documented beyond that: the front answers 413 with a JSON message of its own,
  and tests check only the status and that nothing was invoked.
"""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import h11
import orjson

PAYLOAD_LIMIT = 6 * 1024 * 1024
DOMAIN_PREFIX = "emulatorurlid0123456789abcdefghij"
DOMAIN = f"{DOMAIN_PREFIX}.lambda-url.us-east-1.on.aws"
# Content types this front passes as text with `binary="by_type"` (AWS says only that "binary"
# bodies are encoded, not which types are binary).
_TEXT_TYPES = (
    "text/",
    "application/json",
    "application/xml",
    "application/javascript",
    "application/x-www-form-urlencoded",
)


@dataclass(frozen=True, slots=True)
class Front:
    """The undocumented choices, settable per emulator so tests can try both."""

    binary: Literal["by_type", "always"] = "by_type"
    cookie_header: bool = False  # the `cookie` header is kept in `headers` beside the `cookies` array


def trace_root() -> str:
    """An X-Ray trace id as the Function URL sends it in `x-amzn-trace-id` (Root only)."""
    return f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"


def event_for(request: h11.Request, body: bytes, root: str, front: Front, source_ip: str) -> dict[str, Any]:
    target = urlsplit(request.target.decode("latin-1"))
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name_raw, value_raw in request.headers:
        name, value = name_raw.decode("latin-1").lower(), value_raw.decode("latin-1")
        if name == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
            if not front.cookie_header:
                continue
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    headers |= {
        "host": DOMAIN,
        "x-amzn-trace-id": root,
        "x-forwarded-for": source_ip,
        "x-forwarded-proto": "https",
        "x-forwarded-port": "443",
        "x-amzn-tls-version": "TLSv1.3",
        "x-amzn-tls-cipher-suite": "TLS_AES_128_GCM_SHA256",
    }
    text = front.binary == "by_type" and headers.get("content-type", "").startswith(_TEXT_TYPES) and _utf8(body)
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": target.path,
        "rawQueryString": target.query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": DOMAIN_PREFIX,
            "domainName": DOMAIN,
            "domainPrefix": DOMAIN_PREFIX,
            "http": {
                "method": request.method.decode(),
                "path": target.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": not text,
    }
    if target.query:
        joined: dict[str, str] = {}
        for key, value in parse_qsl(target.query, keep_blank_values=True):
            joined[key] = f"{joined[key]},{value}" if key in joined else value
        event["queryStringParameters"] = joined
    if cookies:
        event["cookies"] = cookies
    if body:
        event["body"] = body.decode("utf-8") if text else base64.b64encode(body).decode()
    return event


def _utf8(body: bytes) -> bool:
    """Text that is not UTF-8 cannot be a JSON string: it goes base64-encoded, losing nothing."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def payload_size(event: dict[str, Any]) -> int:
    return len(orjson.dumps(event))


def too_large_body() -> bytes:
    return orjson.dumps(
        {"Message": f"Request must be smaller than {PAYLOAD_LIMIT} bytes for the InvokeFunction operation"}
    )
