"""relaylog keys in DynamoDB: hashed, revocable, reloaded within seconds, resilient to outages."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError
from relaylog.aws import layout
from relaylog.keys import KeysUnavailable, hash_key
from relaylog.keys.dynamo import DynamoKeyStore

from tests.support.aws import REGION, Stack

pytestmark = pytest.mark.aws


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


def test_dynamodb_unreadable_at_start_refuses_every_check_until_a_read_succeeds(aws_stack: Stack) -> None:
    """A throttled table or a permission mistake at cold start must not open the proxy to everyone."""
    secret, info = _store(aws_stack).create("ci")
    client = _Unreachable(boto3.client("dynamodb", region_name=REGION))
    client.down = True
    store = DynamoKeyStore(aws_stack.table, client, reload_interval_s=0)
    with pytest.raises(KeysUnavailable):
        store.active_count()
    with pytest.raises(KeysUnavailable):
        store.verify(secret)
    client.down = False
    assert store.active_count() == 1 and store.verify(secret) == info.key_id


def test_limit_is_stored_on_the_item_and_looked_up_by_key_id(aws_stack: Stack) -> None:
    store = _store(aws_stack, reload_interval_s=0)
    secret, info = store.create("batch", limit="1000;w=3600;u=cents")
    _, plain = store.create("plain")
    assert info.limit == "1000;w=3600;u=cents"
    assert store.verify(secret) == info.key_id
    assert store.limit(info.key_id) == "1000;w=3600;u=cents" and store.limit(plain.key_id) is None
    assert {k.key_id: k.limit for k in store.list()} == {info.key_id: info.limit, plain.key_id: None}
    items = aws_stack.client("dynamodb").scan(TableName=aws_stack.table)["Items"]
    assert sorted(item.get("limit", {}).get("S", "-") for item in items) == ["-", "1000;w=3600;u=cents"]
    store.revoke(info.key_id)
    assert store.limit(info.key_id) is None


def test_bad_limit_writes_no_item(aws_stack: Stack) -> None:
    store = _store(aws_stack)
    with pytest.raises(ValueError, match="window"):
        store.create("x", limit="5;w=0")
    assert aws_stack.client("dynamodb").scan(TableName=aws_stack.table)["Items"] == []


def test_items_without_a_limit_attribute_still_load(aws_stack: Stack) -> None:
    # An item as DynamoKeyStore wrote it before limits existed.
    secret = "rl-old-key-from-an-earlier-version-of-relaylog"
    aws_stack.client("dynamodb").put_item(
        TableName=aws_stack.table,
        Item={
            "pk": {"S": layout.KEY_PK},
            "sk": {"S": hash_key(secret)},
            "key_id": {"S": "key_0ld0ld00"},
            "prefix": {"S": secret[:6]},
            "created_at": {"S": "2024-01-01T00:00:00Z"},
        },
    )
    store = _store(aws_stack, reload_interval_s=0)
    assert store.verify(secret) == "key_0ld0ld00" and store.limit("key_0ld0ld00") is None
    assert [k.limit for k in store.list()] == [None]
