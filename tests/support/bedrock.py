"""Bedrock in tests: relaylog's AWS identity from the environment (as the standard credential chain
finds it on a laptop, or a Lambda function's role in its environment), and boto3 clients that call
relaylog with the README's one-line hook, or the stand-in directly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import botocore
import pytest
from botocore.config import Config
from relaylog.standin import StandIn
from relaylog.standin.bedrock_auth import LONG_TERM, TEMPORARY, Identity

from tests.support.proxy import RunningProxy

REGION = "us-east-1"
CLAUDE = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
NOVA = "us.amazon.nova-lite-v1:0"
LLAMA = "meta.llama3-1-8b-instruct-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "Say hello"}]}]
# relaylog's own identity in these tests: temporary credentials with a session token, like a role's.
RELAYLOG_IDENTITY = TEMPORARY
# What a client that signs its own requests uses (they never reach the stand-in through relaylog).
CLIENT_IDENTITY = LONG_TERM


@contextmanager
def aws_identity(identity: Identity | None) -> Iterator[None]:
    """The standard credential chain finds `identity` in the environment (or nothing at all): no
    profile, no shared files, no instance metadata service."""
    with pytest.MonkeyPatch.context() as patch:
        for name in (
            "AWS_PROFILE",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
        ):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        if identity is not None:
            patch.setenv("AWS_ACCESS_KEY_ID", identity.access_key)
            patch.setenv("AWS_SECRET_ACCESS_KEY", identity.secret_key)
            if identity.token is not None:
                patch.setenv("AWS_SESSION_TOKEN", identity.token)
        yield


@contextmanager
def signing_proxy(data_dir: Path, standin: StandIn, **settings: Any) -> Iterator[RunningProxy]:
    """relaylog in front of `standin` with relaylog's own AWS identity (RELAYLOG_IDENTITY) in the
    environment, for the Bedrock calls it signs; the stand-in's fault cleared."""
    standin.fault = None
    with aws_identity(RELAYLOG_IDENTITY), RunningProxy(data_dir, standin.url, **settings) as running:
        yield running


def boto3_client(endpoint_url: str, *, identity: Identity | None = None, headers: dict[str, str] | None = None) -> Any:
    """A bedrock-runtime client: signed with `identity`, or unsigned (`signature_version=UNSIGNED`)
    when it has none, adding `headers` to every request the way the README's hook does."""
    config = Config(retries={"max_attempts": 1}, signature_version=botocore.UNSIGNED if identity is None else None)
    client = boto3.client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=endpoint_url,
        aws_access_key_id=identity.access_key if identity else None,
        aws_secret_access_key=identity.secret_key if identity else None,
        aws_session_token=identity.token if identity else None,
        config=config,
    )
    if headers:
        # The README's one-line hook.
        client.meta.events.register(
            "before-send.bedrock-runtime.*", lambda request, **_: request.headers.update(headers)
        )
    return client
