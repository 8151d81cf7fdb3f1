"""Helicone-Cache-*: through the real SDKs, a repeated call is answered from relaylog's cache
(the same bytes, chunk for chunk), never across tenants, and recorded as a hit that cost nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from multidict import CIMultiDict
from relaylog.gateway.cache import CachedResponse
from relaylog.gateway.cache.files import FileCacheStore
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy

KEY = "sk-test-cache-tenant-a"
CACHE = {"Helicone-Cache-Enabled": "true"}


@pytest.fixture(scope="module")
def proxy(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    standin.fault = None
    with RunningProxy(tmp_path_factory.mktemp("gateway-cache"), standin.url) as running:
        yield running


def _client(proxy: RunningProxy, key: str = KEY, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0, default_headers={**CACHE, **headers})


def _ask(marker: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Say hello ({marker})"}]


def _upstream_calls(standin: StandIn, marker: str) -> int:
    return sum(1 for r in standin.requests if marker.encode() in r.body)


def test_second_identical_call_is_a_hit_with_the_same_answer_and_a_zero_cost_record(
    proxy: RunningProxy, standin: StandIn
) -> None:
    marker = uuid.uuid4().hex
    client = _client(proxy)
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
    second = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))

    assert first.headers["helicone-cache"] == "MISS"
    assert second.headers["helicone-cache"] == "HIT"
    assert second.headers["helicone-cache-bucket-idx"] == "0"
    assert second.headers["helicone-id"] != first.headers["helicone-id"]
    assert second.parse().model_dump() == first.parse().model_dump()
    assert _upstream_calls(standin, marker) == 1

    missed = proxy.record(first.headers["helicone-id"])
    hit = proxy.record(second.headers["helicone-id"])
    assert missed["cache_status"] == "MISS" and missed["cost_usd"] > 0 and missed["attempt_count"] == 1
    assert hit["cache_status"] == "HIT"
    assert hit["cost_usd"] == 0.0 and hit["cost_source"] == "cache_hit"
    assert hit["properties"]["cache_saved_usd"] == repr(missed["cost_usd"])
    assert hit["attempt_count"] == 0 and hit["upstream_ms"] is None
    for field in ("input_tokens", "output_tokens", "response_model", "status", "response_body"):
        assert hit[field] == missed[field], field


def test_without_the_header_nothing_is_cached_and_the_record_says_so(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=KEY, max_retries=0)
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
        assert "helicone-cache" not in raw.headers
    assert _upstream_calls(standin, marker) == 2
    assert proxy.record(raw.headers["helicone-id"])["cache_status"] is None


async def _chunks(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[CIMultiDict[str], list[bytes]]:
    """The HTTP chunks of a response exactly as framed on the wire (aiohttp keeps chunk ends)."""
    async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=headers) as response:
        chunks, current = [], b""
        async for data, end_of_chunk in response.content.iter_chunks():
            current += data
            if end_of_chunk and current:
                chunks.append(current)
                current = b""
        if current:
            chunks.append(current)
        return response.headers.copy(), chunks


def test_a_cached_stream_is_replayed_with_the_original_chunk_boundaries(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    body = {"model": "gpt-4o-mini", "messages": _ask(marker), "stream": True, "stream_options": {"include_usage": True}}
    # Paced events arrive one by one, so each is its own chunk on every hop.
    auth = {"authorization": f"Bearer {KEY}", "x-standin-fault": "chunk-delay-ms=5"}
    direct_headers, direct = asyncio.run(_chunks(standin.url + "/v1/chat/completions", body, auth))
    miss_headers, missed = asyncio.run(_chunks(proxy.url + "/v1/chat/completions", body, {**auth, **CACHE}))
    hit_headers, hit = asyncio.run(_chunks(proxy.url + "/v1/chat/completions", body, {**auth, **CACHE}))

    assert len(direct) > 3
    assert missed == direct and hit == direct
    assert (miss_headers["Helicone-Cache"], hit_headers["Helicone-Cache"]) == ("MISS", "HIT")
    assert hit_headers["Content-Type"].startswith("text/event-stream")
    record = proxy.record(hit_headers["Helicone-Id"])
    assert (
        record["stream"] is True
        and record["output_tokens"] == proxy.record(miss_headers["Helicone-Id"])["output_tokens"]
    )


def test_openai_sdk_stream_hit_without_usage_asked_keeps_the_usage_relaylog_withheld(
    proxy: RunningProxy, standin: StandIn
) -> None:
    marker = uuid.uuid4().hex
    client = _client(proxy)
    texts, ids = [], []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker), stream=True)
        chunks = list(raw.parse())
        assert all(chunk.usage is None for chunk in chunks)  # the client never asked for usage
        texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
        ids.append(raw.headers["helicone-id"])
    assert texts[0] == texts[1] and texts[0]
    missed, hit = proxy.record(ids[0]), proxy.record(ids[1])
    assert hit["cache_status"] == "HIT" and hit["usage_source"] == "provider_injected"
    assert hit["output_tokens"] == missed["output_tokens"] > 0


def test_original_stream_timing_replays_the_gaps_and_the_default_does_not(proxy: RunningProxy) -> None:
    marker = uuid.uuid4().hex
    body = {"model": "gpt-4o-mini", "messages": _ask(marker), "stream": True}
    base = {"authorization": f"Bearer {KEY}", **CACHE}
    slow = {**base, "x-standin-fault": "chunk-delay-ms=40"}
    started = time.perf_counter()
    _, first = asyncio.run(_chunks(proxy.url + "/v1/chat/completions", body, slow))
    filled = time.perf_counter() - started
    started = time.perf_counter()
    _, fast = asyncio.run(_chunks(proxy.url + "/v1/chat/completions", body, base))
    fast_s = time.perf_counter() - started
    started = time.perf_counter()
    _, paced = asyncio.run(
        _chunks(proxy.url + "/v1/chat/completions", body, {**base, "Helicone-Cache-Stream-Timing": "original"})
    )
    paced_s = time.perf_counter() - started
    assert first == fast == paced
    gaps = 0.04 * (len(first) - 1)
    assert filled >= gaps and paced_s >= gaps * 0.9
    assert fast_s < gaps / 2


@pytest.mark.slow
def test_tenants_never_share_entries_even_when_racing(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    tenants = [f"sk-test-tenant-{i}" for i in range(6)]

    async def call(key: str) -> tuple[str, str, str]:
        client = openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key=key, max_retries=0, default_headers=CACHE)
        raw = await client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
        await client.close()
        return key, raw.headers["helicone-cache"], raw.parse().choices[0].message.content or ""

    async def run() -> list[list[tuple[str, str, str]]]:
        rounds = []
        for key in tenants:  # one after another: a shared entry would turn the later ones into hits
            rounds.append([await call(key)])
        for _ in range(3):  # then all at once, repeatedly
            rounds.append(list(await asyncio.gather(*(call(key) for key in tenants))))
        return rounds

    rounds = asyncio.run(run())
    assert [status for (_, status, _) in (r[0] for r in rounds[: len(tenants)])] == ["MISS"] * len(tenants)
    for later in rounds[len(tenants) :]:
        assert [status for _, status, _ in later] == ["HIT"] * len(tenants)
    assert _upstream_calls(standin, marker) == len(tenants)


@pytest.mark.slow
def test_seed_ignore_keys_and_bucket_size(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex

    def status(**headers: str) -> str:
        client = _client(proxy, **headers)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=_ask(marker), user=uuid.uuid4().hex
        )
        return raw.headers["helicone-cache"]

    # The body's `user` differs every call: ignored by name it no longer splits the cache.
    assert status() == "MISS" and status() == "MISS"
    assert status(**{"Helicone-Cache-Ignore-Keys": "user"}) == "MISS"
    assert status(**{"Helicone-Cache-Ignore-Keys": '["user"]'}) == "HIT"
    assert status(**{"Helicone-Cache-Ignore-Keys": "user", "Helicone-Cache-Seed": "s1"}) == "MISS"
    assert status(**{"Helicone-Cache-Ignore-Keys": "user", "Helicone-Cache-Seed": "s1"}) == "HIT"

    # A bucket of 3 fills its slots as calls land on empty ones and serves from the filled ones.
    bucket = {"Helicone-Cache-Ignore-Keys": "user", "Helicone-Cache-Seed": "b", "Helicone-Cache-Bucket-Max-Size": "3"}
    seen: dict[str, set[str]] = {"MISS": set(), "HIT": set()}
    for _ in range(40):
        client = _client(proxy, **bucket)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=_ask(marker), user=uuid.uuid4().hex
        )
        seen[raw.headers["helicone-cache"]].add(raw.headers["helicone-cache-bucket-idx"])
    assert seen["MISS"] == {"0", "1", "2"}  # each slot was filled once ...
    assert seen["HIT"] and seen["HIT"] <= {"0", "1", "2"}


def test_expired_entries_and_errors_are_not_served(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    client = _client(proxy, **{"Cache-Control": "max-age=1"})
    assert (
        client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker)).headers[
            "helicone-cache"
        ]
        == "MISS"
    )
    time.sleep(1.2)
    assert (
        client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker)).headers[
            "helicone-cache"
        ]
        == "MISS"
    )

    failing = _client(proxy, **{"x-standin-fault": "status=500"})
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            failing.chat.completions.create(model="gpt-4o-mini", messages=_ask(marker + "-err"))
        assert caught.value.response.headers["helicone-cache"] == "MISS"
    assert _upstream_calls(standin, marker + "-err") == 2


def test_a_client_that_leaves_mid_stream_leaves_no_entry(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    client = _client(proxy, **{"x-standin-fault": "chunk-delay-ms=50"})
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=_ask(marker), stream=True)
    next(iter(stream))
    stream.close()
    time.sleep(0.3)
    again = _client(proxy).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
    assert again.headers["helicone-cache"] == "MISS"


def test_bad_cache_headers_are_refused_with_a_reason(proxy: RunningProxy, standin: StandIn) -> None:
    for headers, words in (
        ({"Helicone-Cache-Bucket-Max-Size": "50"}, "Bucket-Max-Size"),
        ({"Helicone-Cache-Ignore-Keys": "[1, 2"}, "Ignore-Keys"),
        ({"Helicone-Cache-Stream-Timing": "slow"}, "Stream-Timing"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            _client(proxy, **headers).chat.completions.create(model="gpt-4o-mini", messages=_ask("bad"))
        error = caught.value.response.json()["error"]
        assert error["type"] == "invalid_request" and words in error["message"]


def test_anthropic_sdk_stream_is_cached_and_replayed(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    client = anthropic.Anthropic(
        base_url=proxy.url + "/anthropic", api_key="sk-ant-test", max_retries=0, default_headers=CACHE
    )
    results = []
    for _ in range(2):
        with client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": marker}]
        ) as stream:
            text = "".join(stream.text_stream)
            message = stream.get_final_message()
        results.append((text, message.usage.output_tokens, message.id))
    assert results[0] == results[1] and results[0][0]
    proxy.settle()  # the replay's record is written after its client has the answer
    records = [r for r in proxy.records() if marker in (r["request_body"] or "")]
    assert sorted(r["cache_status"] for r in records) == ["HIT", "MISS"]
    assert {r["output_tokens"] for r in records} == {results[0][1]}


def test_the_server_sweeps_expired_entries_at_start(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir = tmp_path_factory.mktemp("gateway-sweep")
    store = FileCacheStore(data_dir / "cache")
    stale = CachedResponse(200, [], [b"{}"], [0.0], [], False, "application/json", None, expires_at=time.time() - 1)
    fresh = CachedResponse(200, [], [b"{}"], [0.0], [], False, "application/json", None, expires_at=time.time() + 600)
    asyncio.run(store.put("a" * 64, 0, stale))
    asyncio.run(store.put("b" * 64, 0, fresh))
    assert len([p for p in (data_dir / "cache").rglob("*") if p.is_file()]) == 2
    with RunningProxy(data_dir, standin.url):
        deadline = time.monotonic() + 5
        while len([p for p in (data_dir / "cache").rglob("*") if p.is_file()]) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert asyncio.run(store.get("b" * 64, 0)) is not None
    assert [p.parent.name for p in (data_dir / "cache").rglob("*") if p.is_file()] == ["b" * 64]
