"""Helicone-Retry-* and Helicone-Fallbacks through the real SDKs: failures before the first byte
are retried or handed to the next target, every provider call is in the record, and whatever
the provider finally answers is relayed unchanged."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import TypedDict

import openai
import orjson
import pytest
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy

# Short waits keep the tests quick; the backoff arithmetic itself is Helicone's.
RETRY = {"Helicone-Retry-Enabled": "true", "Helicone-Retry-Min-Timeout": "20", "Helicone-Retry-Max-Timeout": "2000"}


@pytest.fixture(scope="module")
def proxy(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    standin.fault = None
    host = standin.url.split("://", 1)[1]
    with RunningProxy(tmp_path_factory.mktemp("gateway-retry"), standin.url, target_allowlist=(host,)) as running:
        yield running


def _client(proxy: RunningProxy, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test-retry", max_retries=0, default_headers=headers)


def _ask(marker: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Say hello ({marker})"}]


def _upstream(standin: StandIn, marker: str) -> list[dict[str, object]]:
    return [r.json() for r in standin.requests if marker.encode() in r.body]


def _fault(spec: str) -> str:
    return f"{spec};id={uuid.uuid4().hex}"


class Attempt(TypedDict):
    """One object of a record's `attempts` JSON array (relaylog/record.py)."""

    target: int | None
    status: int
    error_type: str | None
    ms: float
    wait_ms: float


def _attempts(record: dict[str, object]) -> list[Attempt]:
    assert isinstance(record["attempts"], str)
    attempts: list[Attempt] = orjson.loads(record["attempts"])
    return attempts


def test_5xx_twice_then_success_is_retried_and_every_attempt_recorded(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    client = _client(proxy, **RETRY, **{"x-standin-fault": _fault("status=503;times=2")})
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
    assert raw.status_code == 200 and raw.parse().choices[0].message.content
    assert len(_upstream(standin, marker)) == 3

    record = proxy.record(raw.headers["helicone-id"])
    assert record["status"] == 200 and record["error_type"] is None and record["attempt_count"] == 3
    attempts = _attempts(record)
    assert [a["status"] for a in attempts] == [503, 503, 200]
    assert all(a["target"] is None for a in attempts)
    assert attempts[0]["wait_ms"] >= 10 and attempts[1]["wait_ms"] >= attempts[0]["wait_ms"] / 2
    assert attempts[2]["wait_ms"] == 0


def test_retry_after_is_honoured(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    client = _client(proxy, **RETRY, **{"x-standin-fault": _fault("status=429;retry-after=1;times=1")})
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
    assert raw.status_code == 200 and time.perf_counter() - started >= 1.0
    attempts = _attempts(proxy.record(raw.headers["helicone-id"]))
    assert [a["status"] for a in attempts] == [429, 200] and attempts[0]["wait_ms"] >= 1000


def test_a_retry_after_beyond_max_timeout_relays_the_429_at_once(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    client = _client(proxy, **RETRY, **{"x-standin-fault": _fault("status=429;retry-after=30;times=1")})
    started = time.perf_counter()
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=_ask(marker))
    assert time.perf_counter() - started < 5
    response = caught.value.response
    assert response.headers["retry-after"] == "30"
    assert response.json()["error"]["type"] == "requests"  # the provider's own body, unchanged
    assert proxy.record(response.headers["helicone-id"])["attempt_count"] == 1


def test_exhausted_retries_relay_the_last_answer_unchanged(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    client = _client(proxy, **RETRY, **{"Helicone-Retry-Num": "2", "x-standin-fault": _fault("status=500;times=10")})
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=_ask(marker))
    response = caught.value.response
    record = proxy.record(response.headers["helicone-id"])
    assert record["status"] == 500 and record["error_type"] == "upstream_error"
    assert [a["status"] for a in _attempts(record)] == [500, 500, 500]
    assert len(_upstream(standin, marker)) == 3


def test_a_connection_reset_before_any_byte_is_retried(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    client = _client(proxy, **RETRY, **{"x-standin-fault": _fault("reset;times=1")})
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
    attempts = _attempts(proxy.record(raw.headers["helicone-id"]))
    assert [(a["status"], a["error_type"]) for a in attempts] == [(0, "upstream_unreachable"), (200, None)]


def test_a_stream_cut_after_its_first_byte_is_not_retried(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    client = _client(proxy, **RETRY, **{"x-standin-fault": _fault("drop-after=2;times=1")})
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker), stream=True)
    with pytest.raises(openai.APIError):
        list(raw.parse())
    record = proxy.record(raw.headers["helicone-id"])
    assert record["attempt_count"] == 1 and record["error_type"] == "upstream_disconnect"
    assert len(_upstream(standin, marker)) == 1


def test_without_retry_enabled_a_503_is_relayed_after_one_call(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    client = _client(proxy, **{"x-standin-fault": _fault("status=503;times=1")})
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=_ask(marker))
    record = proxy.record(caught.value.response.headers["helicone-id"])
    assert record["attempt_count"] == 1 and record["attempts"] is None


def test_bad_retry_headers_are_refused(proxy: RunningProxy, standin: StandIn) -> None:
    for headers, words in (
        ({"Helicone-Retry-Num": "many"}, "Helicone-Retry-Num"),
        ({"Helicone-Retry-Factor": "0.1"}, "Helicone-Retry-Factor"),
        ({"Helicone-Retry-Min-Timeout": "5000", "Helicone-Retry-Max-Timeout": "10"}, "Max-Timeout"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            _client(proxy, **{"Helicone-Retry-Enabled": "true", **headers}).chat.completions.create(
                model="gpt-4o-mini", messages=_ask("bad")
            )
        assert words in caught.value.response.json()["error"]["message"]


# -- fallbacks -----------------------------------------------------------------------------


def _fallbacks(*entries: dict[str, object]) -> dict[str, str]:
    return {"Helicone-Fallbacks": orjson.dumps(list(entries)).decode()}


def test_a_failing_first_target_falls_back_to_the_next(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    plan = _fallbacks(
        {
            "target-url": standin.url,
            "headers": {"x-standin-fault": "status=500"},
            "onCodes": [{"from": 500, "to": 599}],
        },
        {
            "target-url": standin.url,
            "headers": {"authorization": "Bearer sk-test-backup"},
            "onCodes": [429],
            "bodyKeyOverride": {"model": "gpt-4o"},
        },
    )
    raw = _client(proxy, **plan).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=_ask(marker))
    assert raw.headers["helicone-fallback-index"] == "1"
    assert raw.parse().model.startswith("gpt-4o")
    sent = [r for r in standin.requests if marker.encode() in r.body]
    assert [r.json()["model"] for r in sent] == ["gpt-4o-mini", "gpt-4o"]
    assert sent[0].header("authorization") == "Bearer sk-test-retry"
    assert sent[1].header("authorization") == "Bearer sk-test-backup"

    record = proxy.record(raw.headers["helicone-id"])
    assert record["fallback_index"] == 1 and record["model"] == "gpt-4o" and record["provider"] == "openai"
    assert [(a["target"], a["status"]) for a in _attempts(record)] == [(0, 500), (1, 200)]


def test_a_code_outside_on_codes_is_relayed_from_the_first_target(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    plan = _fallbacks(
        {"target-url": standin.url, "headers": {"x-standin-fault": "status=400"}, "onCodes": [429, 500]},
        {"target-url": standin.url},
    )
    with pytest.raises(openai.BadRequestError) as caught:
        _client(proxy, **plan).chat.completions.create(model="gpt-4o-mini", messages=_ask(marker))
    assert caught.value.response.headers["helicone-fallback-index"] == "0"
    assert len(_upstream(standin, marker)) == 1


def test_when_every_target_fails_the_last_answer_is_relayed(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    plan = _fallbacks(
        {"target-url": standin.url, "headers": {"x-standin-fault": "status=503"}},
        {"target-url": standin.url, "headers": {"x-standin-fault": "status=429"}},
    )
    with pytest.raises(openai.RateLimitError) as caught:
        _client(proxy, **plan).chat.completions.create(model="gpt-4o-mini", messages=_ask(marker))
    record = proxy.record(caught.value.response.headers["helicone-id"])
    assert record["fallback_index"] == 1 and [a["status"] for a in _attempts(record)] == [503, 429]


def test_retries_run_per_target_before_falling_back(proxy: RunningProxy, standin: StandIn) -> None:
    marker = uuid.uuid4().hex
    plan = _fallbacks(
        {"target-url": standin.url, "headers": {"x-standin-fault": "status=502"}},
        {"target-url": standin.url},
    )
    raw = _client(proxy, **RETRY, **{"Helicone-Retry-Num": "1"}, **plan).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=_ask(marker)
    )
    record = proxy.record(raw.headers["helicone-id"])
    assert [(a["target"], a["status"]) for a in _attempts(record)] == [(0, 502), (0, 502), (1, 200)]


@pytest.mark.parametrize(
    "url",
    ["https://evil.example.com", "http://169.254.169.254", "file:///etc/passwd", "http://127.0.0.1:1"],
)
def test_targets_off_the_allow_list_are_refused_before_any_call(
    proxy: RunningProxy, standin: StandIn, url: str
) -> None:
    marker = uuid.uuid4().hex
    plan = _fallbacks({"target-url": standin.url}, {"target-url": url})
    with pytest.raises(openai.PermissionDeniedError) as caught:
        _client(proxy, **plan).chat.completions.create(model="gpt-4o-mini", messages=_ask(marker))
    error = caught.value.response.json()["error"]
    assert error["type"] == "target_not_allowed" and "Helicone-Fallbacks[1]" in error["message"]
    assert _upstream(standin, marker) == []


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("not json", "not valid JSON"),
        ("[]", "non-empty"),
        ('[{"headers": {}}]', "target-url"),
        ('[{"target-url": "http://x", "onCodes": ["500"]}]', "onCodes"),
        ('[{"target-url": "http://x", "headers": {"x-a": "1\\r\\nx-b: 2"}}]', "line break"),
        ('[{"target-url": "http://x", "headers": {"helicone-auth": "x"}}]', "may not set"),
    ],
)
def test_malformed_fallbacks_are_refused_with_the_problem_named(
    proxy: RunningProxy, standin: StandIn, value: str, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _client(proxy, **{"Helicone-Fallbacks": value}).chat.completions.create(
            model="gpt-4o-mini", messages=_ask("bad")
        )
    assert words in caught.value.response.json()["error"]["message"]
