"""Secrets never leak: distinctive fake provider keys and relaylog keys are sent through every path
relaylog has (success, streams, provider 401s and 5xx, retries, fallbacks that carry their own
credentials, cache miss and hit, rate-limited 429s, an unreachable provider, a provider timeout,
a client that goes away, an invalid relaylog key, the query API, Bedrock calls that relaylog signs
with its own AWS identity or that carry the client's Bedrock API key), locally and through the Lambda
runtime with the Firehose sink under moto, with DEBUG logging on. Then every byte relaylog kept
or said is searched for them, raw and in their URL-encoded and base64 forms:

- local: every file of the data dirs (records, body files, cache entries, the rate-limit SQLite
  files, keys.json, anything else), every log line (relaylog, uvicorn, aiohttp, asyncio, root),
  stdout/stderr, and every response's status line, headers and body;
- AWS: every S3 object (Firehose deliveries, the spool, body objects, the aggregator's Parquet,
  read back as values), every DynamoDB item (keys, cache entries, rate-limit counters, rollups,
  the request index), the Powertools EMF metrics on stdout, every log line, and every response
  the Function URL front returned.

The one exception is deliberate and checked separately: a provider that echoes a key back in a
response header. relaylog relays the provider's answer unchanged; what it *stores* of it is the
question (`test_a_provider_echoing_the_key_is_not_stored`).
"""

from __future__ import annotations

import base64
import gzip
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import boto3
import duckdb
import httpx
import orjson
import pytest
from relaylog.aws.proxy import create_app
from relaylog.providers.registry import PROVIDERS
from relaylog.standin import Request, StandIn

from tests.support.aggregator import invoke, load_aggregator
from tests.support.aws import REGION, Stack
from tests.support.bedrock import RELAYLOG_IDENTITY, aws_identity
from tests.support.lambda_emulator import LambdaEmulator
from tests.support.lambda_runtime import InProcessRuntime
from tests.support.proxy import RunningProxy, ServedApp

# Fake provider keys shaped like the real ones, each findable on its own. '+', '/' and '=' make the
# URL-encoded forms differ from the raw ones.
OPENAI = "sk-proj-LEAKCANARY+openai/Zq7w9PkR="
ANTHROPIC = "sk-ant-api03-LEAKCANARYanthropic-Xq9vT2"
AZURE = "LEAKCANARYazure0d4c1f7b2e9a8c3d"
GEMINI_HEADER = "AIzaLEAKCANARYgeminiHeader77xYz"
GEMINI_QUERY = "AIzaLEAKCANARYgeminiQuery88aBc"
FALLBACK_ONE = "sk-LEAKCANARYfallbackOne-4e5f6a"
FALLBACK_TWO = "sk-LEAKCANARYfallbackTwo-7b8c9d"
BAD_RELAYLOG = "rl-LEAKCANARYinvalidRelaylogKey-1a2b"
PROVIDER_SECRETS = (OPENAI, ANTHROPIC, AZURE, GEMINI_HEADER, GEMINI_QUERY, FALLBACK_ONE, FALLBACK_TWO)
# Bedrock: the client's API key, the signature and session token of a client that signed its own
# call (dropped by relaylog), and relaylog's own AWS secret and session token.
BEDROCK_API_KEY = "ABSKLEAKCANARYbedrockApiKey+/=42"
CLIENT_SIGNATURE = "1eac" * 16
CLIENT_SESSION_TOKEN = "LEAKCANARYclientSessionToken/+=77"
CLIENT_SIGV4 = (
    "AWS4-HMAC-SHA256 Credential=AKIALEAKCANARYCLIENT/20260101/us-east-1/bedrock/aws4_request, "
    f"SignedHeaders=host;x-amz-date;x-amz-security-token, Signature={CLIENT_SIGNATURE}"
)
AWS_SECRETS = (
    BEDROCK_API_KEY,
    CLIENT_SIGNATURE,
    CLIENT_SESSION_TOKEN,
    RELAYLOG_IDENTITY.secret_key,
    str(RELAYLOG_IDENTITY.token),
)
# Every log line of these loggers is kept, at DEBUG.
LOGGERS = ("", "relaylog", "uvicorn", "uvicorn.error", "uvicorn.access", "aiohttp", "asyncio", "botocore", "boto3")
RETRY = {"Helicone-Retry-Enabled": "true", "Helicone-Retry-Min-Timeout": "10", "Helicone-Retry-Max-Timeout": "50"}
CHAT = "/v1/chat/completions"


def _forms(secret: str) -> set[bytes]:
    """The secret as it could appear anywhere: raw, URL-encoded, and base64 at each of the three
    alignments it could have inside a longer encoded text (the edges, which depend on the
    neighbouring bytes, left out)."""
    raw = secret.encode()
    found = {raw, quote(secret).encode(), quote(secret, safe="").encode(), quote_plus(secret).encode()}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            text = encode(b"\0" * shift + raw).rstrip(b"=")
            found.add(text[4 if shift else 0 : -4])
    return found


def _hits(secrets: tuple[str, ...], where: dict[str, bytes]) -> list[str]:
    forms = {form: secret for secret in secrets for form in _forms(secret)}
    return [f"{secret!r} in {name}" for name, data in where.items() for form, secret in forms.items() if form in data]


class _Lines(logging.Handler):
    """Every log record as the line (with traceback) a handler would print."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # The test's own HTTP client logs the URLs it calls (with ?key=): that is the caller, not relaylog.
        if not record.name.startswith(("httpx", "httpcore")):
            self.lines.append(self.format(record))


@pytest.fixture
def debug_logs() -> Iterator[_Lines]:
    handler = _Lines()
    saved = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in saved:
        logger.removeHandler(handler)
        logger.setLevel(level)


class _Said:
    """Everything relaylog answered: status, headers and body of each response."""

    def __init__(self) -> None:
        self.responses: dict[str, bytes] = {}

    def keep(self, name: str, response: httpx.Response) -> httpx.Response:
        head = f"{response.status_code}\n" + "".join(f"{k}: {v}\n" for k, v in response.headers.multi_items())
        self.responses[name] = head.encode() + b"\n" + response.content
        return response


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _chat(marker: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {marker}"}], **extra}


def _fallbacks(standin: StandIn) -> str:
    entries = [
        {"target-url": standin.url, "headers": {"authorization": f"Bearer {FALLBACK_ONE}"}, "onCodes": [503]},
        {"target-url": standin.url, "headers": {"authorization": f"Bearer {FALLBACK_TWO}"}},
    ]
    return orjson.dumps(entries).decode()


def _every_path(
    send: Callable[..., httpx.Response], stream: Callable[..., None], standin: StandIn, relaylog_key: str
) -> None:
    """The calls both deployments get; `send(name, method, path, headers, json=..., params=...)`
    returns the response (the caller keeps it), `stream(name, path, headers, body)` reads a
    streamed answer's first bytes and hangs up."""
    auth = {"Helicone-Auth": f"Bearer {relaylog_key}"}
    openai = {**auth, "Authorization": f"Bearer {OPENAI}"}
    tag = uuid.uuid4().hex

    assert send("success", "POST", CHAT, openai, json=_chat(tag)).status_code == 200
    assert send("stream", "POST", CHAT, openai, json=_chat(tag, stream=True)).status_code == 200
    anthropic = {**auth, "x-api-key": ANTHROPIC, "anthropic-version": "2023-06-01"}
    message = {"model": "claude-3-5-haiku-latest", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    assert send("anthropic", "POST", "/anthropic/v1/messages", anthropic, json=message).status_code == 200
    azure = {**auth, "api-key": AZURE}
    path = "/azure/leakcanary/openai/deployments/gpt-4o-mini/chat/completions"
    assert send("azure", "POST", path, azure, json=_chat(tag), params={"api-version": "2024-10-21"}).status_code == 200
    gemini = {"contents": [{"role": "user", "parts": [{"text": f"hi {tag}"}]}]}
    path = "/gemini/v1beta/models/gemini-2.0-flash:generateContent"
    assert (
        send("gemini-header", "POST", path, {**auth, "x-goog-api-key": GEMINI_HEADER}, json=gemini).status_code == 200
    )
    assert send("gemini-query", "POST", path, auth, json=gemini, params={"key": GEMINI_QUERY}).status_code == 200
    path = "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    params = {"key": GEMINI_QUERY, "alt": "sse"}
    assert send("gemini-stream", "POST", path, auth, json=gemini, params=params).status_code == 200

    # The provider refuses the key (the stand-in's `bad-key`), fails, is retried, falls back.
    bad = {**auth, "Authorization": "Bearer bad-key", "x-leak-canary": OPENAI}  # a key in an odd header too
    assert send("provider-401", "POST", CHAT, bad, json=_chat(tag)).status_code == 401
    failing = {**openai, "x-standin-fault": "status=500"}
    assert send("provider-500", "POST", CHAT, failing, json=_chat(tag)).status_code == 500
    retried = {**openai, **RETRY, "x-standin-fault": f"status=503;times=2;id={uuid.uuid4()}"}
    assert send("retried", "POST", CHAT, retried, json=_chat(tag)).status_code == 200
    gave_up = {**openai, **RETRY, "Helicone-Retry-Num": "1", "x-standin-fault": "status=503"}
    assert send("retries-exhausted", "POST", CHAT, gave_up, json=_chat(tag)).status_code == 503
    fallen = {**openai, "Helicone-Fallbacks": _fallbacks(standin), "x-standin-fault": f"status=503;times=1;id={tag}"}
    answered = send("fallback", "POST", CHAT, fallen, json=_chat(tag))
    assert answered.status_code == 200 and answered.headers.get("helicone-fallback-index") == "1"

    # Cache miss then hit; a rate limit of one call.
    cached = {**openai, "Helicone-Cache-Enabled": "true"}
    assert send("cache-miss", "POST", CHAT, cached, json=_chat(f"cache {tag}")).headers["helicone-cache"] == "MISS"
    assert send("cache-hit", "POST", CHAT, cached, json=_chat(f"cache {tag}")).headers["helicone-cache"] == "HIT"
    cached_stream = {**cached, "x-api-key": ANTHROPIC}
    body = _chat(f"cache stream {tag}", stream=True)
    assert send("cache-stream-miss", "POST", CHAT, cached_stream, json=body).headers["helicone-cache"] == "MISS"
    assert send("cache-stream-hit", "POST", CHAT, cached_stream, json=body).headers["helicone-cache"] == "HIT"
    limited = {**openai, "Helicone-RateLimit-Policy": "1;w=600;s=user", "Helicone-User-Id": f"u-{tag}"}
    assert send("rate-ok", "POST", CHAT, limited, json=_chat(tag)).status_code == 200
    assert send("rate-limited", "POST", CHAT, limited, json=_chat(tag)).status_code == 429

    # The client hangs up mid-stream; a relaylog key that is not one.
    slow = {**openai, "x-standin-fault": "chunk-delay-ms=100"}
    stream("client-disconnect", CHAT, slow, _chat(tag, stream=True))
    # Bedrock: relaylog signs (the client's own signature is dropped), or the client's API key passes.
    path = "/bedrock/us-east-1/model/us.amazon.nova-lite-v1%3A0/converse"
    converse = {"messages": [{"role": "user", "content": [{"text": f"hi {tag}"}]}]}
    signed = {
        "Authorization": CLIENT_SIGV4,
        "X-Amz-Security-Token": CLIENT_SESSION_TOKEN,
        "X-Amz-Date": "20260101T000000Z",
    }
    assert send("bedrock-signed", "POST", path, {**auth, **signed}, json=converse).status_code == 200
    assert send("bedrock-stream", "POST", path + "-stream", {**auth, **signed}, json=converse).status_code == 200
    bearer_key = {**auth, "Authorization": f"Bearer {BEDROCK_API_KEY}"}
    assert send("bedrock-api-key", "POST", path, bearer_key, json=converse).status_code == 200
    assert send("bedrock-no-relaylog-key", "POST", path, signed, json=converse).status_code == 401
    cached = {**auth, **signed, "Helicone-Cache-Enabled": "true"}
    assert send("bedrock-cache-miss", "POST", path, cached, json=converse).headers["helicone-cache"] == "MISS"
    assert send("bedrock-cache-hit", "POST", path, cached, json=converse).headers["helicone-cache"] == "HIT"

    invalid = {"Helicone-Auth": f"Bearer {BAD_RELAYLOG}", "Authorization": f"Bearer {OPENAI}"}
    assert send("invalid-relaylog-key", "POST", CHAT, invalid, json=_chat(tag)).status_code == 401
    assert (
        send("no-relaylog-key", "POST", CHAT, {"Authorization": f"Bearer {OPENAI}"}, json=_chat(tag)).status_code == 401
    )


def _relaylog_signatures(requests: list[Request]) -> tuple[str, ...]:
    """The signatures relaylog made with its identity, as the stand-in received them."""
    marker = f"Credential={RELAYLOG_IDENTITY.access_key}/"
    found = [r.header("authorization") or "" for r in requests]
    return tuple(auth.rsplit("Signature=", 1)[1] for auth in found if marker in auth)


@pytest.fixture
def relaylog_aws_identity() -> Iterator[None]:
    """relaylog's own AWS credentials, for the Bedrock calls it signs (moto takes any)."""
    with aws_identity(RELAYLOG_IDENTITY):
        yield


def _local_sender(said: _Said, base: str) -> tuple[Callable[..., httpx.Response], Callable[..., None]]:
    def send(name: str, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
        return said.keep(name, httpx.request(method, base + path, headers=headers, timeout=20, **kwargs))

    def stream(name: str, path: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        with httpx.stream("POST", base + path, headers=headers, json=body, timeout=20) as response:
            first = next(response.iter_raw())
        said.responses[name] = str(response.headers).encode() + first

    return send, stream


def _wait_for_records(proxy: RunningProxy, count: int) -> None:
    """Records are written once each response is complete: the hung-up stream's comes last."""
    deadline = time.monotonic() + 10
    while len(proxy.records()) < count and time.monotonic() < deadline:
        proxy.app.records.flush(5.0)
        time.sleep(0.05)


@pytest.mark.slow
def test_no_secret_reaches_a_local_file_log_or_response(
    make_proxy: Callable[..., RunningProxy],
    standin: StandIn,
    debug_logs: _Lines,
    capfd: pytest.CaptureFixture[str],
    relaylog_aws_identity: None,
) -> None:
    standin.fault = None
    host = standin.url.split("://", 1)[1]
    said = _Said()
    # Small inline limit: most bodies go to body files, which are searched too.
    proxy = make_proxy(target_allowlist=(host,), body_inline_max=512)
    relaylog_key, _ = proxy.keys.create("leak-test")
    send, stream = _local_sender(said, proxy.url)
    _every_path(send, stream, standin, relaylog_key)
    # The query API, with the key and with a wrong one.
    api = {"Authorization": f"Bearer {relaylog_key}"}
    said.keep("api", httpx.get(proxy.url + "/api/v1/requests", headers=api))
    assert (
        said.keep(
            "api-bad", httpx.get(proxy.url + "/api/v1/stats", headers={"Authorization": f"Bearer {BAD_RELAYLOG}"})
        ).status_code
        == 401
    )

    # A provider that cannot be reached, and one too slow to answer.
    gone = make_proxy(upstream=f"http://127.0.0.1:{_closed_port()}")
    gone_send, _ = _local_sender(said, gone.url)
    path = "/gemini/v1beta/models/gemini-2.0-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert gone_send("unreachable-query", "POST", path, {}, json=body, params={"key": GEMINI_QUERY}).status_code == 502
    assert (
        gone_send("unreachable", "POST", CHAT, {"Authorization": f"Bearer {OPENAI}"}, json=_chat("x")).status_code
        == 502
    )
    slow = make_proxy(read_timeout_s=0.3)
    slow_send, _ = _local_sender(said, slow.url)
    headers = {"Authorization": f"Bearer {OPENAI}", "x-standin-fault": "delay-ms=1500"}
    assert slow_send("timeout", "POST", CHAT, headers, json=_chat("x")).status_code == 504
    headers = {"x-goog-api-key": GEMINI_HEADER, "x-standin-fault": "delay-ms=1500"}
    assert (
        slow_send("timeout-gemini", "POST", path, headers, json=body, params={"key": GEMINI_QUERY}).status_code == 504
    )

    for running, count in ((proxy, 27), (gone, 2), (slow, 2)):
        _wait_for_records(running, count)
        assert len(running.records()) == count  # one record per call: every path was logged
    records = proxy.records()
    assert {r["error_type"] for r in records} >= {None, "upstream_error", "client_disconnect", "rate_limited"}
    assert {r["cache_status"] for r in records} >= {"HIT", "MISS"}
    files = _files(proxy.data_dir.parent)
    assert any(name.startswith("data0/cache/") for name in files) and any("ratelimits" in n for n in files)
    assert any(name.endswith("keys.json") for name in files) and any("/raw/" in name for name in files)
    assert any(name.startswith("data0/bodies/") for name in files)
    out, err = capfd.readouterr()
    where = {
        **files,
        **said.responses,
        "log lines": "\n".join(debug_logs.lines).encode(),
        "stdout": out.encode(),
        "stderr": err.encode(),
    }
    assert len(debug_logs.lines) > 0
    signatures = _relaylog_signatures(standin.requests)
    assert len(signatures) >= 3  # signed, streamed, cache miss (the hit and the refusal called no one)
    assert _hits((*PROVIDER_SECRETS, *AWS_SECRETS, *signatures, BAD_RELAYLOG, relaylog_key), where) == []


# -- AWS: the Lambda runtime, Firehose under moto, then the aggregator ---------------------------------


def _dynamo_items(stack: Stack) -> bytes:
    pages = stack.client("dynamodb").get_paginator("scan").paginate(TableName=stack.table)
    return orjson.dumps([item for page in pages for item in page["Items"]], default=str)


def _s3_objects(stack: Stack, scratch: Path) -> dict[str, bytes]:
    s3 = stack.client("s3")
    found: dict[str, bytes] = {}
    for key in stack.objects(""):
        data = s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        elif key.endswith(".parquet"):
            # Compressed columns would hide a secret from a byte search: read the values back.
            copy = scratch / key.replace("/", "_")
            copy.write_bytes(data)
            rows = duckdb.connect().execute(f"SELECT * FROM read_parquet('{copy}')").fetchall()
            data = orjson.dumps(rows, default=str)
        found[f"s3://{key}"] = data
    return found


@pytest.mark.aws
def test_no_secret_reaches_aws_storage_metrics_logs_or_responses(
    aws_stack: Stack,
    standin: StandIn,
    debug_logs: _Lines,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    relaylog_aws_identity: None,
) -> None:
    for name in PROVIDERS:
        monkeypatch.setenv(f"RELAYLOG_UPSTREAM_{name.upper()}", standin.url)
    monkeypatch.setenv("RELAYLOG_TARGET_ALLOWLIST", "127.0.0.1")
    monkeypatch.setenv("RELAYLOG_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("RELAYLOG_BODY_INLINE_MAX", "512")  # bodies to S3 objects, searched too
    standin.fault = None
    said = _Said()
    with LambdaEmulator() as emulator, InProcessRuntime(emulator, create_app()) as runtime:
        relaylog_key, _ = runtime.app.keys.create("leak-test")
        send, stream = _local_sender(said, emulator.url)
        _every_path(send, stream, standin, relaylog_key)
        auth = {"Helicone-Auth": f"Bearer {relaylog_key}"}
        # Too slow for the read timeout; then a fallback to a port where nothing listens.
        slow = {**auth, "Authorization": f"Bearer {OPENAI}", "x-standin-fault": "delay-ms=1500"}
        assert send("timeout", "POST", CHAT, slow, json=_chat("t")).status_code == 504
        entries = [
            {"target-url": f"http://127.0.0.1:{_closed_port()}", "headers": {"authorization": f"Bearer {FALLBACK_ONE}"}}
        ]
        gone = {**auth, "Authorization": f"Bearer {OPENAI}", "Helicone-Fallbacks": orjson.dumps(entries).decode()}
        assert send("unreachable", "POST", CHAT, gone, json=_chat("u")).status_code == 502
        emulator.settle()
    # Firehose (moto) delivered; the aggregator takes every object: rollups, index items, Parquet.
    assert invoke(load_aggregator(), aws_stack.sqs_event()) == {"batchItemFailures": []}
    objects = _s3_objects(aws_stack, tmp_path)
    delivered = [
        orjson.loads(line)
        for key, data in objects.items()
        if key.startswith(("s3://raw/", "s3://spool/"))
        for line in data.splitlines()
        if line.strip()
    ]
    assert len(delivered) == len({r["request_id"] for r in delivered}) == 29  # one record per call
    assert any(k.startswith("s3://raw/") for k in objects) and any(k.endswith(".parquet") for k in objects)
    assert any(r["response_body_ref"] for r in delivered)
    out, err = capfd.readouterr()
    assert '"_aws"' in out  # the EMF metrics were printed, and are searched too
    where = {
        **objects,
        **said.responses,
        "dynamodb items": _dynamo_items(aws_stack),
        "firehose": orjson.dumps(boto3.client("firehose", region_name=REGION).list_delivery_streams()),
        "log lines": "\n".join(debug_logs.lines).encode(),
        "stdout": out.encode(),
        "stderr": err.encode(),
    }
    signatures = _relaylog_signatures(standin.requests)
    assert _hits((*PROVIDER_SECRETS, *AWS_SECRETS, *signatures, BAD_RELAYLOG, relaylog_key), where) == []


# -- a provider that echoes the key ------------------------------------------------------------------


class _Echo:
    """A provider that answers every chat call normally but echoes the caller's credentials back in
    response headers (no real provider does this for a whole key; some echo a masked one)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = dict(scope["headers"])
        echoed = [(b"x-echo-" + name, headers[name]) for name in (b"authorization", b"x-api-key") if name in headers]
        body = orjson.dumps(
            {
                "id": "chatcmpl-echo",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        )
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"), *echoed]}
        )
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def echoed(tmp_path: Path) -> Iterator[tuple[Path, httpx.Response, httpx.Response]]:
    """Two cached calls to a provider that echoes the key: the data dir and both responses."""
    with ServedApp(_Echo(), lifespan="off") as echo, RunningProxy(tmp_path / "data", echo.url) as proxy:
        headers = {"Authorization": f"Bearer {OPENAI}", "Helicone-Cache-Enabled": "true"}
        first = httpx.post(proxy.url + CHAT, headers=headers, json=_chat("echo"))
        second = httpx.post(proxy.url + CHAT, headers=headers, json=_chat("echo"))
        proxy.app.records.flush(5.0)
        yield tmp_path / "data", first, second


def test_a_key_echoed_by_the_provider_is_relayed_but_not_recorded(
    echoed: tuple[Path, httpx.Response, httpx.Response],
) -> None:
    data_dir, first, second = echoed
    # Relayed unchanged to the caller who sent it: that is the provider's answer.
    assert first.headers["x-echo-authorization"] == f"Bearer {OPENAI}"
    assert second.headers["helicone-cache"] == "HIT"
    files = _files(data_dir)
    assert any(name.startswith("raw/") for name in files)
    assert _hits(PROVIDER_SECRETS, {k: v for k, v in files.items() if not k.startswith("cache/")}) == []


def test_a_key_echoed_by_the_provider_is_not_kept_in_the_cache(
    echoed: tuple[Path, httpx.Response, httpx.Response],
) -> None:
    data_dir, _, second = echoed
    assert _hits(PROVIDER_SECRETS, _files(data_dir)) == []
    # The hit is replayed without the header that repeated the key (the only header it lacks).
    assert second.headers["helicone-cache"] == "HIT" and "x-echo-authorization" not in second.headers


def test_the_search_finds_every_form() -> None:
    """The search itself: a secret inside base64 at any offset, URL-encoded, or plain is found."""
    for prefix in ("", "a", "ab", "Authorization: Bearer "):
        text = (prefix + OPENAI + " tail").encode()
        for form in (base64.b64encode(text), base64.urlsafe_b64encode(text), quote(text).encode(), text):
            assert _hits((OPENAI,), {"x": b"..." + form + b"..."}) == ["'" + OPENAI + "' in x"], (prefix, form)
