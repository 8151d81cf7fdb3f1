"""Helicone-RateLimit-Policy and per-key limits: over the quota a call gets relaylog's own 429
with the Helicone-RateLimit-* headers, the provider is never called, and a record is written;
under concurrency exactly the quota gets through."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy


@pytest.fixture(scope="module")
def proxy(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    standin.fault = None
    with RunningProxy(tmp_path_factory.mktemp("gateway-ratelimit"), standin.url) as running:
        yield running


def _client(proxy: RunningProxy, key: str | None = None, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=proxy.url + "/v1", api_key=key or f"sk-test-{uuid.uuid4().hex}", max_retries=0, default_headers=headers
    )


def _ask(marker: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Say hello ({marker})"}]


def _upstream_calls(standin: StandIn, marker: str) -> int:
    return sum(1 for r in standin.requests if marker.encode() in r.body)


def test_quota_of_requests_then_429_with_headers_and_a_record(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    client = _client(proxy, **{"Helicone-RateLimit-Policy": "3;w=60"})
    remaining = []
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
        remaining.append(raw.headers["helicone-ratelimit-remaining"])
        assert raw.headers["helicone-ratelimit-limit"] == "3"
        assert raw.headers["helicone-ratelimit-policy"] == "3;w=60;u=request"
    assert remaining == ["2", "1", "0"]

    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=_ask(marker))
    response = caught.value.response
    assert response.status_code == 429
    assert response.headers["helicone-ratelimit-remaining"] == "0"
    assert 1 <= int(response.headers["helicone-ratelimit-reset"]) <= 60
    assert response.headers["retry-after"] == response.headers["helicone-ratelimit-reset"]
    error = response.json()["error"]
    assert error["type"] == "rate_limited" and "3 requests per 60 s" in error["message"]
    assert _upstream_calls(standin, marker) == 3

    record = proxy.record(response.headers["helicone-id"])
    assert record["status"] == 429 and record["error_type"] == "rate_limited"
    assert record["attempt_count"] == 0 and record["upstream_ms"] is None
    assert marker in record["request_body"]


def test_each_caller_and_segment_has_its_own_counter(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    policy = {"Helicone-RateLimit-Policy": "1;w=60;s=user"}
    key = f"sk-test-{uuid.uuid4().hex}"
    for user in ("ann", "bob"):
        _client(proxy, key, **policy, **{"Helicone-User-Id": user}).chat.completions.create(
            model="gpt-4o-mini", messages=_ask(marker)
        )
    with pytest.raises(openai.RateLimitError):
        _client(proxy, key, **policy, **{"Helicone-User-Id": "ann"}).chat.completions.create(
            model="gpt-4o-mini", messages=_ask(marker)
        )
    # Another provider key is another caller, with a counter of its own.
    _client(proxy, **policy, **{"Helicone-User-Id": "ann"}).chat.completions.create(
        model="gpt-4o-mini", messages=_ask(marker)
    )

    by_team = {"Helicone-RateLimit-Policy": "1;w=60;s=team"}
    for team in ("red", "blue"):
        _client(proxy, key, **by_team, **{"Helicone-Property-Team": team}).chat.completions.create(
            model="gpt-4o-mini", messages=_ask(marker)
        )
    with pytest.raises(openai.RateLimitError):
        _client(proxy, key, **by_team, **{"Helicone-Property-Team": "red"}).chat.completions.create(
            model="gpt-4o-mini", messages=_ask(marker)
        )
    assert _upstream_calls(standin, marker) == 5


def test_cents_are_charged_with_the_real_cost_after_the_call(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    # A thousandth of a cent: the first call is let through, its real cost then uses it up.
    client = _client(proxy, **{"Helicone-RateLimit-Policy": "0.001;w=60;u=cents"})
    first = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=_ask(marker))
    assert first.headers["helicone-ratelimit-remaining"] == "0.001"
    cost = proxy.record(first.headers["helicone-id"])["cost_usd"]
    assert cost * 100 > 0.001
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=_ask(marker))
    assert caught.value.response.headers["helicone-ratelimit-remaining"] == "0"
    assert _upstream_calls(standin, marker) == 1


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ("", "quota"),
        ("abc;w=60", "not a number"),
        ("10", "window"),
        ("10;w=0", "w=0"),
        ("10;w=60;u=dollars", "u=dollars"),
        ("10;w=60;x=1", "unknown parameter"),
        ("10;w=60;w=30", "twice"),
        ("2.5;w=60", "whole number"),
        ("-1;w=60", "greater than 0"),
    ],
)
def test_invalid_policies_are_refused_with_the_problem_named(
    proxy: RunningProxy, standin: StandIn, policy: str, words: str
) -> None:
    marker = uuid.uuid4().hex
    with pytest.raises(openai.BadRequestError) as caught:
        _client(proxy, **{"Helicone-RateLimit-Policy": policy}).chat.completions.create(
            model="gpt-4o-mini", messages=_ask(marker)
        )
    error = caught.value.response.json()["error"]
    assert error["type"] == "invalid_request" and words in error["message"]
    assert _upstream_calls(standin, marker) == 0


def test_concurrent_calls_never_exceed_the_quota(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    headers = {"authorization": "Bearer sk-test-racer", "Helicone-RateLimit-Policy": "25;w=300"}
    body = {"model": "gpt-4o-mini", "messages": _ask(marker)}

    async def run() -> list[int]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=proxy.url, limits=limits, timeout=30) as client:
            calls = [client.post("/v1/chat/completions", json=body, headers=headers) for _ in range(80)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    statuses = asyncio.run(run())
    assert statuses.count(200) == 25 and statuses.count(429) == 55
    assert _upstream_calls(standin, marker) == 25


def test_a_relaylog_keys_own_limit_applies_without_any_header(
    standin: StandIn, tmp_path_factory: pytest.TempPathFactory
) -> None:
    marker = uuid.uuid4().hex
    with RunningProxy(tmp_path_factory.mktemp("gateway-keylimit"), standin.url) as proxy:
        limited, _ = proxy.keys.create("limited", limit="2;w=60")
        free, _ = proxy.keys.create("free")

        def call(secret: str) -> int:
            client = _client(proxy, **{"Helicone-Auth": f"Bearer {secret}"})
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=_ask(marker))
                return 200
            except openai.RateLimitError as error:
                assert error.response.json()["error"]["type"] == "rate_limited"
                return 429

        deadline = time.monotonic() + 5  # the key file is re-read at most once a second
        while proxy.app.keys.active_count() < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [call(limited) for _ in range(3)] == [200, 200, 429]
        assert [call(free) for _ in range(3)] == [200, 200, 200]
        assert _upstream_calls(standin, marker) == 5
