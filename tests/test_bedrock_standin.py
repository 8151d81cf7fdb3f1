"""The Bedrock stand-in speaks Bedrock's wire format: boto3 (botocore's own parsers and event-stream
decoder, the reference for what AWS sends) reads every answer, error and mid-stream exception,
and the SigV4 check accepts botocore's signatures and nothing else."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError
from relaylog.standin import StandIn
from relaylog.standin.bedrock_auth import LONG_TERM, TEMPORARY, Identity

REGION = "eu-west-3"
MESSAGES = [{"role": "user", "content": [{"text": "Hi"}]}]


def client(url: str, identity: Identity = LONG_TERM, headers: dict[str, str] | None = None) -> Any:
    made = boto3.client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id=identity.access_key,
        aws_secret_access_key=identity.secret_key,
        aws_session_token=identity.token,
        config=Config(retries={"max_attempts": 1}),
    )
    for name, value in (headers or {}).items():
        made.meta.events.register("before-sign.bedrock-runtime.*", _add(name, value))
    return made


def _add(name: str, value: str) -> Any:
    def handler(request: Any, **_: Any) -> None:
        request.headers[name] = value

    return handler


@pytest.fixture
def s(standin: StandIn) -> Iterator[StandIn]:
    standin.clear()
    standin.fault = None
    yield standin


def test_converse_and_its_stream_as_boto3_reads_them(s: StandIn) -> None:
    bedrock = client(s.url)
    answer = bedrock.converse(modelId="us.amazon.nova-pro-v1:0", messages=MESSAGES)
    text = answer["output"]["message"]["content"][0]["text"]
    assert answer["stopReason"] == "end_turn" and answer["usage"]["inputTokens"] > 0
    events = list(bedrock.converse_stream(modelId="us.amazon.nova-pro-v1:0", messages=MESSAGES)["stream"])
    assert [next(iter(e)) for e in (events[0], events[-2], events[-1])] == ["messageStart", "messageStop", "metadata"]
    assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e) == text
    assert events[-1]["metadata"]["usage"] == answer["usage"]


def test_tool_use_streams_its_input_in_pieces(s: StandIn) -> None:
    tools = {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
                }
            }
        ]
    }
    bedrock = client(s.url)
    whole = bedrock.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=MESSAGES, toolConfig=tools)
    use = whole["output"]["message"]["content"][0]["toolUse"]
    assert (use["name"], use["input"], whole["stopReason"]) == ("get_weather", {"city": "Paris"}, "tool_use")
    events = list(
        bedrock.converse_stream(modelId="anthropic.claude-3-haiku-20240307-v1:0", messages=MESSAGES, toolConfig=tools)[
            "stream"
        ]
    )
    start = next(e["contentBlockStart"]["start"]["toolUse"] for e in events if "contentBlockStart" in e)
    pieces = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e]
    assert start["name"] == "get_weather" and start["toolUseId"].startswith("tooluse_")
    assert json.loads("".join(pieces)) == use["input"]


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (
            "us.anthropic.claude-3-5-sonnet-20241022-v2:0",
            {
                "anthropic_version": "bedrock-2023-05-31",
                "max_tokens": 50,
                "messages": [{"role": "user", "content": "Hi"}],
            },
        ),
        ("amazon.nova-lite-v1:0", {"messages": MESSAGES}),
        ("meta.llama3-1-8b-instruct-v1:0", {"prompt": "Hi", "max_gen_len": 50}),
        ("amazon.titan-text-express-v1", {"inputText": "Hi"}),
        ("mistral.mistral-7b-instruct-v0:2", {"prompt": "<s>[INST] Hi [/INST]"}),
        ("cohere.command-r-v1:0", {"message": "Hi"}),
    ],
)
def test_invoke_model_families_and_their_streams(s: StandIn, model: str, body: dict[str, Any]) -> None:
    bedrock = client(s.url)
    answer = bedrock.invoke_model(modelId=model, body=json.dumps(body))
    headers = answer["ResponseMetadata"]["HTTPHeaders"]
    assert (
        int(headers["x-amzn-bedrock-input-token-count"]) > 0 and int(headers["x-amzn-bedrock-output-token-count"]) > 0
    )
    json.loads(answer["body"].read())
    streamed = bedrock.invoke_model_with_response_stream(modelId=model, body=json.dumps(body))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in streamed["body"]]
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert (metrics["inputTokenCount"], metrics["outputTokenCount"]) == (
        int(headers["x-amzn-bedrock-input-token-count"]),
        int(headers["x-amzn-bedrock-output-token-count"]),
    )
    assert all("amazon-bedrock-invocationMetrics" not in c for c in chunks[:-1])


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (400, "ValidationException"),
        (403, "AccessDeniedException"),
        (429, "ThrottlingException"),
        (503, "ServiceUnavailableException"),
    ],
)
def test_error_shapes(s: StandIn, status: int, name: str) -> None:
    bedrock = client(s.url, headers={"x-standin-fault": f"status={status}"})
    with pytest.raises(ClientError) as raised:
        bedrock.converse(modelId="amazon.nova-lite-v1:0", messages=MESSAGES)
    error = raised.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (name, status)
    assert error["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"].startswith(name + ":")


@pytest.mark.parametrize("exception", ["modelStreamErrorException", "throttlingException", "validationException"])
def test_mid_stream_exceptions(s: StandIn, exception: str) -> None:
    bedrock = client(s.url, headers={"x-standin-scenario": "stream-error", "x-standin-stream-exception": exception})
    for call in (
        lambda: bedrock.converse_stream(modelId="amazon.nova-lite-v1:0", messages=MESSAGES)["stream"],
        lambda: bedrock.invoke_model_with_response_stream(
            modelId="meta.llama3-1-8b-instruct-v1:0", body=b'{"prompt":"Hi"}'
        )["body"],
    ):
        seen = []
        with pytest.raises(EventStreamError) as raised:
            for e in call():
                seen.append(e)
        assert raised.value.response["Error"]["Code"] == exception
        assert len(seen) == 3 or (len(seen) == 4 and "messageStart" in seen[0])


def test_frames_have_valid_crcs_and_bedrock_headers(s: StandIn) -> None:
    raw = _signed_post(s.url, "/model/amazon.nova-lite-v1%3A0/converse-stream", {"messages": MESSAGES})
    assert raw.headers["content-type"] == "application/vnd.amazon.eventstream"
    buffer = EventStreamBuffer()
    buffer.add_data(raw.content)
    messages: list[Any] = list(buffer)  # raises ChecksumMismatch on a bad prelude or message CRC
    assert sum(m.prelude.total_length for m in messages) == len(raw.content)
    assert [list(m.headers) for m in messages[:1]] == [[":event-type", ":content-type", ":message-type"]]
    assert all(json.loads(m.payload)["p"] for m in messages)  # Bedrock's padding field


def test_sigv4_is_checked(s: StandIn) -> None:
    path, body = "/model/amazon.nova-lite-v1%3A0/converse", {"messages": MESSAGES}
    assert _signed_post(s.url, path, body).status_code == 200
    assert _signed_post(s.url, path, body, identity=TEMPORARY).status_code == 200
    wrong_secret = Identity(LONG_TERM.access_key, "not-the-secret")
    refused = _signed_post(s.url, path, body, identity=wrong_secret)
    assert refused.status_code == 403 and refused.headers["x-amzn-errortype"].startswith("InvalidSignatureException:")
    unknown = _signed_post(s.url, path, body, identity=Identity("AKIAUNKNOWN000000000", "x"))
    assert unknown.headers["x-amzn-errortype"].startswith("UnrecognizedClientException:")
    no_token = _signed_post(s.url, path, body, identity=Identity(TEMPORARY.access_key, TEMPORARY.secret_key))
    assert no_token.status_code == 403
    tampered = _signed_post(s.url, path, body, send_body=json.dumps({"messages": MESSAGES, "x": 1}).encode())
    assert tampered.status_code == 403
    other_path = _signed_post(s.url, path, body, send_path="/model/amazon.nova-pro-v1%3A0/converse")
    assert other_path.status_code == 403
    stale = _signed_post(s.url, path, body, at=time.time() - 3600)
    assert stale.status_code == 403 and b"Signature expired" in stale.content
    unsigned = httpx.post(s.url + path, json=body)
    assert (unsigned.status_code, unsigned.headers["x-amzn-errortype"].split(":")[0]) == (
        403,
        "MissingAuthenticationTokenException",
    )
    api_key = httpx.post(s.url + path, json=body, headers={"authorization": "Bearer bedrock-api-key-abc"})
    assert api_key.status_code == 200
    bad_key = httpx.post(s.url + path, json=body, headers={"authorization": "Bearer bad-key"})
    assert bad_key.status_code == 403


def _signed_post(
    url: str,
    path: str,
    body: dict[str, Any],
    *,
    identity: Identity = LONG_TERM,
    send_body: bytes | None = None,
    send_path: str | None = None,
    at: float | None = None,
) -> httpx.Response:
    data = json.dumps(body).encode()
    request = AWSRequest("POST", url + path, data=data, headers={"content-type": "application/json"})
    signer = SigV4Auth(Credentials(identity.access_key, identity.secret_key, identity.token), "bedrock", REGION)
    if at is None:
        signer.add_auth(request)
    else:  # a signature made an hour ago, the way botocore makes it
        from unittest import mock

        from botocore import auth

        when = datetime.datetime.fromtimestamp(at, datetime.UTC).replace(tzinfo=None)
        with mock.patch.object(auth, "get_current_datetime", return_value=when):
            signer.add_auth(request)
    return httpx.post(
        url + (send_path or path), content=send_body if send_body is not None else data, headers=dict(request.headers)
    )
