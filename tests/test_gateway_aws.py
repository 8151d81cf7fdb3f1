"""The gateway's AWS stores under moto: the response cache (DynamoDB items, S3 for large entries) and
the rate-limit counters (DynamoDB conditional updates)."""

from __future__ import annotations

import asyncio
import gzip
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from unittest import mock

import openai
import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from relaylog.aws import layout
from relaylog.aws.proxy import create_app
from relaylog.gateway.cache import CachedResponse
from relaylog.gateway.cache.dynamo import DynamoCacheStore
from relaylog.gateway.counters.dynamo import DynamoCounters
from relaylog.gateway.ratelimit import RateLimiter, parse_policy
from relaylog.providers.registry import PROVIDERS
from relaylog.standin import StandIn

from tests.support.aws import REGION, Stack
from tests.support.lambda_emulator import LambdaEmulator
from tests.support.lambda_runtime import InProcessRuntime

pytestmark = pytest.mark.aws

SECRET = "sk-test-never-logged"
PROVIDER_KEY = "sk-test-gateway-aws"


def _entry(size: int = 64, ttl_s: float = 3600.0, text: str = "x") -> CachedResponse:
    chunk = (f"data: {text} " * (size // (len(text) + 7) + 1)).encode()[:size]
    return CachedResponse(
        status=200,
        headers=[(b"content-type", b"text/event-stream"), (b"x-request-id", b"abc")],
        chunks=[chunk[: size // 2], chunk[size // 2 :]],
        offsets_ms=[0.0, 12.5],
        withheld=[b"data: {usage}\n\n"],
        usage_injected=True,
        content_type="text/event-stream",
        content_encoding=None,
        expires_at=time.time() + ttl_s,
    )


def _item(stack: Stack, key: str, slot: int) -> dict[str, Any] | None:
    found: dict[str, Any] | None = (
        stack.client("dynamodb")
        .get_item(TableName=stack.table, Key={"pk": {"S": layout.cache_pk(key)}, "sk": {"S": layout.cache_sk(slot)}})
        .get("Item")
    )
    return found


def _cache(stack: Stack, **kwargs: Any) -> DynamoCacheStore:
    return DynamoCacheStore(stack.table, stack.bucket, stack.client("dynamodb"), stack.client("s3"), **kwargs)


def _error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} for {SECRET}"}}, operation)


class Failing:
    """A client whose every call raises `error` (or sleeps `delay_s` first, then answers from `real`)."""

    def __init__(self, error: Exception | None = None, delay_s: float = 0.0, real: Any = None) -> None:
        self.error, self.delay_s, self.real, self.calls = error, delay_s, real, 0

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(**kwargs: Any) -> Any:
            self.calls += 1
            time.sleep(self.delay_s)
            if self.error is not None:
                raise self.error
            return getattr(self.real, name)(**kwargs)

        return call


async def _timed(call: Any) -> tuple[Any, bool]:
    """The call's result and whether it came within half a second. (asyncio.run then waits for the
    abandoned thread, so no call outlives the test's moto mock.)"""
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started < 0.5


# -- cache -------------------------------------------------------------------------------------


def test_a_small_entry_lives_in_its_item(aws_stack: Stack) -> None:
    cache = _cache(aws_stack)
    entry = _entry(2000)
    asyncio.run(cache.put("k1", 0, entry))
    item = _item(aws_stack, "k1", 0)
    assert item is not None and "entry" in item and "object" not in item
    assert item[layout.TTL_ATTRIBUTE] == {"N": str(int(entry.expires_at))}
    assert aws_stack.objects(layout.CACHE_PREFIX) == []
    assert asyncio.run(cache.get("k1", 0)) == entry
    # Another slot of the bucket, and another key, are empty.
    assert asyncio.run(cache.get("k1", 1)) is None
    assert asyncio.run(cache.get("k2", 0)) is None


def test_a_large_entry_goes_to_s3_and_its_item_points_at_it(aws_stack: Stack) -> None:
    cache = _cache(aws_stack)
    entry = _entry(450_000)  # over DynamoDB's 400 KB item limit
    asyncio.run(cache.put("big", 3, entry))
    item = _item(aws_stack, "big", 3)
    assert item is not None and "entry" not in item
    assert item["object"] == {"S": "cache/big/3"} and aws_stack.objects(layout.CACHE_PREFIX) == ["cache/big/3"]
    assert asyncio.run(cache.get("big", 3)) == entry
    # The threshold is the encoded size: a lower inline_max moves a small entry to S3 too.
    asyncio.run(_cache(aws_stack, inline_max=100).put("small", 0, _entry(200)))
    assert aws_stack.objects(layout.CACHE_PREFIX) == ["cache/big/3", "cache/small/0"]


def test_an_expired_entry_is_a_miss_before_dynamodb_deletes_it(aws_stack: Stack) -> None:
    cache = _cache(aws_stack)
    asyncio.run(cache.put("k", 0, _entry()))
    assert asyncio.run(cache.get("k", 0)) is not None
    # TTL deletion is lazy: the item is still there after its time.
    past = time.time() - 5
    aws_stack.client("dynamodb").update_item(
        TableName=aws_stack.table,
        Key={"pk": {"S": layout.cache_pk("k")}, "sk": {"S": layout.cache_sk(0)}},
        UpdateExpression="SET #u = :past",
        ExpressionAttributeNames={"#u": "until"},
        ExpressionAttributeValues={":past": {"N": str(past)}},
    )
    assert _item(aws_stack, "k", 0) is not None
    assert asyncio.run(cache.get("k", 0)) is None
    # An entry already past its time is not written at all.
    asyncio.run(cache.put("old", 0, _entry(ttl_s=-1)))
    assert _item(aws_stack, "old", 0) is None


def test_an_entry_expiring_between_put_and_get_is_a_miss(aws_stack: Stack) -> None:
    cache = _cache(aws_stack)
    asyncio.run(cache.put("soon", 0, _entry(ttl_s=0.3)))
    assert asyncio.run(cache.get("soon", 0)) is not None
    time.sleep(0.4)
    assert asyncio.run(cache.get("soon", 0)) is None


def test_s3_unavailable_is_a_miss_and_a_warning(aws_stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    cache = _cache(aws_stack)
    entry = _entry(450_000, text="the answer is 42")
    asyncio.run(cache.put("big", 0, entry))
    s3 = aws_stack.client("s3")
    s3.delete_object(Bucket=aws_stack.bucket, Key="cache/big/0")
    with caplog.at_level(logging.WARNING, logger="relaylog.gateway.cache.dynamo"):
        assert asyncio.run(cache.get("big", 0)) is None  # the object is gone: NoSuchKey
        s3.delete_bucket(Bucket=aws_stack.bucket)
        assert asyncio.run(cache.get("big", 0)) is None  # the bucket is gone: NoSuchBucket
        asyncio.run(cache.put("big2", 0, entry))  # and writing does not raise either
    assert _item(aws_stack, "big2", 0) is None  # no item pointing at an object that was never written
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3
    assert "NoSuchKey" in caplog.records[0].getMessage() and "NoSuchBucket" in caplog.records[1].getMessage()
    assert not any("answer" in r.getMessage() or "big" in r.getMessage() for r in caplog.records)


def test_dynamodb_errors_are_misses_and_dropped_writes(aws_stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    throttled = Failing(_error("ProvisionedThroughputExceededException", "GetItem"))
    down = Failing(EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"))
    for client in (throttled, down):
        cache = DynamoCacheStore(aws_stack.table, aws_stack.bucket, client, aws_stack.client("s3"))
        with caplog.at_level(logging.WARNING, logger="relaylog.gateway.cache.dynamo"):
            assert asyncio.run(cache.get("k", 0)) is None
            asyncio.run(cache.put("k", 0, _entry()))
        assert client.calls == 2
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4 and "ProvisionedThroughputExceededException" in messages[0]
    assert "EndpointConnectionError" in messages[2]
    assert not any(SECRET in m for m in messages)  # the code is logged, never the message


def test_a_slow_lookup_is_a_miss_within_the_timeout(aws_stack: Stack) -> None:
    real = aws_stack.client("dynamodb")
    asyncio.run(_cache(aws_stack).put("k", 0, _entry()))
    slow = DynamoCacheStore(aws_stack.table, aws_stack.bucket, Failing(delay_s=1.0, real=real), timeout_s=0.2)
    assert asyncio.run(_timed(slow.get("k", 0))) == (None, True)


def test_an_unreadable_item_is_a_miss(aws_stack: Stack) -> None:
    aws_stack.client("dynamodb").put_item(
        TableName=aws_stack.table,
        Item={
            "pk": {"S": layout.cache_pk("torn")},
            "sk": {"S": layout.cache_sk(0)},
            "until": {"N": str(time.time() + 60)},
            "entry": {"B": b'{"format": 1, "chunks": [100]'},
        },
    )
    assert asyncio.run(_cache(aws_stack).get("torn", 0)) is None


# -- counters ----------------------------------------------------------------------------------


def _counter(stack: Stack, counter: str) -> dict[str, Any] | None:
    return stack.rollup(layout.rate_pk(counter), layout.RATE_SK)


def test_requests_are_counted_up_to_the_limit(aws_stack: Stack) -> None:
    counters = DynamoCounters(aws_stack.table, aws_stack.client("dynamodb"))
    until = time.time() + 60
    taken = [asyncio.run(counters.take("c", 1, 3, until)) for _ in range(5)]
    assert taken == [(True, 1.0), (True, 2.0), (True, 3.0), (False, 3.0), (False, 3.0)]
    stored = _counter(aws_stack, "c")
    assert stored is not None and stored["n"] == 3 and stored[layout.TTL_ATTRIBUTE] == int(until)
    # Below the limit is not enough: the amount must fit too.
    assert asyncio.run(counters.take("pair", 2, 3, until)) == (True, 2.0)
    assert asyncio.run(counters.take("pair", 2, 3, until)) == (False, 2.0)
    assert asyncio.run(counters.take("pair", 1, 3, until)) == (True, 3.0)
    # An amount larger than the limit never fits, not even in an empty window.
    assert asyncio.run(counters.take("empty", 2, 1, until)) == (False, 0.0)
    assert _counter(aws_stack, "empty") is None


def test_cents_are_checked_before_and_deducted_after(aws_stack: Stack) -> None:
    counters = DynamoCounters(aws_stack.table, aws_stack.client("dynamodb"))
    until = time.time() + 60
    assert asyncio.run(counters.take("cents", 0, 1.0, until)) == (True, 0.0)  # below the limit: allowed
    for _ in range(3):
        counters.add("cents", 0.1, until)
    # Decimal arithmetic: three 0.1s are 0.3, not 0.30000000000000004.
    assert asyncio.run(counters.take("cents", 0, 1.0, until)) == (True, 0.3)
    for _ in range(7):
        counters.add("cents", 0.1, until)
    assert asyncio.run(counters.take("cents", 0, 1.0, until)) == (False, 1.0)  # at the limit: refused
    counters.add("tiny", 1.23456789012, until)  # rounded to a nano-cent
    stored = _counter(aws_stack, "tiny")
    assert stored is not None and str(stored["n"]) == "1.23456789"


def test_the_rate_limiter_on_dynamodb(aws_stack: Stack) -> None:
    limiter = RateLimiter(DynamoCounters(aws_stack.table, aws_stack.client("dynamodb")))
    policy = parse_policy("2;w=60")
    decisions = [asyncio.run(limiter.check(policy, "key-1", None)) for _ in range(3)]
    assert [(d.allowed, d.remaining) for d in decisions] == [(True, 1), (True, 0), (False, 0)]
    assert asyncio.run(limiter.check(policy, "key-2", None)).allowed  # another caller, another counter
    cents = parse_policy("5;w=60;u=cents")
    first = asyncio.run(limiter.check(cents, "key-1", None))
    limiter.deduct(first, 0.06)  # six cents
    after = asyncio.run(limiter.check(cents, "key-1", None))
    assert (after.allowed, after.remaining) == (False, -1)


@pytest.fixture
def serialised_updates(aws_stack: Stack) -> Iterator[None]:
    """DynamoDB serialises writes to one item: a conditional update reads, checks and writes as one
    step. moto runs each request on the caller's thread with no such lock, so two threads can both
    read n=99 and both add. This puts the lock back, around moto's update_item, so the test checks
    our condition expression rather than moto's lack of isolation."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]
    update = backend.update_item
    lock = threading.Lock()

    def locked(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return update(*args, **kwargs)

    # Not monkeypatch: its undo runs after moto's reset has replaced the backend's attributes.
    # patch.object undoes at this fixture's end, by deleting the instance attribute it set.
    with mock.patch.object(backend, "update_item", locked):
        yield


@pytest.mark.usefixtures("serialised_updates")
def test_concurrent_takes_grant_exactly_the_quota(aws_stack: Stack) -> None:
    counters = DynamoCounters(aws_stack.table, aws_stack.client("dynamodb"))
    until = time.time() + 60
    granted: list[bool] = []
    start = threading.Barrier(16)

    def worker() -> None:
        async def takes() -> list[bool]:
            return [(await counters.take("hot", 1, 100, until))[0] for _ in range(25)]

        start.wait()
        granted.extend(asyncio.run(takes()))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(granted) == 400 and granted.count(True) == 100
    stored = _counter(aws_stack, "hot")
    assert stored is not None and stored["n"] == 100


def test_a_limiter_outage_fails_open(aws_stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    until = time.time() + 60
    throttled = Failing(_error("ThrottlingException", "UpdateItem"))
    down = Failing(EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com"))
    with caplog.at_level(logging.WARNING, logger="relaylog.gateway.counters.dynamo"):
        for client in (throttled, down):
            counters = DynamoCounters(aws_stack.table, client)
            assert asyncio.run(counters.take("c", 1, 10, until)) == (True, 1)
            counters.add("c", 2.5, until)  # dropped, not raised
        slow = DynamoCounters(aws_stack.table, Failing(delay_s=1.0, real=aws_stack.client("dynamodb")), timeout_s=0.2)
        assert asyncio.run(_timed(slow.take("c", 1, 10, until))) == ((True, 1), True)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5 and all("fail-open" in m or "dropped" in m for m in messages)
    assert "ThrottlingException" in messages[0] and "EndpointConnectionError" in messages[2]
    assert not any(SECRET in m for m in messages)


# -- end to end: the openai SDK → Function URL (emulator) → relaylog's runtime → relay → stand-in --


@dataclass
class Deployed:
    stack: Stack
    emulator: LambdaEmulator
    runtime: InProcessRuntime
    standin: StandIn

    def client(self, api_key: str = PROVIDER_KEY, **headers: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.emulator.url + "/v1", api_key=api_key, max_retries=0, timeout=20.0, default_headers=headers
        )

    def records(self) -> dict[str, dict[str, Any]]:
        """Every record Firehose delivered (moto: one plain object per PutRecordBatch), by request id."""
        self.emulator.settle()  # the runtime sends records before it asks for more work
        s3 = self.stack.client("s3")
        found: dict[str, dict[str, Any]] = {}
        for key in self.stack.objects(layout.RAW_PREFIX) + self.stack.objects(layout.SPOOL_PREFIX):
            data = s3.get_object(Bucket=self.stack.bucket, Key=key)["Body"].read()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            for line in data.splitlines():
                if line.strip():
                    record = orjson.loads(line)
                    found[record["request_id"]] = record
        return found

    def upstream_calls(self, marker: str) -> int:
        return sum(1 for r in self.standin.requests if marker.encode() in r.body)

    def items(self, prefix: str) -> list[dict[str, Any]]:
        pages = self.stack.client("dynamodb").get_paginator("scan").paginate(TableName=self.stack.table)
        return [i for page in pages for i in page["Items"] if i["pk"]["S"].startswith(prefix)]


@pytest.fixture
def deployed(aws_stack: Stack, standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployed]:
    for name in PROVIDERS:
        monkeypatch.setenv(f"RELAYLOG_UPSTREAM_{name.upper()}", standin.url)
    monkeypatch.setenv("RELAYLOG_TARGET_ALLOWLIST", "127.0.0.1")  # fallbacks point at the stand-in
    standin.fault = None
    with LambdaEmulator() as emulator, InProcessRuntime(emulator, create_app()) as runtime:
        yield Deployed(aws_stack, emulator, runtime, standin)


def _ask(marker: str) -> list[Any]:
    return [{"role": "user", "content": f"Say hello ({marker})"}]


CACHE = {"Helicone-Cache-Enabled": "true"}


def test_e2e_a_repeated_call_is_a_cache_hit_from_dynamodb(deployed: Deployed) -> None:
    marker = uuid.uuid4().hex
    client = deployed.client(**CACHE)
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
    second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))

    assert (first.headers["helicone-cache"], second.headers["helicone-cache"]) == ("MISS", "HIT")
    assert second.headers["helicone-cache-bucket-idx"] == "0"
    assert second.parse().model_dump() == first.parse().model_dump()
    assert first.http_response.content == second.http_response.content  # the same bytes
    assert deployed.upstream_calls(marker) == 1
    (item,) = deployed.items(layout.CACHE_PK + "#")
    assert "entry" in item and not deployed.stack.objects(layout.CACHE_PREFIX)  # small: inline
    week = time.time() + 7 * 86400  # the default TTL
    assert week - 60 < int(item[layout.TTL_ATTRIBUTE]["N"]) <= week

    records = deployed.records()
    missed, hit = records[first.headers["helicone-id"]], records[second.headers["helicone-id"]]
    assert missed["cache_status"] == "MISS" and missed["cost_usd"] > 0
    assert (hit["cache_status"], hit["cost_usd"], hit["cost_source"]) == ("HIT", 0.0, "cache_hit")
    assert hit["attempt_count"] == 0 and hit["properties"]["cache_saved_usd"] == repr(missed["cost_usd"])
    for field in ("status", "input_tokens", "output_tokens", "response_model", "response_body"):
        assert hit[field] == missed[field], field


def test_e2e_a_cached_stream_is_replayed_chunk_for_chunk(deployed: Deployed) -> None:
    marker = uuid.uuid4().hex
    # Paced events arrive one by one, so each is its own chunk on every hop.
    client = deployed.client(**CACHE, **{"x-standin-fault": "chunk-delay-ms=5"})
    answers, outcomes = [], []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker), stream=True)
        answers.append((raw.headers["helicone-cache"], raw.headers["helicone-id"], list(raw.parse())))
        deployed.emulator.settle()
        outcomes.append(deployed.emulator.outcomes[-1])
    (miss, miss_id, missed), (hit, hit_id, replayed) = answers
    assert (miss, hit) == ("MISS", "HIT")
    assert [c.model_dump() for c in replayed] == [c.model_dump() for c in missed]
    text = "".join(c.choices[0].delta.content or "" for c in replayed if c.choices)
    assert text.startswith("Hello!")
    # What the runtime streamed: the same bytes in the same chunks.
    assert len(outcomes[0].chunks) > 3 and outcomes[1].chunks == outcomes[0].chunks
    assert deployed.upstream_calls(marker) == 1
    records = deployed.records()
    assert records[hit_id]["stream"] is True and records[hit_id]["cache_status"] == "HIT"
    assert records[hit_id]["cost_usd"] == 0.0 and records[hit_id]["cost_source"] == "cache_hit"
    assert records[hit_id]["output_tokens"] == records[miss_id]["output_tokens"] > 0


def test_e2e_a_large_cached_answer_is_kept_in_s3(deployed: Deployed) -> None:
    store = deployed.runtime.app.services.cache
    store.inline_max = 1000  # the long answer's stream is a few KB: over this, so it goes to S3
    marker = uuid.uuid4().hex
    client = deployed.client(**CACHE)
    texts = []
    for _ in range(2):
        stream = client.chat.completions.create(model="standin-long", messages=_ask(marker), stream=True)
        texts.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    assert texts[0] == texts[1] and len(texts[0]) > 1000
    assert deployed.upstream_calls(marker) == 1
    (item,) = deployed.items(layout.CACHE_PK + "#")
    assert "entry" not in item and deployed.stack.objects(layout.CACHE_PREFIX) == [item["object"]["S"]]


def test_e2e_over_the_rate_limit_is_a_429_the_provider_never_sees(deployed: Deployed) -> None:
    marker = uuid.uuid4().hex
    client = deployed.client(**{"Helicone-RateLimit-Policy": "2;w=60"})
    remaining = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
        remaining.append(raw.headers["helicone-ratelimit-remaining"])
    assert remaining == ["1", "0"]
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=_ask(marker))
    response = refused.value.response
    assert response.headers["helicone-ratelimit-limit"] == "2"
    assert response.headers["helicone-ratelimit-remaining"] == "0"
    assert response.headers["helicone-ratelimit-policy"] == "2;w=60;u=request"
    assert 1 <= int(response.headers["helicone-ratelimit-reset"]) <= 60
    assert response.json()["error"]["type"] == "rate_limited"
    assert deployed.upstream_calls(marker) == 2
    (counter,) = deployed.items(layout.RATE_PK + "#")
    assert counter["n"] == {"N": "2"}
    # Another caller (another provider key) has a counter of its own.
    deployed.client("sk-test-other-tenant", **{"Helicone-RateLimit-Policy": "2;w=60"}).chat.completions.create(
        model="gpt-4o-mini", messages=_ask(marker)
    )
    record = deployed.records()[response.headers["helicone-id"]]
    assert (record["status"], record["error_type"], record["attempt_count"]) == (429, "rate_limited", 0)


def test_e2e_a_cents_limit_is_charged_with_the_real_cost(deployed: Deployed) -> None:
    marker = uuid.uuid4().hex
    # A tiny call costs about a thousandth of a cent: one call spends this whole budget.
    client = deployed.client(**{"Helicone-RateLimit-Policy": "0.0001;w=60;u=cents"})
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=_ask(marker))
    cost = deployed.records()[first.headers["helicone-id"]]["cost_usd"]
    (counter,) = deployed.items(layout.RATE_PK + "#")
    assert Decimal(counter["n"]["N"]) == Decimal(repr(cost * 100)).quantize(Decimal("1e-9"))
    assert deployed.upstream_calls(marker) == 1


RETRY = {"Helicone-Retry-Enabled": "true", "Helicone-Retry-Num": "3", "Helicone-Retry-Min-Timeout": "10",
         "Helicone-Retry-Max-Timeout": "50"}  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
def test_e2e_retries_until_the_provider_answers(deployed: Deployed, stream: bool) -> None:
    marker = uuid.uuid4().hex
    fault = f"status=503;times=2;id={marker}"
    client = deployed.client(**RETRY, **{"x-standin-fault": fault})
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker), stream=stream)
    result = raw.parse()
    chunks = list(result) if stream else None
    assert raw.status_code == 200
    assert chunks is None or chunks[-1].choices == [] or chunks[-1].choices[0].finish_reason == "stop"
    assert deployed.upstream_calls(marker) == 3
    record = deployed.records()[raw.headers["helicone-id"]]
    assert (record["status"], record["attempt_count"], record["error_type"]) == (200, 3, None)
    assert [a["status"] for a in orjson.loads(record["attempts"])] == [503, 503, 200]


def test_e2e_retries_give_up_with_the_providers_answer(deployed: Deployed) -> None:
    marker = uuid.uuid4().hex
    client = deployed.client(**RETRY, **{"x-standin-fault": f"status=503;times=9;id={marker}"})
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="gpt-4o-mini", messages=_ask(marker))
    assert failed.value.status_code == 503
    assert deployed.upstream_calls(marker) == 4  # the call and three retries
    record = deployed.records()[failed.value.response.headers["helicone-id"]]
    assert (record["status"], record["attempt_count"]) == (503, 4)
    assert [a["status"] for a in orjson.loads(record["attempts"])] == [503] * 4


def test_e2e_a_fallback_answers_when_the_first_target_fails(deployed: Deployed) -> None:
    marker = uuid.uuid4().hex
    fallbacks = [
        {"target-url": deployed.standin.url, "headers": {"x-standin-fault": "status=500"}, "onCodes": [500]},
        {
            "target-url": deployed.standin.url,
            "bodyKeyOverride": {"model": "gpt-4o"},
            "onCodes": [{"from": 500, "to": 599}],
        },
    ]
    client = deployed.client(**{"Helicone-Fallbacks": orjson.dumps(fallbacks).decode()})
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
    assert raw.headers["helicone-fallback-index"] == "1"
    assert raw.parse().model.startswith("gpt-4o-")  # the override's model answered
    assert deployed.upstream_calls(marker) == 2
    record = deployed.records()[raw.headers["helicone-id"]]
    assert (record["status"], record["fallback_index"], record["attempt_count"]) == (200, 1, 2)
    assert [a["status"] for a in orjson.loads(record["attempts"])] == [500, 200]
    # A target off the allow-list is refused before anything is called.
    off_list = [{"target-url": "https://example.com", "onCodes": [500]}]
    with pytest.raises(openai.PermissionDeniedError):
        deployed.client(**{"Helicone-Fallbacks": orjson.dumps(off_list).decode()}).chat.completions.create(
            model="gpt-4o-mini", messages=_ask(marker)
        )
    assert deployed.upstream_calls(marker) == 2
