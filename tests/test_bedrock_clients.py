"""Bedrock clients that work unchanged but for their endpoint: the Anthropic SDK's AnthropicBedrock
(`base_url`), LangChain's ChatBedrockConverse (a boto3 client with the README's hook) and the
Vercel AI SDK's Amazon Bedrock provider (`baseURL`), each signing its own calls (relaylog drops
the signature and signs with its identity) or with a Bedrock API key (passed through). Each gives
the same result through relaylog as directly against the stand-in, and leaves a correct record.
(boto3 itself is in tests/test_bedrock_relay.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from anthropic import AnthropicBedrock
from langchain_aws import ChatBedrockConverse
from relaylog.standin import StandIn

from tests.support.bedrock import (
    CLIENT_IDENTITY,
    NOVA,
    REGION,
    RELAYLOG_IDENTITY,
    boto3_client,
    signing_proxy,
)
from tests.support.proxy import RunningProxy
from tests.test_node_clients import finish, node, start  # noqa: F401 - `node` is a fixture

CLAUDE = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
API_KEY = "bedrock-api-key-clients"


@pytest.fixture(scope="module")
def proxy(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with signing_proxy(tmp_path_factory.mktemp("bedrock-clients"), standin) as running:
        yield running


@pytest.fixture(scope="module")
def key(proxy: RunningProxy) -> str:
    return proxy.keys.create("clients")[0]


def relaylog_url(proxy: RunningProxy) -> str:
    return f"{proxy.url}/bedrock/{REGION}"


def signer_of_last_call(standin: StandIn) -> str:
    return (standin.requests[-1].header("authorization") or "").split("Credential=", 1)[-1].split("/", 1)[0]


# -- the Anthropic SDK's Bedrock client ------------------------------------------------------------


def anthropic_bedrock(base_url: str, api_key: str | None = None, **headers: str) -> AnthropicBedrock:
    if api_key is not None:
        return AnthropicBedrock(
            api_key=api_key, aws_region=REGION, base_url=base_url, default_headers=headers, max_retries=0
        )
    return AnthropicBedrock(
        aws_access_key=CLIENT_IDENTITY.access_key,
        aws_secret_key=CLIENT_IDENTITY.secret_key,
        aws_region=REGION,
        base_url=base_url,
        default_headers=headers,
        max_retries=0,
    )


@pytest.mark.parametrize("api_key", [None, API_KEY], ids=["self-signed", "api-key"])
def test_anthropic_bedrock(api_key: str | None, standin: StandIn, proxy: RunningProxy, key: str) -> None:
    messages: Any = [{"role": "user", "content": "Say hello"}]
    direct = anthropic_bedrock(standin.url, api_key)
    whole = direct.messages.create(model=CLAUDE, max_tokens=100, messages=messages)
    with direct.messages.stream(model=CLAUDE, max_tokens=100, messages=messages) as stream:
        streamed = (list(stream.text_stream), stream.get_final_message())
    request_ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    through = anthropic_bedrock(
        relaylog_url(proxy), api_key, **{"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": request_ids[0]}
    )
    assert through.messages.create(model=CLAUDE, max_tokens=100, messages=messages) == whole
    through = through.with_options(default_headers={"Helicone-Request-Id": request_ids[1]})
    with through.messages.stream(model=CLAUDE, max_tokens=100, messages=messages) as stream:
        assert (list(stream.text_stream), stream.get_final_message()) == streamed
    assert signer_of_last_call(standin) == (
        RELAYLOG_IDENTITY.access_key if api_key is None else "Bearer bedrock-api-key-clients"
    )
    plain, streamed_record = proxy.record(request_ids[0]), proxy.record(request_ids[1])
    assert (plain["endpoint"], plain["stream"], plain["input_tokens"]) == (
        f"/model/{CLAUDE}/invoke",
        False,
        whole.usage.input_tokens,
    )
    assert (streamed_record["stream"], streamed_record["output_tokens"], streamed_record["error_type"]) == (
        True,
        streamed[1].usage.output_tokens,
        None,
    )
    assert streamed_record["response_body"].startswith('event: chunk\ndata: {"type":"message_start"')
    assert plain["cost_usd"] and streamed_record["cost_usd"]


# -- LangChain's ChatBedrockConverse ---------------------------------------------------------------


def test_langchain_chat_bedrock_converse(standin: StandIn, proxy: RunningProxy, key: str) -> None:
    direct = ChatBedrockConverse(
        model=NOVA, region_name=REGION, client=boto3_client(standin.url, identity=CLIENT_IDENTITY)
    )
    request_id = str(uuid.uuid4())
    client = boto3_client(
        relaylog_url(proxy), headers={"Helicone-Auth": f"Bearer {key}", "Helicone-Request-Id": request_id}
    )
    through = ChatBedrockConverse(model=NOVA, region_name=REGION, client=client)
    mine, theirs = direct.invoke("Say hello"), through.invoke("Say hello")
    assert (theirs.content, theirs.usage_metadata, theirs.response_metadata["stopReason"]) == (
        mine.content,
        mine.usage_metadata,
        mine.response_metadata["stopReason"],
    )
    assert signer_of_last_call(standin) == RELAYLOG_IDENTITY.access_key
    record = proxy.record(request_id)
    assert (record["input_tokens"], record["output_tokens"]) == (
        mine.usage_metadata["input_tokens"],
        mine.usage_metadata["output_tokens"],
    )
    chunks = [[c.content, c.usage_metadata] for c in direct.stream("Say hello")]
    assert [[c.content, c.usage_metadata] for c in through.stream("Say hello")] == chunks


# -- the Vercel AI SDK's Amazon Bedrock provider ---------------------------------------------------


@pytest.mark.node
@pytest.mark.parametrize("auth", ["sigv4", "api-key"])
def test_vercel_amazon_bedrock(auth: str, node: str, standin: StandIn, proxy: RunningProxy, key: str) -> None:  # noqa: F811
    # The client's own identity (relaylog's is in this process's environment, for the proxy).
    env = {"AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": ""}
    if auth == "api-key":
        env["BEDROCK_API_KEY"] = API_KEY
    else:
        env |= {"AWS_ACCESS_KEY_ID": CLIENT_IDENTITY.access_key, "AWS_SECRET_ACCESS_KEY": CLIENT_IDENTITY.secret_key}
    request_id = str(uuid.uuid4())
    direct = finish(start(node, "bedrock_stream.mjs", standin.url, **env))
    through = finish(
        start(
            node,
            "bedrock_stream.mjs",
            relaylog_url(proxy),
            HELICONE_AUTH=f"Bearer {key}",
            HELICONE_REQUEST_ID=request_id,
            **env,
        )
    )
    assert (direct["heliconeId"], through["heliconeId"]) == (None, request_id)
    assert {k: v for k, v in through.items() if k != "heliconeId"} == {
        k: v for k, v in direct.items() if k != "heliconeId"
    }
    assert through["text"] and len(through["deltas"]) > 1
    record = proxy.record(request_id)
    assert (record["model"], record["stream"], record["input_tokens"], record["output_tokens"]) == (
        NOVA,
        True,
        direct["usage"]["inputTokens"],
        direct["usage"]["outputTokens"],
    )
