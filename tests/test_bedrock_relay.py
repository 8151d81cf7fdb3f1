"""Bedrock through relaylog: the two ways a call authenticates (relaylog signs with its own AWS
identity for a valid relaylog key, or the client's Bedrock API key passes through), the answers a
client gets (the same bytes and SDK results as directly, errors, mid-stream exceptions and cuts
included), the records, and the gateway features on Bedrock calls (cache, rate limits, retries,
fallbacks), each signed anew for its attempt.

The stand-in verifies every SigV4 signature with botocore's signer for its fake identities and
refuses unsigned calls, so a 200 through relaylog proves relaylog signed it, correctly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EventStreamError
from relaylog.standin import StandIn
from relaylog.standin.bedrock_auth import Identity

from tests.support.bedrock import (
    CLAUDE,
    CLIENT_IDENTITY,
    LLAMA,
    MESSAGES,
    NOVA,
    REGION,
    RELAYLOG_IDENTITY,
    aws_identity,
    boto3_client,
    signing_proxy,
)
from tests.support.pricing import genai_cost
from tests.support.proxy import RunningProxy

CONVERSE = "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
CONVERSE_STREAM = "/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse-stream"
INVOKE_STREAM = "/model/meta.llama3-1-8b-instruct-v1%3A0/invoke-with-response-stream"
BODY = {"messages": MESSAGES}


@pytest.fixture(scope="module")
def proxy(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    host = standin.url.split("://", 1)[1]
    with signing_proxy(tmp_path_factory.mktemp("bedrock"), standin, target_allowlist=(host,)) as running:
        yield running


@pytest.fixture(scope="module")
def key(proxy: RunningProxy) -> str:
    return proxy.keys.create("bedrock")[0]


def base(proxy: RunningProxy) -> str:
    return f"{proxy.url}/bedrock/{REGION}"


def relayed(proxy: RunningProxy, key: str, **headers: str) -> tuple[Any, str]:
    """A boto3 client that sends no signature, with Helicone-Auth added by the README's hook."""
    request_id = str(uuid.uuid4())
    extra = {"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": request_id, **headers}
    return boto3_client(base(proxy), headers=extra), request_id


def without_metadata(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "ResponseMetadata"}


def signed_by(standin: StandIn) -> tuple[str, str, str | None]:
    """(access key, region) of the signature on the stand-in's last request, and its token."""
    request = standin.requests[-1]
    credential = (request.header("authorization") or "").split("Credential=", 1)[1].split(",", 1)[0].split("/")
    return credential[0], credential[2], request.header("x-amz-security-token")


def raw(
    url: str,
    path: str,
    body: dict[str, Any],
    *,
    identity: Identity | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One HTTP call with httpx: signed by `identity` (as an SDK would) or not."""
    data = json.dumps(body).encode()
    sent = {"content-type": "application/json", **(headers or {})}
    if identity is not None:
        request = AWSRequest("POST", url + path, data=data, headers=sent)
        SigV4Auth(Credentials(identity.access_key, identity.secret_key, identity.token), "bedrock", REGION).add_auth(
            request
        )
        sent = dict(request.headers)
    return httpx.post(url + path, content=data, headers=sent, timeout=20)


# -- relaylog signs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda c: without_metadata(c.converse(modelId=CLAUDE, messages=MESSAGES)),
        lambda c: list(c.converse_stream(modelId=NOVA, messages=MESSAGES)["stream"]),
        lambda c: json.loads(
            c.invoke_model(
                modelId=CLAUDE,
                body=json.dumps(
                    {
                        "anthropic_version": "bedrock-2023-05-31",
                        "max_tokens": 50,
                        "messages": [{"role": "user", "content": "Hi"}],
                    }
                ),
            )["body"].read()
        ),
        lambda c: [
            json.loads(e["chunk"]["bytes"])
            for e in c.invoke_model_with_response_stream(modelId=LLAMA, body=b'{"prompt":"Hi"}')["body"]
        ],
    ],
    ids=["converse", "converse-stream", "invoke", "invoke-stream"],
)
def test_boto3_through_relaylog_signing_gets_what_it_gets_directly(
    call: Callable[[Any], Any], standin: StandIn, proxy: RunningProxy, key: str
) -> None:
    direct = call(boto3_client(standin.url, identity=CLIENT_IDENTITY))
    client, request_id = relayed(proxy, key)
    assert call(client) == direct
    # relaylog signed it, with its own identity, for the region of the path; Helicone-* stayed home.
    assert signed_by(standin) == (RELAYLOG_IDENTITY.access_key, REGION, RELAYLOG_IDENTITY.token)
    assert not [name for name, _ in standin.requests[-1].headers if name.lower().startswith("helicone-")]
    record = proxy.record(request_id)
    assert (record["provider"], record["status"], record["error_type"], record["parse_error"]) == (
        "bedrock",
        200,
        None,
        None,
    )
    assert record["key_id"] is not None and record["input_tokens"] > 0 and record["output_tokens"] > 0
    assert b"AWS4-HMAC-SHA256" not in orjson.dumps(record)


def test_stream_bytes_and_record(standin: StandIn, proxy: RunningProxy, key: str) -> None:
    direct = raw(standin.url, CONVERSE_STREAM, BODY, identity=CLIENT_IDENTITY)
    request_id = str(uuid.uuid4())
    through = raw(
        base(proxy),
        CONVERSE_STREAM,
        BODY,
        headers={"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": request_id},
    )
    assert (through.status_code, through.content) == (200, direct.content)  # frame for frame, byte for byte
    for name in ("content-type", "x-amzn-requestid"):
        assert through.headers[name] == direct.headers[name]
    record = proxy.record(request_id)
    assert (record["model"], record["stream"], record["endpoint"]) == (CLAUDE, True, CONVERSE_STREAM)
    assert record["response_bytes"] == len(direct.content)
    # Kept as SSE text, one event per frame; usage from the metadata event, priced as its model.
    assert record["response_body"].startswith("event: messageStart\ndata: {")
    assert "event: metadata\n" in record["response_body"]
    metadata = json.loads(record["response_body"].split("event: metadata\ndata: ", 1)[1])
    assert (record["input_tokens"], record["output_tokens"]) == (
        metadata["usage"]["inputTokens"],
        metadata["usage"]["outputTokens"],
    )
    assert record["cost_usd"] == pytest.approx(genai_cost(record, CLAUDE, provider_id="aws"))
    assert record["finish_reasons"] == '["end_turn"]'


def test_a_client_signature_is_dropped_and_signed_again(standin: StandIn, proxy: RunningProxy, key: str) -> None:
    # The client signs with an identity the stand-in has never heard of, for relaylog's host.
    stranger = Identity("AKIACLIENTSELFSIGNED", "client-secret-the-provider-never-sees")
    client = boto3_client(base(proxy), identity=stranger, headers={"Helicone-Auth": f"Bearer {key}"})
    assert client.converse(modelId=NOVA, messages=MESSAGES)["stopReason"] == "end_turn"
    assert signed_by(standin)[0] == RELAYLOG_IDENTITY.access_key


def test_without_a_relaylog_key_relaylog_signs_nothing_even_with_no_keys(
    make_proxy: Callable[..., RunningProxy], standin: StandIn
) -> None:
    with aws_identity(RELAYLOG_IDENTITY):
        fresh = make_proxy()
        assert fresh.keys.active_count() == 0  # open for calls with their own credentials...
        standin.clear()
        refused = raw(f"{fresh.url}/bedrock/{REGION}", CONVERSE, BODY, identity=CLIENT_IDENTITY)
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
        assert standin.requests == []  # ...never for calls paid with relaylog's identity
        own_key = raw(
            f"{fresh.url}/bedrock/{REGION}", CONVERSE, BODY, headers={"Authorization": "Bearer bedrock-api-key-1"}
        )
        assert own_key.status_code == 200
        records = fresh.wait_records(2)
    assert sorted((r["status"], r["error_type"]) for r in records) == [(200, None), (401, "unauthorized")]


def test_no_aws_credentials_is_a_503(make_proxy: Callable[..., RunningProxy], standin: StandIn) -> None:
    with aws_identity(None):
        fresh = make_proxy()
        key, _ = fresh.keys.create("k")
        answer = raw(f"{fresh.url}/bedrock/{REGION}", CONVERSE, BODY, headers={"Helicone-Auth": f"Bearer {key}"})
    assert (answer.status_code, answer.json()["error"]["type"]) == (503, "aws_credentials_unavailable")


def test_a_bad_region_is_refused(proxy: RunningProxy, key: str) -> None:
    answer = raw(f"{proxy.url}/bedrock/Not_A_Region", CONVERSE, BODY, headers={"Helicone-Auth": f"Bearer {key}"})
    assert (answer.status_code, answer.json()["error"]["type"]) == (404, "unknown_provider")


# -- the client's own Bedrock API key -------------------------------------------------------------------


def test_a_bedrock_api_key_passes_through_unchanged(standin: StandIn, proxy: RunningProxy, key: str) -> None:
    headers = {"Helicone-Auth": f"Bearer {key}", "Authorization": "Bearer bedrock-api-key-abc"}
    answer = raw(base(proxy), CONVERSE, BODY, headers=headers)
    assert answer.status_code == 200
    seen = standin.requests[-1]
    assert seen.header("authorization") == "Bearer bedrock-api-key-abc" and seen.header("x-amz-date") is None
    refused = raw(base(proxy), CONVERSE, BODY, headers={**headers, "Authorization": "Bearer bad-key"})
    direct = raw(standin.url, CONVERSE, BODY, headers={"Authorization": "Bearer bad-key"})
    assert (refused.status_code, refused.content, refused.headers["x-amzn-errortype"]) == (
        403,
        direct.content,
        direct.headers["x-amzn-errortype"],
    )


@pytest.mark.parametrize("auth", ["api_key", "relaylog_signs"])
def test_openai_compatible_endpoint(auth: str, standin: StandIn, proxy: RunningProxy, key: str) -> None:
    """The OpenAI SDK on Bedrock's OpenAI-compatible endpoint, with the client's Bedrock API key, or
    with its Authorization header left out (the SDK's way to send no key): then relaylog signs with
    its own AWS identity, and the stand-in checks the signature."""
    import openai

    request_id = str(uuid.uuid4())
    client = openai.OpenAI(
        base_url=f"{base(proxy)}/openai/v1",
        api_key="bedrock-api-key-abc",
        default_headers={"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": request_id},
        max_retries=0,
    )
    answer = client.chat.completions.create(
        model="openai.gpt-oss-20b-1:0",
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"Authorization": openai.Omit()} if auth == "relaylog_signs" else None,
    )
    assert answer.choices[0].message.content
    sent = standin.requests[-1]
    assert sent.path == "/openai/v1/chat/completions"
    if auth == "relaylog_signs":
        assert signed_by(standin) == (RELAYLOG_IDENTITY.access_key, REGION, RELAYLOG_IDENTITY.token)
    else:
        assert sent.header("authorization") == "Bearer bedrock-api-key-abc"
    record = proxy.record(request_id)
    assert (record["provider"], record["model"], record["status"], record["input_tokens"]) == (
        "bedrock",
        "openai.gpt-oss-20b-1:0",
        200,
        answer.usage.prompt_tokens,
    )


# -- errors, exceptions, cuts ---------------------------------------------------------------------------


def test_errors_reach_boto3_as_directly(standin: StandIn, proxy: RunningProxy, key: str) -> None:
    fault = {"x-standin-fault": "status=429"}
    errors = []
    for client in (boto3_client(standin.url, identity=CLIENT_IDENTITY, headers=fault), relayed(proxy, key, **fault)[0]):
        with pytest.raises(ClientError) as raised:
            client.converse(modelId=NOVA, messages=MESSAGES)
        errors.append((raised.value.response["Error"], raised.value.response["ResponseMetadata"]["HTTPStatusCode"]))
    assert errors[0] == errors[1] and errors[0][0]["Code"] == "ThrottlingException"


def test_a_mid_stream_exception(standin: StandIn, proxy: RunningProxy, key: str) -> None:
    scenario = {"x-standin-scenario": "stream-error", "x-standin-stream-exception": "throttlingException"}
    seen = []
    client, request_id = relayed(proxy, key, **scenario)
    for c in (boto3_client(standin.url, identity=CLIENT_IDENTITY, headers=scenario), client):
        events = []
        with pytest.raises(EventStreamError) as raised:
            for e in c.converse_stream(modelId=NOVA, messages=MESSAGES)["stream"]:
                events.append(e)
        seen.append((events, raised.value.response["Error"]))
    assert seen[0] == seen[1] and seen[0][1]["Code"] == "throttlingException"
    record = proxy.record(request_id)
    assert (record["status"], record["error_type"], record["input_tokens"]) == (200, "upstream_stream_error", None)
    assert record["response_body"].endswith(
        'event: throttlingException\ndata: {"message":"The stream was interrupted by the stand-in (scenario stream-error)."}\n\n'
    )


def test_a_stream_cut_by_the_provider(proxy: RunningProxy, key: str) -> None:
    request_id = str(uuid.uuid4())
    headers = {"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": request_id, "x-standin-fault": "drop-after=3"}
    with pytest.raises(httpx.RemoteProtocolError):
        raw(base(proxy), INVOKE_STREAM, {"prompt": "Hi"}, headers=headers)
    record = proxy.record(request_id)
    assert (record["status"], record["error_type"]) == (200, "upstream_disconnect")
    assert record["response_body"].count("event: chunk\n") == 3 and "truncated stream" in record["parse_error"]
    # Llama's running counts so far: the prompt from the first chunk, three output tokens.
    assert (record["input_tokens"], record["output_tokens"], record["usage_source"]) == (1, 3, "provider")


def test_a_stream_that_ends_without_its_last_events(proxy: RunningProxy, key: str) -> None:
    request_id = str(uuid.uuid4())
    headers = {"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": request_id, "x-standin-fault": "truncate"}
    assert raw(base(proxy), CONVERSE_STREAM, BODY, headers=headers).status_code == 200
    record = proxy.record(request_id)
    assert (record["input_tokens"], record["usage_source"], record["cost_source"]) == (None, "absent", "no_usage")
    assert "truncated stream" in record["parse_error"]


# -- gateway features -----------------------------------------------------------------------------------


def test_the_cache_keys_on_the_unsigned_request(standin: StandIn, proxy: RunningProxy, key: str) -> None:
    tag = str(uuid.uuid4())
    body = {"messages": [{"role": "user", "content": [{"text": f"cache me {tag}"}]}]}
    headers = {"Helicone-Auth": f"Bearer {key}", "Helicone-Cache-Enabled": "true"}
    standin.clear()
    first = raw(base(proxy), CONVERSE_STREAM, body, headers=headers)
    second = raw(base(proxy), CONVERSE_STREAM, body, headers=headers)  # signed at another moment, or not
    assert (first.headers["helicone-cache"], second.headers["helicone-cache"]) == ("MISS", "HIT")
    assert second.content == first.content and len(standin.requests) == 1
    hit = proxy.record(second.headers["helicone-id"])
    assert (hit["cache_status"], hit["cost_usd"], hit["input_tokens"]) == (
        "HIT",
        0.0,
        proxy.record(first.headers["helicone-id"])["input_tokens"],
    )


def test_retries_are_signed_again(standin: StandIn, proxy: RunningProxy, key: str) -> None:
    standin.clear()
    headers = {
        "Helicone-Auth": f"Bearer {key}",
        "Helicone-Retry-Enabled": "true",
        "Helicone-Retry-Min-Timeout": "10",
        "Helicone-Retry-Max-Timeout": "20",
        "x-standin-fault": f"status=503;times=1;id={uuid.uuid4()}",
    }
    answer = raw(base(proxy), CONVERSE, BODY, headers=headers)
    assert answer.status_code == 200 and len(standin.requests) == 2
    assert all(
        (r.header("authorization") or "").startswith(f"AWS4-HMAC-SHA256 Credential={RELAYLOG_IDENTITY.access_key}/")
        for r in standin.requests
    )
    assert proxy.record(answer.headers["helicone-id"])["attempt_count"] == 2


def test_fallbacks_are_signed_for_their_target(standin: StandIn, proxy: RunningProxy, key: str) -> None:
    standin.clear()
    entries = [
        {"target-url": standin.url, "headers": {"x-standin-fault": "status=503"}},
        {"target-url": standin.url},
    ]
    headers = {"Helicone-Auth": f"Bearer {key}", "Helicone-Fallbacks": json.dumps(entries)}
    answer = raw(base(proxy), CONVERSE, BODY, headers=headers)
    assert (answer.status_code, answer.headers["helicone-fallback-index"]) == (200, "1")
    assert [signed_by_request(r) for r in standin.requests] == [RELAYLOG_IDENTITY.access_key] * 2


def test_a_fallback_with_its_own_bedrock_api_key_is_not_signed(standin: StandIn, proxy: RunningProxy, key: str) -> None:
    # The call itself is signed by relaylog; the second entry brings the client's own Bedrock API key.
    standin.clear()
    entries = [
        {"target-url": standin.url, "headers": {"x-standin-fault": "status=503"}},
        {"target-url": standin.url, "headers": {"authorization": "Bearer fallback-bedrock-key"}},
    ]
    headers = {"Helicone-Auth": f"Bearer {key}", "Helicone-Fallbacks": json.dumps(entries)}
    answer = raw(base(proxy), CONVERSE, BODY, headers=headers)
    assert (answer.status_code, answer.headers["helicone-fallback-index"]) == (200, "1")
    first, second = standin.requests
    assert signed_by_request(first) == RELAYLOG_IDENTITY.access_key
    sent = [
        (name.lower(), value) for name, value in second.headers if name.lower().startswith(("authorization", "x-amz-"))
    ]
    assert sent == [("authorization", "Bearer fallback-bedrock-key")]


def signed_by_request(request: Any) -> str:
    return (request.header("authorization") or "").split("Credential=", 1)[1].split("/", 1)[0]


def test_rate_limits(proxy: RunningProxy, key: str) -> None:
    headers = {
        "Helicone-Auth": f"Bearer {key}",
        "Helicone-RateLimit-Policy": "1;w=600;s=user",
        "Helicone-User-Id": str(uuid.uuid4()),
    }
    assert raw(base(proxy), CONVERSE, BODY, headers=headers).status_code == 200
    limited = raw(base(proxy), CONVERSE, BODY, headers=headers)
    assert (limited.status_code, limited.json()["error"]["type"]) == (429, "rate_limited")
