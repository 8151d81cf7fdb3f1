"""The query API on the local store, over HTTP on a real socket: calls made with the real `openai`
SDK through relaylog show up with their tokens, cost, user, session, properties, prompts and
scores; lists page without gaps in every sort order; and every bad input gets a 4xx JSON error.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
import tomllib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anthropic
import httpx
import openai
import orjson
import pytest
import relaylog
from relaylog import histogram
from relaylog.query.params import MAX_PAGE, Query, parse_stats
from relaylog.query.preview import PREVIEW_CHARS
from relaylog.store import columnar
from relaylog.store.local import LocalStore

from tests.support.proxy import RunningProxy, module_proxy
from tests.support.records import make_record, write_records

API_KEY = "sk-test-provider-key"


served = module_proxy("query-api")


@pytest.fixture(scope="module")
def api(served: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url + "/api/v1", timeout=30) as client:
        yield client


def chat(proxy: RunningProxy, text: str, **headers: str) -> str:
    request_id = str(uuid.uuid4())
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=API_KEY, max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}],
        extra_headers={"Helicone-Request-Id": request_id, **headers},
    )
    proxy.record(request_id)
    return request_id


@pytest.fixture(scope="module")
def calls(served: RunningProxy) -> dict[str, str]:
    """Calls of two users in one session tree, with properties and two versions of one prompt."""
    session = {"Helicone-Session-Id": "trip-42", "Helicone-Session-Name": "Trip planner"}
    greeting = '<helicone-prompt-input key="city">{}</helicone-prompt-input>'
    found = {
        "root": chat(served, "Plan a trip", **session, **{"Helicone-Session-Path": "/plan", "Helicone-User-Id": "ana"}),
        "child": chat(
            served,
            "Book hotels",
            **session,
            **{
                "Helicone-Session-Path": "/plan/hotels",
                "Helicone-User-Id": "ana",
                "Helicone-Property-Feature": "booking",
            },
        ),
        "v1a": chat(
            served,
            "Weather in " + greeting.format("Paris"),
            **{"Helicone-Prompt-Id": "weather", "Helicone-User-Id": "ben"},
        ),
        "v1b": chat(
            served,
            "Weather in " + greeting.format("Rome"),
            **{"Helicone-Prompt-Id": "weather", "Helicone-User-Id": "ben"},
        ),
        "v2": chat(served, "Forecast for " + greeting.format("Oslo"), **{"Helicone-Prompt-Id": "weather"}),
    }
    return found


def test_calls_appear_with_usage_cost_and_attribution(api: httpx.Client, calls: dict[str, str]) -> None:
    page = api.get("/requests", params={"limit": 50}).json()
    by_id = {row["request_id"]: row for row in page["data"]}
    assert set(calls.values()) <= set(by_id)
    child = by_id[calls["child"]]
    assert child["user_id"] == "ana" and child["session_id"] == "trip-42" and child["session_path"] == "/plan/hotels"
    assert child["properties"] == {"feature": "booking"}
    assert child["input_tokens"] > 0 and child["output_tokens"] > 0 and child["cost_usd"] > 0
    assert "request_body" not in child and child["scores"] == {}
    times = [row["created_at"] for row in page["data"]]
    assert times == sorted(times, reverse=True)


def test_filters(api: httpx.Client, calls: dict[str, str]) -> None:
    def ids(**params: Any) -> set[str]:
        response = api.get("/requests", params=params)
        assert response.status_code == 200, response.text
        return {row["request_id"] for row in response.json()["data"]}

    assert ids(property="Feature=booking") == {calls["child"]}  # names match case-insensitively
    assert ids(user="ben") == {calls["v1a"], calls["v1b"]}
    assert ids(session="trip-42") == {calls["root"], calls["child"]}
    assert ids(prompt="weather") == {calls["v1a"], calls["v1b"], calls["v2"]}
    assert ids(search="forecast for") == {calls["v2"]}
    assert calls["root"] in ids(status="ok", provider="openai", since="1h")
    assert ids(status="error") == set()
    assert ids(until="2000-01-01") == set()


def test_detail_has_bodies_and_scores_round_trip(api: httpx.Client, calls: dict[str, str]) -> None:
    request_id = calls["root"]
    detail = api.get(f"/requests/{request_id}").json()["data"]
    assert "Plan a trip" in detail["request_body"]
    assert '"choices"' in detail["response_body"]
    assert detail["scores"] == {}

    stored = api.post(f"/requests/{request_id}/scores", json={"scores": {"helpful": True, "accuracy": 0.75}})
    assert stored.status_code == 200, stored.text
    assert stored.json()["data"] == {"request_id": request_id, "scores": {"accuracy": 0.75, "helpful": True}}
    feedback = api.post(f"/requests/{request_id}/feedback", json={"rating": False, "comment": "too terse"})
    assert feedback.json()["data"]["scores"]["feedback"] is False
    # A later score of the same name replaces the earlier one.
    api.post(f"/requests/{request_id}/scores", json={"scores": {"accuracy": 0.5}})

    detail = api.get(f"/requests/{request_id}").json()["data"]
    assert detail["scores"] == {"accuracy": 0.5, "feedback": False, "helpful": True}
    assert detail["feedback_comment"] == "too terse"
    listed = {r["request_id"]: r for r in api.get("/requests", params={"score": "accuracy<=0.5"}).json()["data"]}
    assert set(listed) == {request_id} and listed[request_id]["scores"]["helpful"] is True
    assert api.get("/requests", params={"score": "helpful=false"}).json()["data"] == []


def test_session_tree(api: httpx.Client, calls: dict[str, str]) -> None:
    sessions = api.get("/sessions").json()["data"]
    trip = next(s for s in sessions if s["session_id"] == "trip-42")
    assert trip["requests"] == 2 and trip["session_name"] == "Trip planner" and trip["users"] == ["ana"]
    assert trip["duration_ms"] > 0 and trip["cost_usd"] > 0
    session = api.get("/sessions/trip-42").json()["data"]
    root = session["tree"]
    (plan,) = root["children"]
    assert plan["path"] == "/plan" and [r["request_id"] for r in plan["requests"]] == [calls["root"]]
    (hotels,) = plan["children"]
    assert hotels["path"] == "/plan/hotels" and [r["request_id"] for r in hotels["requests"]] == [calls["child"]]
    assert plan["totals"]["requests"] == 2 and hotels["totals"]["requests"] == 1
    assert root["totals"]["cost_usd"] == pytest.approx(session["cost_usd"])


def test_users(api: httpx.Client, calls: dict[str, str]) -> None:
    users = {u["user_id"]: u for u in api.get("/users", params={"sort": "requests"}).json()["data"]}
    assert users["ana"]["requests"] == 2 and users["ben"]["requests"] == 2
    assert users["ana"]["last_seen"] >= users["ana"]["first_seen"]


def test_prompt_versions_and_diffs(api: httpx.Client, calls: dict[str, str]) -> None:
    prompts = {p["prompt_id"]: p for p in api.get("/prompts").json()["data"]}
    assert prompts["weather"]["requests"] == 3
    versions = api.get("/prompts/weather").json()["data"]["versions"]
    # Paris and Rome fill the same template: one version; "Forecast for" is a second.
    assert [(v["version"], v["requests"]) for v in versions] == [(1, 2), (2, 1)]
    assert "[user]\nWeather in {{city}}" in versions[0]["template"]
    diff = api.get("/prompts/weather/diff", params={"from": 1, "to": 2}).json()["data"]
    assert {"op": "-", "text": "Weather in {{city}}"} in diff["lines"]
    assert {"op": "+", "text": "Forecast for {{city}}"} in diff["lines"]
    assert {"op": " ", "text": "You are terse."} in diff["lines"]
    pair = api.get("/diff", params={"a": calls["v1a"], "b": calls["v1b"]}).json()["data"]
    assert all(line["op"] == " " for line in pair["lines"])  # same template, different input values
    assert api.get("/prompts/weather/diff", params={"from": 1, "to": 9}).status_code == 404


# -- previews: the last message sent and the start of the answer, for every wire format -----------


def one_line(text: str) -> str:
    """What the API promises of a preview: whitespace collapsed, at most PREVIEW_CHARS, '…' when cut."""
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1].rstrip() + "…"


PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def test_list_rows_preview_the_prompt_and_the_answer(api: httpx.Client, served: RunningProxy) -> None:
    """Each answer is taken as the provider's own SDK puts it together: the preview must say the same."""
    oai = openai.OpenAI(base_url=served.url + "/v1", api_key=API_KEY, max_retries=0)
    claude = anthropic.Anthropic(base_url=served.url + "/anthropic", api_key=API_KEY, max_retries=0)
    expected: dict[str, tuple[str | None, str | None]] = {}

    def tagged(**headers: str) -> tuple[str, dict[str, str]]:
        request_id = str(uuid.uuid4())
        return request_id, {"Helicone-Request-Id": request_id, **headers}

    system = {"role": "system", "content": "You are terse."}
    request_id, extra = tagged()
    answer = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[system, {"role": "user", "content": "Name a\n  fruit"}], extra_headers=extra
    )
    expected[request_id] = ("Name a fruit", answer.choices[0].message.content)

    request_id, extra = tagged(**{"x-standin-scenario": "long"})
    chunks = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Tell a long story"}],
        stream=True,
        extra_headers=extra,
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text) > PREVIEW_CHARS  # cut, with the ellipsis
    expected[request_id] = ("Tell a long story", text)

    request_id, extra = tagged()
    question = [
        {"type": "text", "text": "Weather where this was taken?"},
        {"type": "image_url", "image_url": {"url": PIXEL}},
    ]
    calls: dict[int, list[str]] = {}
    for chunk in oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": question}],
        tools=[WEATHER_TOOL],
        stream=True,
        extra_headers=extra,
    ):  # type: ignore[call-overload]
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            call = calls.setdefault(delta.index, ["", ""])
            call[0] += (delta.function and delta.function.name) or ""
            call[1] += (delta.function and delta.function.arguments) or ""
    expected[request_id] = ("Weather where this was taken? [image]", " ".join(f"{n}({a})" for n, a in calls.values()))

    request_id, extra = tagged()
    message = claude.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello Claude"}],
        extra_headers=extra,
    )
    expected[request_id] = ("Hello Claude", "".join(b.text for b in message.content if b.type == "text"))

    request_id, extra = tagged()
    with claude.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=200,
        messages=[{"role": "user", "content": "Stream to me"}],
        extra_headers=extra,
    ) as events:
        expected[request_id] = ("Stream to me", events.get_final_text())

    request_id, extra = tagged()
    response = oai.responses.create(
        model="gpt-4o-mini", input="Say hello", instructions="Be brief.", extra_headers=extra
    )
    expected[request_id] = ("Say hello", response.output_text)

    request_id, extra = tagged()
    streamed = "".join(
        e.delta
        for e in oai.responses.create(model="gpt-4o-mini", input="Stream hello", stream=True, extra_headers=extra)
        if e.type == "response.output_text.delta"
    )
    expected[request_id] = ("Stream hello", streamed)

    request_id, extra = tagged()
    gemini = httpx.post(
        served.url + "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        json={"contents": [{"role": "user", "parts": [{"text": "Hi Gemini"}]}]},
        headers={"x-goog-api-key": API_KEY, **extra},
    )
    parts = [p.get("text", "") for line in gemini.text.splitlines() if line.startswith("data: ")
             for c in orjson.loads(line[6:])["candidates"] for p in c["content"]["parts"]]  # fmt: skip
    expected[request_id] = ("Hi Gemini", "".join(parts))

    request_id, extra = tagged(**{"x-standin-fault": "status=500"})
    with pytest.raises(openai.InternalServerError) as failed:
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Fail"}], extra_headers=extra
        )
    expected[request_id] = ("Fail", failed.value.body["message"])  # type: ignore[index]

    for omit, kept in (("Request", 1), ("Response", 0)):
        request_id, extra = tagged(**{f"Helicone-Omit-{omit}": "true"})
        answer = oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Secret"}], extra_headers=extra
        )
        pair = ["Secret", answer.choices[0].message.content]
        pair[1 - kept] = None
        expected[request_id] = (pair[0], pair[1])

    for request_id in expected:
        served.record(request_id)
    rows = {r["request_id"]: r for r in api.get("/requests", params={"limit": 500}).json()["data"]}
    for request_id, (prompt, completion) in expected.items():
        row = rows[request_id]
        want = (prompt and one_line(prompt), completion and one_line(completion))
        assert (row["request_preview"], row["response_preview"]) == want, request_id
        assert want[1] != "" and (completion is None or len(want[1] or "") <= PREVIEW_CHARS)


def test_stats_match_the_records(api: httpx.Client, served: RunningProxy, calls: dict[str, str]) -> None:
    records = [r for r in served.records() if r["request_id"] in set(calls.values())]
    data = api.get("/stats", params={"since": "1h", "by": "user", "bucket": "minute"}).json()["data"]
    assert data["total"]["requests"] >= len(records)
    ben = next(g for g in data["groups"] if g["key"] == "ben")
    bens = [r for r in records if r["user_id"] == "ben"]
    assert ben["requests"] == len(bens)
    assert ben["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in bens))
    assert ben["latency_p50_ms"] == histogram.percentile(_counts(bens), 0.5)
    assert sum(s["requests"] for s in data["series"]) == data["total"]["requests"]
    assert {s["key"] for s in data["group_series"]} <= {g["key"] for g in data["groups"]}


def test_stats_histograms_hold_every_call_in_its_bucket(api: httpx.Client, served: RunningProxy) -> None:
    ids = [chat(served, f"Histogram {i}", **{"Helicone-User-Id": "hist"}) for i in range(3)]
    records = [served.record(request_id) for request_id in ids]
    data = api.get("/stats", params={"since": "1h", "user": "hist"}).json()["data"]
    for field, column in (("latency_ms", "latency_ms"), ("ttft_ms", "ttft_ms")):
        found = data["histograms"][field]
        assert sum(b["count"] for b in found) == len(records)
        for record in records:
            value = record[column]
            assert any(b["from_ms"] <= value < b["to_ms"] for b in found), (field, value, found)
        # Every listed bucket is non-empty, in order, and its bounds are 2^(1/4) apart.
        assert all(b["count"] > 0 for b in found) and found == sorted(found, key=lambda b: b["from_ms"])
        assert all(b["to_ms"] == pytest.approx(b["from_ms"] * 2**0.25) for b in found if b["from_ms"] >= 1)


def test_the_default_bucket_fits_the_span_and_the_back_end() -> None:
    now = datetime(2026, 11, 26, 12, tzinfo=UTC)

    def bucket(since: str, finest: Any = "minute") -> str | None:
        return parse_stats(Query([("since", since)]), now, finest).bucket

    assert [bucket(s) for s in ("15m", "3h", "4h", "7d", "8d")] == ["minute", "minute", "hour", "hour", "day"]
    # On AWS the rollups are hourly at the finest: a short span gets hours, not a refusal.
    assert [bucket(s, "hour") for s in ("15m", "7d", "30d")] == ["hour", "hour", "day"]


def _counts(records: list[dict[str, Any]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for record in records:
        index = histogram.bucket(record["latency_ms"])
        counts[index] = counts.get(index, 0) + 1
    return counts


def test_openapi_documents_every_route(api: httpx.Client, calls: dict[str, str]) -> None:
    document = api.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    for path in ("/api/v1/requests", "/api/v1/requests/{id}/scores", "/api/v1/stats", "/api/v1/prompts/{id}/diff"):
        assert path in paths
    schemas = document["components"]["schemas"]

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas
    assert "cost_usd" in schemas["RequestSummary"]["properties"]
    assert "request_body" not in schemas["RequestSummary"]["properties"]
    # Every field a list row and a stats answer carry is documented, and nothing else.
    row = api.get("/requests", params={"limit": 1}).json()["data"][0]
    assert set(row) == set(schemas["RequestListRow"]["properties"])
    stats = api.get("/stats", params={"since": "1h"}).json()["data"]
    documented = schemas["Stats"]["properties"]["data"]["properties"]
    assert set(stats) == set(documented)
    bucket = documented["histograms"]["properties"]["latency_ms"]["items"]
    assert set(stats["histograms"]["latency_ms"][0]) == set(bucket["properties"])


@pytest.mark.parametrize(
    ("method", "path", "params", "status", "kind"),
    [
        ("GET", "/requests", {"limit": str(MAX_PAGE + 1)}, 400, "invalid_request"),
        ("GET", "/requests", {"limit": "-1"}, 400, "invalid_request"),
        ("GET", "/requests", {"limit": "1e9"}, 400, "invalid_request"),
        ("GET", "/requests", {"since": "yesterday-ish"}, 400, "invalid_request"),
        ("GET", "/requests", {"since": "1h", "until": "2h"}, 400, "invalid_request"),
        ("GET", "/requests", {"sort": "cost; DROP TABLE requests"}, 400, "invalid_request"),
        ("GET", "/requests", {"order": "sideways"}, 400, "invalid_request"),
        ("GET", "/requests", {"status": "teapot"}, 400, "invalid_request"),
        ("GET", "/requests", {"property": "no-equals-sign"}, 400, "invalid_request"),
        ("GET", "/requests", {"property": "x') OR 1=1 --=v"}, 400, "invalid_request"),
        ("GET", "/requests", {"score": "a;b>1"}, 400, "invalid_request"),
        ("GET", "/requests", {"score": "quality>=high"}, 400, "invalid_request"),
        ("GET", "/requests", {"cursor": "bm90IGEgY3Vyc29y"}, 400, "invalid_request"),
        ("GET", "/requests", {"modle": "gpt-4o"}, 400, "invalid_request"),
        ("GET", "/requests", {"model": "x" * 600}, 400, "invalid_request"),
        ("GET", "/stats", {"by": "model; SELECT 1"}, 400, "invalid_request"),
        ("GET", "/stats", {"by": "property:a b"}, 400, "invalid_request"),
        ("GET", "/stats", {"since": "365d", "bucket": "minute"}, 400, "invalid_request"),
        ("GET", "/users", {"sort": "password"}, 400, "invalid_request"),
        ("GET", "/prompts/weather/diff", {"from": "one", "to": "2"}, 400, "invalid_request"),
        ("GET", "/diff", {"a": "only-one"}, 400, "invalid_request"),
        ("GET", "/requests/no-such-id", {}, 404, "not_found"),
        ("GET", "/sessions/no-such-session", {}, 404, "not_found"),
        ("GET", "/prompts/no-such-prompt", {}, 404, "not_found"),
        ("GET", "/nothing-here", {}, 404, "not_found"),
        ("DELETE", "/requests", {}, 405, "method_not_allowed"),
        ("POST", "/requests/no-such-id/scores", {}, 400, "invalid_request"),
    ],
)
def test_bad_input_gets_a_4xx_json_error(
    api: httpx.Client, calls: dict[str, str], method: str, path: str, params: dict[str, str], status: int, kind: str
) -> None:
    response = api.request(method, path, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == kind and error["message"]


@pytest.mark.parametrize(
    "value",
    ["' OR '1'='1", "x'; DROP TABLE requests; --", "$model", "\\'", "%", "_", "gpt-4o-mini' --", "\x00"],
)
def test_injection_attempts_are_plain_values(
    api: httpx.Client, served: RunningProxy, calls: dict[str, str], value: str
) -> None:
    for name in ("model", "user", "session", "prompt", "error_type"):
        response = api.get("/requests", params={name: value})
        assert response.status_code == 200, response.text
        assert response.json()["data"] == [], (name, value)
    # Search matches the text literally: '%' and '_' are not wildcards.
    found = {row["request_id"] for row in api.get("/requests", params={"search": value, "limit": 500}).json()["data"]}
    bodies = {r["request_id"]: (r["request_body"] or "") + (r["response_body"] or "") for r in served.records()}
    assert found == {request_id for request_id, text in bodies.items() if value.lower() in text.lower()}
    response = api.get("/requests", params={"property": f"feature={value}"})
    assert response.status_code == 200 and response.json()["data"] == []
    assert api.get("/stats", params={"model": value, "by": "model"}).json()["data"]["total"]["requests"] == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (b'{"scores": {}}', 400),
        (b'{"scores": {"bad name!": 1}}', 400),
        (b'{"scores": {"x": "high"}}', 400),
        (b'{"scores": {"x": 1e999}}', 400),
        (b'{"scores": {"x": 1}, "extra": true}', 400),
        (b'{"scores": {"x": null}}', 400),
        (b'{"scores": {"x": 1}}' + b" " * (70 * 1024), 413),
    ],
)
def test_bad_score_bodies(api: httpx.Client, calls: dict[str, str], body: bytes, status: int) -> None:
    response = api.post(f"/requests/{calls['v2']}/scores", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


def test_unknown_request_cannot_be_scored(api: httpx.Client) -> None:
    response = api.post("/requests/no-such-id/scores", json={"scores": {"x": 1}})
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"


# -- paging over many records written straight into a data dir ------------------------------------


@pytest.fixture
def paged(make_proxy: Any) -> Iterator[tuple[httpx.Client, list[dict[str, Any]]]]:
    proxy = make_proxy()
    start = datetime.now(UTC) - timedelta(days=3)
    records = []
    for i in range(130):
        # Some share a timestamp and a cost, so the tie-breaks are exercised.
        created = start + timedelta(minutes=31 * (i // 2))
        records.append(
            make_record(created, cost_usd=None if i % 11 == 0 else round(0.001 * (i % 7), 6), latency_ms=100.0 + i % 13)
        )
    write_records(proxy.data_dir, records)
    with httpx.Client(base_url=proxy.url + "/api/v1", timeout=30) as client:
        yield client, records


@pytest.mark.parametrize(("sort", "order"), [("time", "desc"), ("time", "asc"), ("cost", "desc"), ("latency", "asc")])
@pytest.mark.slow
def test_cursor_pages_have_no_gaps_or_repeats(
    paged: tuple[httpx.Client, list[dict[str, Any]]], sort: str, order: str
) -> None:
    client, records = paged
    column = {"time": None, "cost": "cost_usd", "latency": "latency_ms"}[sort]

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        value = () if column is None else ((-1.0 if r[column] is None else r[column]),)
        return (*value, r["created_at"], r["request_id"])

    expected = [r["request_id"] for r in sorted(records, key=key, reverse=order == "desc")]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {
            "sort": sort,
            "order": order,
            "limit": 17,
            **({"cursor": cursor} if cursor else {}),
        }
        page = client.get("/requests", params=params).json()
        seen.extend(row["request_id"] for row in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected


def test_cursor_from_another_sort_is_refused(paged: tuple[httpx.Client, list[dict[str, Any]]]) -> None:
    client, _ = paged
    cursor = client.get("/requests", params={"limit": 5}).json()["next_cursor"]
    response = client.get("/requests", params={"cursor": cursor, "sort": "cost"})
    assert response.status_code == 400 and "sort=time" in response.json()["error"]["message"]


def test_api_needs_a_key_once_keys_exist(make_proxy: Any) -> None:
    proxy = make_proxy()
    secret, _ = proxy.keys.create("dashboard")
    with httpx.Client(base_url=proxy.url) as client:
        refused = client.get("/api/v1/requests")
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
        assert secret not in refused.text
        assert client.get("/api/v1/requests", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/v1/requests", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
        assert client.get("/api/v1/requests", headers={"Helicone-Auth": f"Bearer {secret}"}).status_code == 200
        # The dashboard's files carry no data, so they load without a key (the page then asks for one).
        page = client.get("/dashboard/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_dashboard_files_and_redirects(served: RunningProxy) -> None:
    with httpx.Client(base_url=served.url) as client:
        assert client.get("/").headers["location"] == "/dashboard/"
        assert client.get("/dashboard").headers["location"] == "/dashboard/"
        page = client.get("/dashboard/")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "<script" in page.text and "http://" not in page.text and "https://" not in page.text
        assert client.get("/dashboard/app.js").headers["content-type"].startswith("text/javascript")
        # Every script and style the page loads is the package's own: uPlot too, no CDN.
        for name in re.findall(r'(?:src|rel="(?:stylesheet|icon)" href)="([^"]+)"', page.text):
            assert "/" not in name and client.get("/dashboard/" + name).status_code == 200, name
        assert "uPlot.iife.min.js" in page.text
        assert client.get("/dashboard/nope.js").status_code == 404
        assert client.post("/dashboard/").status_code == 405


def test_the_package_ships_every_dashboard_file() -> None:
    """pyproject's package-data globs cover the dashboard's files, uPlot's licence included."""
    config = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["relaylog"]
    folder = Path(relaylog.__file__).parent / "dashboard"
    names = sorted(p.name for p in folder.iterdir())
    assert {"uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE"} <= set(names)
    for name in names:
        assert any(fnmatch.fnmatch(f"dashboard/{name}", pattern) for pattern in patterns), name


def test_columnar_copies_follow_the_files(tmp_path: Path) -> None:
    """Quiet files are read from Parquet copies; a file that grows again is read whole again."""
    old = datetime.now(UTC) - timedelta(days=2)
    (path,) = write_records(tmp_path, [make_record(old + timedelta(seconds=i)) for i in range(3)])
    past = time.time() - 3600
    os.utime(path, (past, past))
    store = LocalStore(tmp_path)
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM requests").fetchone() == (3,)
    copies = list((tmp_path / columnar.COLUMNAR_DIR).rglob("*.parquet"))
    assert len(copies) == 1 and copies[0].name.startswith("day.")
    write_records(tmp_path, [make_record(old + timedelta(seconds=9))])
    with store.connect() as con:  # the copy no longer matches: the file is read as JSON
        assert con.execute("SELECT count(*) FROM requests").fetchone() == (4,)
    with path.open("ab") as f:
        f.write(b'{"request_id": "half-writ')  # a crash mid-line: never frozen into a copy
    os.utime(path, (past, past))
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM requests").fetchone() == (4,)
    assert list((tmp_path / columnar.COLUMNAR_DIR).rglob("*.parquet")) == copies  # the old copy, not a new one


@pytest.mark.slow
def test_concurrent_queries_share_the_database_safely(paged: tuple[httpx.Client, list[dict[str, Any]]]) -> None:
    """Each query gets its own cursor and TEMP views on the one shared DuckDB: many at once, with
    different filters, never see each other's views."""
    client, records = paged
    asks = [
        ("/requests", {"limit": "500"}, len(records)),
        ("/requests", {"limit": "500", "score": "none>1"}, 0),
        ("/stats", {"since": "7d"}, len(records)),
        ("/requests", {"limit": "500", "sort": "cost", "order": "asc"}, len(records)),
    ]

    def ask(n: int) -> None:
        path, params, expected = asks[n % len(asks)]
        answer = client.get(path, params=params)
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        count = data["total"]["requests"] if path == "/stats" else len(data)
        assert count == expected, (path, params)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(ask, range(64)))


def test_ids_with_slashes_and_percent_signs(api: httpx.Client, served: RunningProxy) -> None:
    odd = "team/a 50%off"
    chat(served, "Odd session", **{"Helicone-Session-Id": odd})
    response = api.get("/sessions/" + quote(odd, safe=""))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["session_id"] == odd
    assert api.get("/sessions/" + quote("team/a 50%25off", safe="")).status_code == 404  # decoded once only
