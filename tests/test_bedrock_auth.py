"""relaylog's SigV4 signer and AWS identity, against botocore as the oracle: the same signature as
botocore's SigV4Auth for the same request at the same moment, credentials resolved and refreshed
in a thread (never on the event loop), and nothing secret in a repr."""

from __future__ import annotations

import asyncio
import datetime
import threading
from typing import Any
from unittest import mock

import pytest
from botocore import auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from relaylog.config import Settings
from relaylog.providers import bedrock_auth
from relaylog.providers.bedrock_auth import AwsIdentity, Signer, auth_mode, sign
from relaylog.providers.routing import resolve, resolve_target
from yarl import URL

from tests.support.bedrock import RELAYLOG_IDENTITY, aws_identity

NOW = 1_796_000_000.25


def botocore_authorization(credentials: Credentials, region: str, url: str, body: bytes) -> str:
    request = AWSRequest("POST", url, data=body)
    when = datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(tzinfo=None)
    with mock.patch.object(auth, "get_current_datetime", return_value=when):
        SigV4Auth(credentials, "bedrock", region).add_auth(request)
    return request.headers["Authorization"]


@pytest.mark.parametrize(
    "url",
    [
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse-stream",
        "https://bedrock-runtime.eu-west-3.amazonaws.com/model/arn%3Aaws%3Abedrock%3Aeu-west-3%3A%3Afoundation-model%2Fmistral.mistral-large-2402-v1%3A0/invoke",
        "https://bedrock-runtime.us-west-2.amazonaws.com/openai/v1/chat/completions?b=2&a=1&a=0",
        "http://127.0.0.1:9100/model/amazon.nova-pro-v1:0/converse",
        "https://[::1]:8443/model/x.y/converse",
        "https://bedrock-runtime.us-east-1.amazonaws.com:443/model/x.y/converse",
    ],
)
@pytest.mark.parametrize("token", [None, "a session token with  spaces"])
@pytest.mark.parametrize("body", [b"", b'{"messages":[{"role":"user","content":[{"text":"caf\xc3\xa9"}]}]}'])
def test_signatures_are_botocores(url: str, token: str | None, body: bytes) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    mine = dict(
        sign(credentials.get_frozen_credentials(), "eu-central-1", "POST", URL(url, encoded=True), body, now=NOW)
    )
    assert mine["authorization"] == botocore_authorization(credentials, "eu-central-1", url, body)
    assert mine["x-amz-date"] == "20261130T005320Z"
    assert mine.get("x-amz-security-token") == token


def test_the_signer_signs_bedrock_targets_only_and_for_their_region() -> None:
    settings = Settings(target_allowlist=("bedrock-runtime.us-west-2.amazonaws.com", "api.openai.com"))
    signer = Signer(Credentials("AKID", "secret").get_frozen_credentials(), "us-east-1")
    own = resolve("/bedrock/us-east-1/model/x.y/converse", None, settings)
    other_region = resolve_target("/model/x.y/converse", "https://bedrock-runtime.us-west-2.amazonaws.com", settings)
    elsewhere = resolve_target("/v1/chat/completions", "https://api.openai.com", settings)
    for route, region in ((own, "us-east-1"), (other_region, "us-west-2")):
        headers = dict(signer.headers("POST", route, URL(route.origin + route.endpoint), b"{}"))
        assert f"/{region}/bedrock/aws4_request" in headers["authorization"]
    assert signer.headers("POST", elsewhere, URL("https://api.openai.com/v1/chat/completions"), b"{}") == []
    assert "secret" not in repr(signer) and repr(signer) == "<Signer us-east-1>"


def test_auth_mode() -> None:
    assert auth_mode([("authorization", "Bearer bedrock-key")]) == "api_key"
    assert auth_mode([("authorization", "bearer bedrock-key")]) == "api_key"
    assert auth_mode([("authorization", "AWS4-HMAC-SHA256 Credential=x")]) == "relaylog_signs"
    assert auth_mode([]) == "relaylog_signs"


def test_credentials_from_the_chain_are_resolved_once_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    resolved_in: list[str] = []
    resolve = bedrock_auth._resolve

    def spy() -> object:
        resolved_in.append(threading.current_thread().name)
        return resolve()

    monkeypatch.setattr(bedrock_auth, "_resolve", spy)
    identity = AwsIdentity()

    async def twice() -> tuple[Any, Any, str]:
        return await identity.frozen(), await identity.frozen(), threading.current_thread().name

    with aws_identity(RELAYLOG_IDENTITY):
        found, again, loop_thread = asyncio.run(twice())
    assert len(resolved_in) == 1 and resolved_in[0] != loop_thread
    assert (
        (found.access_key, found.token)
        == (again.access_key, again.token)
        == (RELAYLOG_IDENTITY.access_key, RELAYLOG_IDENTITY.token)
    )
    assert repr(identity) == "<AwsIdentity>"
    with aws_identity(None):  # an empty chain: no identity (and it is asked again only after a pause)
        empty = AwsIdentity()
        assert asyncio.run(empty.frozen()) is None and asyncio.run(empty.frozen()) is None
    assert len(resolved_in) == 2


def test_expiring_credentials_are_refreshed_in_a_thread() -> None:
    refreshed_in: list[str] = []
    expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)  # inside botocore's refresh window

    def refresh() -> dict[str, str]:
        refreshed_in.append(threading.current_thread().name)
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        return {
            "access_key": "ASIANEW",
            "secret_key": "new-secret",
            "token": "new-token",
            "expiry_time": later.isoformat(),
        }

    credentials = RefreshableCredentials("ASIAOLD", "old-secret", "old-token", expiry, refresh, "test")
    identity = AwsIdentity()
    identity._credentials = credentials  # as the chain would have returned it

    async def twice() -> tuple[Any, Any, str]:
        return await identity.frozen(), await identity.frozen(), threading.current_thread().name

    first, second, loop_thread = asyncio.run(twice())
    assert first.access_key == second.access_key == "ASIANEW"
    assert len(refreshed_in) == 1 and refreshed_in[0] != loop_thread
