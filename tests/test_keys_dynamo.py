"""relaylog keys in DynamoDB: hashed, revocable, reloaded within seconds, resilient to outages."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import EndpointConnectionError
from relaylog.aws.keys import DynamoKeyStore

from tests.support.aws import REGION, Stack


def _store(stack: Stack, **kwargs: Any) -> DynamoKeyStore:
    return DynamoKeyStore(stack.table, boto3.client("dynamodb", region_name=REGION), **kwargs)


def test_create_verify_list_revoke(aws_stack: Stack) -> None:
    store = _store(aws_stack, reload_interval_s=0)
    assert store.active_count() == 0
    secret, info = store.create("ci")
    other, _ = store.create(None)
    assert secret.startswith("rl-") and store.verify(secret) == info.key_id
    assert store.verify(secret + "x") is None
    assert len(store.list()) == 2 and info.key_id in {k.key_id for k in store.list()}
    assert store.revoke(info.key_id) is True
    assert store.revoke(info.key_id) is False and store.revoke("key_missing") is False
    assert store.verify(secret) is None and store.verify(other) is not None
    assert [k.revoked_at is not None for k in store.list() if k.key_id == info.key_id] == [True]


def test_only_hashes_are_stored(aws_stack: Stack) -> None:
    secret, _ = DynamoKeyStore(aws_stack.table).create("ci")  # its own client, as the proxy function makes it
    items = aws_stack.client("dynamodb").scan(TableName=aws_stack.table)["Items"]
    assert len(items) == 1
    assert secret not in str(items) and secret[6:] not in str(items)


def test_a_running_proxy_sees_new_and_revoked_keys_after_its_reload_interval(aws_stack: Stack) -> None:
    proxy = _store(aws_stack, reload_interval_s=3600)
    cli = _store(aws_stack)
    assert proxy.active_count() == 0
    secret, info = cli.create("late")
    assert proxy.verify(secret) is None  # loaded before the key existed; not reloaded yet
    fresh = _store(aws_stack, reload_interval_s=0)
    assert fresh.verify(secret) == info.key_id
    cli.revoke(info.key_id)
    assert fresh.verify(secret) is None


class _Unreachable:
    def __init__(self, real: Any) -> None:
        self.real = real
        self.down = False

    def get_paginator(self, name: str) -> Any:
        if self.down:
            raise EndpointConnectionError(endpoint_url="https://dynamodb")
        return self.real.get_paginator(name)


def test_dynamodb_unreachable_keeps_the_keys_already_loaded(aws_stack: Stack, caplog: Any) -> None:
    secret, info = _store(aws_stack).create("ci")
    client = _Unreachable(boto3.client("dynamodb", region_name=REGION))
    store = DynamoKeyStore(aws_stack.table, client, reload_interval_s=0)
    assert store.verify(secret) == info.key_id
    client.down = True
    assert store.verify(secret) == info.key_id
    assert "keeping previously loaded keys" in caplog.text and secret not in caplog.text
