"""The dashboard in headless Chromium (Debian's, driven by Playwright), at 1280×800 and 1920×1080.

Calls sent through relaylog with the real `openai` and `anthropic` SDKs (and plain HTTP for Gemini)
appear live; every page fits the window with no horizontal scrolling and logs no console error
(a Content-Security-Policy violation is one); a request opens in a panel over the list with
previous/next; the charts are drawn by uPlot (their canvases hold their series' colours, not only
a container), with exact values in tooltips; sessions, prompts, scores and keys work as before.

Screenshots of every page at both sizes are kept in tests/artifacts/dashboard/ with
table-widths.json, the requests table's measured width at each size.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, ViewportSize, expect, sync_playwright
from relaylog.aggregate.process import process_object
from relaylog.aws import layout
from relaylog.keys.dynamo import DynamoKeyStore
from relaylog.query.api import QueryApp
from relaylog.query.dynamo.backend import DynamoBackend
from relaylog.query.filters import is_error

from tests.support.aws import Stack
from tests.support.proxy import RunningProxy, ServedApp
from tests.support.records import NO_USAGE, make_record, write_records

pytestmark = [pytest.mark.browser, pytest.mark.aws]

CHROMIUM = os.environ.get("RELAYLOG_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts" / "dashboard"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
API_KEY = "sk-test-provider-key"
TIMEOUT_MS = 15_000
SIZES: dict[str, ViewportSize] = {
    "1280x800": {"width": 1280, "height": 800},
    "1920x1080": {"width": 1920, "height": 1080},
}
SESSION = str(uuid.uuid4())  # a full UUID: the column that widened the table before
MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o"),
    ("anthropic", "claude-sonnet-4-5"),
    ("gemini", "gemini-2.0-flash"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not shutil.which(CHROMIUM):
        pytest.fail(
            f"the dashboard tests need Chromium at {CHROMIUM}: apt-get install chromium (make test does it as root)"
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


def _open(browser: Browser, size: str, errors: list[str]) -> tuple[Page, Any]:
    context = browser.new_context(viewport=SIZES[size])
    opened = context.new_page()
    opened.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    opened.on("console", lambda msg: _console(msg, errors))
    opened.set_default_timeout(TIMEOUT_MS)
    return opened, context


def _console(message: ConsoleMessage, errors: list[str]) -> None:
    if message.type == "error":  # CSP violations, failed loads, uncaught errors
        errors.append(f"console: {message.text}")


@pytest.fixture
def console() -> list[str]:
    """The page's errors; a test that expects some (a refused key) takes them out."""
    return []


@pytest.fixture(params=list(SIZES))
def sized(request: pytest.FixtureRequest, browser: Browser, console: list[str]) -> Iterator[tuple[Page, str]]:
    opened, context = _open(browser, request.param, console)
    yield opened, request.param
    context.close()
    assert console == [], f"errors on the page: {console}"


@pytest.fixture
def page(browser: Browser, console: list[str]) -> Iterator[Page]:
    opened, context = _open(browser, "1280x800", console)
    yield opened
    context.close()
    assert console == [], f"errors on the page: {console}"


REFUSED = "console: Failed to load resource: the server responded with a status of 401 (Unauthorized)"


def expected_refusals(console: list[str]) -> None:
    """Chromium logs every 401 answer as a failed load: the ones a test asked for are not errors."""
    assert REFUSED in console
    console[:] = [line for line in console if line != REFUSED]


# -- the calls: a few hours of history written as records, then live calls through the SDKs --------


def history(data_dir: Path, now: datetime | None = None) -> list[dict[str, Any]]:
    """70 calls over the last two and a half hours: four models, users, a session, errors, costs."""
    now = now or datetime.now(UTC)
    records = []
    for i in range(70):
        provider, model = MODELS[i % 4]
        created = now - timedelta(minutes=150) + timedelta(minutes=2 * i + i % 3, seconds=7 * i % 50)
        extra: dict[str, Any] = {}
        if i % 11 == 5:
            extra = {"status": 500, "error_type": "upstream_error", **NO_USAGE}
        elif i % 17 == 3:
            extra = {"status": 200, "error_type": "upstream_disconnect"}
        fields: dict[str, Any] = {
            "provider": provider,
            "model": model,
            "latency_ms": 300.0 + (i * 97) % 2400,
            "ttft_ms": 120.0 + (i * 41) % 700,
            "input_tokens": 200 + 13 * i,
            "output_tokens": 40 + 3 * i,
            "cost_usd": round(0.00002 * (1 + i % 5) * (2 if model == "gpt-4o" else 1), 8),
            "user_id": ["maya", "lee", "sam", None][i % 4],
            "session_id": SESSION if i % 9 == 0 else None,
            "properties": {"team": ["growth", "search"][i % 2]},
            "request_body": json.dumps(
                {
                    "model": model,
                    "messages": [
                        {"role": "user", "content": f"Question {i}: what should I pack for a week in Lisbon in spring?"}
                    ],
                }
            ),
        }
        records.append(make_record(created, **{**fields, **extra}))
    write_records(data_dir, records, writer="history")
    return records


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def send(proxy: RunningProxy, text: str, headers: Mapping[str, str] | None = None, stream: bool = False) -> str:
    request_id = str(uuid.uuid4())
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=API_KEY, max_retries=0)
    messages = [{"role": "system", "content": "You are a travel agent."}, {"role": "user", "content": text}]
    extra = {"Helicone-Request-Id": request_id, **(headers or {})}
    if stream:
        for _ in client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, extra_headers=extra
        ):  # type: ignore[arg-type]
            pass
    else:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, extra_headers=extra)  # type: ignore[arg-type]
    proxy.record(request_id)
    return request_id


def mix(proxy: RunningProxy) -> dict[str, str]:
    """A realistic mix of live calls: streams, tools, an image, Anthropic, Gemini, a session with
    paths, users, properties, a provider error and a stream cut short. Returns name -> request id."""
    trip = {"Helicone-Session-Id": SESSION, "Helicone-Session-Name": "Lisbon trip", "Helicone-User-Id": "maya"}
    ids = {
        "plan": send(
            proxy,
            "Plan three days in Lisbon",
            {**trip, "Helicone-Session-Path": "/plan", "Helicone-Property-Team": "growth"},
        ),
        "hotels": send(
            proxy,
            "Find a hotel in Alfama under 150 euros",
            {**trip, "Helicone-Session-Path": "/plan/hotels"},
            stream=True,
        ),
        "long": send(
            proxy,
            "Tell me the whole history of Lisbon",
            {"x-standin-scenario": "long", "Helicone-User-Id": "lee"},
            stream=True,
        ),
    }
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=API_KEY, max_retries=0)
    ids["tool"] = str(uuid.uuid4())
    question = [
        {"type": "text", "text": "What is the weather where this photo was taken?"},
        {"type": "image_url", "image_url": {"url": PIXEL}},
    ]
    for _ in client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": question}],
        tools=[WEATHER_TOOL],
        stream=True,  # type: ignore[list-item]
        extra_headers={"Helicone-Request-Id": ids["tool"], "Helicone-Property-Feature": "vision"},
    ):
        pass
    ids["failed"] = str(uuid.uuid4())
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Book the flight"}],
            extra_headers={"Helicone-Request-Id": ids["failed"], "x-standin-fault": "status=500"},
        )
    ids["cut"] = str(uuid.uuid4())
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Describe the tram 28 route"}],
            stream=True,
            extra_headers={"Helicone-Request-Id": ids["cut"], "x-standin-fault": "drop-after=3"},
        ):
            pass
    claude = anthropic.Anthropic(base_url=proxy.url + "/anthropic", api_key=API_KEY, max_retries=0)
    ids["claude"] = str(uuid.uuid4())
    with claude.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=300,
        messages=[{"role": "user", "content": "Which pastries should I try?"}],
        extra_headers={
            "Helicone-Request-Id": ids["claude"],
            "Helicone-User-Id": "sam",
            "Helicone-Property-Team": "search",
        },
    ) as events:
        events.until_done()
    ids["gemini"] = str(uuid.uuid4())
    httpx.post(
        proxy.url + "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        json={"contents": [{"role": "user", "parts": [{"text": "Best viewpoints in Lisbon?"}]}]},
        headers={"x-goog-api-key": API_KEY, "Helicone-Request-Id": ids["gemini"]},
    )
    for request_id in ids.values():
        proxy.record(request_id)
    return ids


@pytest.fixture(scope="module")
def served(standin: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    standin.fault = None
    with RunningProxy(tmp_path_factory.mktemp("dashboard"), standin.url) as running:
        history(running.data_dir)
        yield running


@pytest.fixture(scope="module")
def calls(served: RunningProxy) -> dict[str, str]:
    return mix(served)


def shot(page: Page, name: str, full: bool = False) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full)


def row(page: Page, request_id: str) -> Any:
    return page.locator(f'#requests tbody tr[data-id="{request_id}"]')


def overflow(page: Page) -> dict[str, int]:
    """How far the page and the widest table reach past the window (0 when nothing does)."""
    return page.evaluate(
        """() => {
          const doc = document.documentElement;
          const tables = [...document.querySelectorAll("main table")];
          return {
            page: doc.scrollWidth - doc.clientWidth,
            tables: Math.max(0, ...tables.map((t) => t.scrollWidth - t.parentElement.clientWidth)),
            cells: Math.max(0, ...tables.map((t) => Math.round(t.getBoundingClientRect().right) - doc.clientWidth)),
          };
        }"""
    )


# -- every page at both sizes ----------------------------------------------------------------------

PAGES = [
    ("requests", "#/requests", "#requests tbody tr"),
    ("request-open", "#/requests?open={plan}", "#drawer #conversation"),
    ("request-tools", "#/requests?open={tool}", "#drawer #tools"),
    ("charts", "#/charts", '[data-chart="Requests"] canvas'),
    ("charts-by-model", "#/charts?by=model", "#groups tbody tr"),
    ("sessions", "#/sessions", "#sessions tbody tr"),
    ("session-tree", f"#/sessions/{SESSION}", "#session-tree li[data-id]"),
    ("users", "#/users", "#users tbody tr"),
    ("prompts", "#/prompts", "main h1"),
]


def test_every_page_fits_the_window_without_errors(
    sized: tuple[Page, str], served: RunningProxy, calls: dict[str, str]
) -> None:
    page, size = sized
    widths = {}
    for name, path, ready in PAGES:
        page.goto(served.url + "/dashboard/" + path.format(**calls))
        expect(page.locator(ready).first).to_be_visible()
        page.wait_for_timeout(150)  # the charts size themselves on the next frame
        assert overflow(page) == {"page": 0, "tables": 0, "cells": 0}, (size, name)
        shot(page, f"{size}-{name}", full=name.startswith("charts"))
        if name == "requests":
            widths[size] = page.evaluate("document.querySelector('#requests').getBoundingClientRect().width")
            # Every column is on screen, the last (properties) included.
            right = page.evaluate(
                "Math.max(...[...document.querySelectorAll('#requests thead th')].map((th) => th.getBoundingClientRect().right))"
            )
            assert right <= SIZES[size]["width"]
    found = (
        json.loads((ARTIFACTS / "table-widths.json").read_text()) if (ARTIFACTS / "table-widths.json").exists() else {}
    )
    (ARTIFACTS / "table-widths.json").write_text(json.dumps({**found, **widths}, indent=1))


def test_the_requests_table_shows_what_a_call_was(page: Page, served: RunningProxy, calls: dict[str, str]) -> None:
    page.goto(served.url + "/dashboard/#/requests")
    hotels = row(page, calls["hotels"])
    expect(hotels.locator("td").nth(1)).to_have_text(calls["hotels"][:8])  # the short id `relaylog show` takes
    expect(hotels).to_contain_text("Find a hotel in Alfama under 150 euros")  # the prompt
    expect(hotels).to_contain_text("Hello! This is the relaylog stand-in")  # the start of the streamed answer
    expect(hotels).to_contain_text("openai · stream")
    session = hotels.locator(f'[title="{SESSION}"]')
    expect(session).to_have_text(SESSION[:10] + "…")  # cut, the whole id on hover
    expect(row(page, calls["tool"])).to_contain_text('get_weather({"city":"Paris"})')
    expect(row(page, calls["tool"])).to_contain_text("What is the weather where this photo was taken? [image]")
    # Failed and cut calls say how: the provider's 500 with its message, the cut stream's 200 with its error type.
    failed = row(page, calls["failed"])
    expect(failed).to_contain_text("upstream_error")
    expect(failed).to_contain_text("The server had an error")
    cut = row(page, calls["cut"])
    expect(cut.locator(".pill.err")).to_have_text("200")
    expect(cut).to_contain_text("upstream_disconnect")
    expect(row(page, calls["plan"])).to_contain_text("team=growth")
    ttft = page.locator("#requests thead th", has_text="TTFT")
    assert ttft.bounding_box()["x"] + ttft.bounding_box()["width"] <= 1280  # type: ignore[index]
    assert page.locator("#requests col.c-sel").evaluate("c => c.getBoundingClientRect().width") <= 32
    shot(page, "requests-rows")


def test_calls_appear_live_and_filter_by_property(page: Page, served: RunningProxy, calls: dict[str, str]) -> None:
    page.goto(served.url + "/dashboard/")
    expect(page.locator("h1")).to_have_text("Requests")
    # Sent after the page loaded: the table must pick it up without a reload.
    first = send(served, "Find me a flight", {"Helicone-User-Id": "maya", "Helicone-Property-Team": "growth"})
    second = send(served, "And a hotel", {"Helicone-User-Id": "maya", "Helicone-Property-Team": "search"})
    expect(row(page, first)).to_be_visible()
    expect(row(page, second)).to_be_visible()
    expect(row(page, first)).to_contain_text("maya")
    expect(row(page, first)).to_contain_text("team=growth")
    expect(row(page, first)).to_contain_text("Find me a flight")
    shot(page, "01-requests-live")

    page.fill('input[name="property"]', "team=growth")
    page.click('form.filters button[type="submit"]')
    expect(row(page, first)).to_be_visible()
    expect(row(page, second)).to_have_count(0)
    assert "property=team%3Dgrowth" in page.url
    shot(page, "02-requests-filtered")


def test_a_request_opens_beside_the_list_with_previous_and_next(
    page: Page, served: RunningProxy, calls: dict[str, str]
) -> None:
    page.goto(served.url + "/dashboard/#/requests")
    drawer = page.locator("#drawer")
    expect(row(page, calls["hotels"])).to_be_visible()
    ids = page.locator("#requests tbody tr").evaluate_all("rows => rows.map((r) => r.dataset.id)")
    target = ids.index(calls["hotels"])
    row(page, calls["hotels"]).click()
    expect(drawer).to_be_visible()
    expect(drawer.locator("h2")).to_contain_text(calls["hotels"][:8])
    expect(drawer.locator("#conversation .msg.user")).to_contain_text("Find a hotel in Alfama")
    expect(page.locator("#requests")).to_be_visible()  # the list stays
    expect(row(page, calls["hotels"])).to_have_class(re.compile("selected"))
    assert f"open={calls['hotels']}" in page.url
    shot(page, "03-request-drawer")

    drawer.get_by_role("button", name="Next ›").click()
    expect(drawer.locator("h2")).to_contain_text(ids[target + 1][:8])
    expect(row(page, ids[target + 1])).to_have_class(re.compile("selected"))
    page.keyboard.press("k")  # and back up with the keyboard
    expect(drawer.locator("h2")).to_contain_text(calls["hotels"][:8])
    drawer.get_by_role("button", name="‹ Prev").click()
    expect(drawer.locator("h2")).to_contain_text(ids[target - 1][:8])
    page.reload()  # the URL says which request is open
    expect(drawer.locator("h2")).to_contain_text(ids[target - 1][:8])
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()
    assert "open=" not in page.url
    page.go_back()  # the browser's back button brings it back, and forward closes it again
    expect(drawer).to_be_visible()
    page.go_forward()
    expect(drawer).to_be_hidden()
    # The first row has no previous one.
    row(page, ids[0]).click()
    expect(drawer.get_by_role("button", name="‹ Prev")).to_be_disabled()


def test_request_detail_tools_stream_raw_and_feedback(page: Page, served: RunningProxy, calls: dict[str, str]) -> None:
    page.goto(served.url + f"/dashboard/#/requests?open={calls['tool']}")
    drawer = page.locator("#drawer")
    tools = drawer.locator("#tools")
    expect(tools).to_contain_text("Tools offered (1)")
    expect(tools).to_contain_text("get_weather — Current weather for a city")
    tools.locator("summary").click()
    expect(tools.locator("pre")).to_contain_text('"required": [')
    facts = drawer.locator("dl.facts")
    expect(facts).to_contain_text("yes (SSE)")
    expect(drawer.locator("#conversation .msg.user img.thumb")).to_have_attribute("src", PIXEL)
    expect(drawer.locator("#conversation .msg.assistant .tool-call")).to_have_text(
        'tool call get_weather({"city":"Paris"})'
    )
    # Placeholders fit their fields.
    for name in ("comment", "score-name", "score-value"):
        field = drawer.locator(f'input[name="{name}"]')
        needed = field.evaluate(
            "el => { const c = document.createElement('canvas').getContext('2d'); const s = getComputedStyle(el);"
            " c.font = `${s.fontSize} ${s.fontFamily}`; return c.measureText(el.placeholder).width"
            " + parseFloat(s.paddingLeft) + parseFloat(s.paddingRight); }"
        )
        assert needed <= field.evaluate("el => el.clientWidth"), name
    shot(page, "10-request-tools")

    drawer.get_by_role("tab", name="Raw").click()
    raw = drawer.locator("#raw pre").nth(1)
    expect(raw).to_contain_text("data: {")
    assert raw.evaluate("el => el.scrollWidth <= el.clientWidth")  # long SSE lines wrap
    shot(page, "04-request-raw")

    good, bad = drawer.locator('button[aria-label="thumbs up"]'), drawer.locator('button[aria-label="thumbs down"]')
    expect(good).to_have_attribute("aria-pressed", "false")
    drawer.locator('input[name="comment"]').fill("great answer")
    good.click()
    expect(good).to_have_attribute("aria-pressed", "true")
    expect(good).to_have_class(re.compile("selected"))
    expect(drawer.locator("#score-list")).to_contain_text("feedback: true")
    bad.click()
    expect(bad).to_have_attribute("aria-pressed", "true")
    expect(good).to_have_attribute("aria-pressed", "false")
    drawer.locator('input[name="score-name"]').fill("accuracy")
    drawer.locator('input[name="score-value"]').fill("0.8")
    drawer.get_by_role("button", name="Add score").click()
    expect(drawer.locator("#score-list")).to_contain_text("accuracy: 0.8")
    shot(page, "05-request-scored")
    page.reload()
    expect(drawer.locator('button[aria-label="thumbs down"]')).to_have_attribute("aria-pressed", "true")
    expect(drawer.locator("#score-list")).to_contain_text("accuracy: 0.8")


def test_bedrock_conversations_are_put_back_together(page: Page, served: RunningProxy, standin: Any) -> None:
    """Converse (a tool call streamed in pieces, a tool result sent back) and an InvokeModel stream of
    Claude, each with the client's Bedrock API key; the event streams are recorded as SSE text."""
    tool = {
        "toolSpec": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
        }
    }
    ids = {name: str(uuid.uuid4()) for name in ("tool", "result", "claude")}

    def call(name: str, path: str, body: dict[str, Any]) -> bytes:
        headers = {"Authorization": "Bearer bedrock-api-key", "Helicone-Request-Id": ids[name]}
        answer = httpx.post(f"{served.url}/bedrock/us-east-1{path}", json=body, headers=headers, timeout=20)
        assert answer.status_code == 200
        return answer.content

    ask = {"role": "user", "content": [{"text": "Weather in Paris?"}]}
    call(
        "tool",
        "/model/us.anthropic.claude-3-5-sonnet-20241022-v2:0/converse-stream",
        {"system": [{"text": "Be brief."}], "messages": [ask], "toolConfig": {"tools": [tool]}},
    )
    used = {
        "role": "assistant",
        "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}],
    }
    back = {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"json": {"sky": "sunny"}}]}}]}
    answer = json.loads(
        call(
            "result",
            "/model/amazon.nova-lite-v1:0/converse",
            {"messages": [ask, used, back], "toolConfig": {"tools": [tool]}},
        )
    )
    claude = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Which pastries should I try?"}],
    }
    call("claude", "/model/anthropic.claude-3-5-haiku-20241022-v1:0/invoke-with-response-stream", claude)
    for request_id in ids.values():
        served.record(request_id)

    drawer = page.locator("#drawer")
    page.goto(served.url + f"/dashboard/#/requests?open={ids['tool']}")
    expect(drawer.locator("#tools")).to_contain_text("get_weather — Current weather for a city")
    expect(drawer.locator("dl.facts")).to_contain_text("yes (AWS event stream)")
    expect(drawer.locator("#conversation .msg.system")).to_contain_text("Be brief.")
    expect(drawer.locator("#conversation .msg.user")).to_contain_text("Weather in Paris?")
    expect(drawer.locator("#conversation .msg.assistant .tool-call")).to_have_text(
        'tool call get_weather({"city":"Paris"})'
    )
    shot(page, "12-bedrock-tool-stream")
    page.goto(served.url + f"/dashboard/#/requests?open={ids['result']}")
    expect(drawer.locator("#conversation .msg.user").last).to_contain_text('tool result: {"sky":"sunny"}')
    expect(drawer.locator("#conversation .msg.assistant").last).to_contain_text(
        answer["output"]["message"]["content"][0]["text"]
    )
    page.goto(served.url + f"/dashboard/#/requests?open={ids['claude']}")
    expect(drawer.locator("#conversation .msg.assistant")).to_contain_text("Hello! This is the relaylog stand-in")


def test_request_view_shows_retries_and_cache_hits(page: Page, served: RunningProxy) -> None:
    gateway = {
        "Helicone-Cache-Enabled": "true",
        "Helicone-Retry-Enabled": "true",
        "Helicone-Retry-Min-Timeout": "10",
        "x-standin-fault": f"status=503;times=1;id={uuid.uuid4().hex}",
    }
    missed = send(served, "Weekend in Sintra", gateway)
    hit = send(served, "Weekend in Sintra", gateway)
    page.goto(served.url + f"/dashboard/#/requests/{missed}")  # an old-style link opens the panel
    facts = page.locator("#drawer dl.facts")
    expect(facts).to_contain_text("MISS")
    expect(facts).to_contain_text(re.compile(r"503 \(waited [\d.]+ ms\) → 200"))
    shot(page, "15-request-retried")
    page.goto(served.url + f"/dashboard/#/requests?open={hit}")
    expect(facts).to_contain_text("HIT")
    expect(facts).to_contain_text("cache_hit")
    expect(facts).to_contain_text("cache_saved_usd")


def test_session_tree_opens_requests_beside_it(page: Page, served: RunningProxy, calls: dict[str, str]) -> None:
    page.goto(served.url + "/dashboard/#/sessions")
    page.locator("#sessions tbody tr", has_text="Lisbon trip").click()
    tree = page.locator("#session-tree")
    expect(page.locator("h1")).to_contain_text("Lisbon trip")
    expect(tree.locator('li[data-path="/plan"]')).to_be_visible()
    nested = tree.locator('li[data-path="/plan"] li[data-path="/plan/hotels"]')
    expect(nested.locator(f'li[data-id="{calls["hotels"]}"]')).to_be_visible()
    expect(tree.locator(f'li[data-path="/plan"] > ul > li[data-id="{calls["plan"]}"]')).to_be_visible()
    shot(page, "06-session-tree")
    nested.locator(f'li[data-id="{calls["hotels"]}"]').click()
    expect(page.locator("#drawer #conversation .msg.user")).to_contain_text("Find a hotel")
    expect(tree).to_be_visible()


def test_prompt_versions_diff(page: Page, served: RunningProxy) -> None:
    tag = '<helicone-prompt-input key="city">{}</helicone-prompt-input>'
    send(served, "Best food in " + tag.format("Porto"), {"Helicone-Prompt-Id": "food-guide"})
    send(served, "Best cheap food in " + tag.format("Faro"), {"Helicone-Prompt-Id": "food-guide"})
    page.goto(served.url + "/dashboard/#/prompts")
    page.locator("#prompts tbody tr", has_text="food-guide").click()
    expect(page.locator("#versions tbody tr")).to_have_count(2)
    diff = page.locator("#diff")
    expect(diff.locator(".del")).to_have_text("- Best food in {{city}}")
    expect(diff.locator(".add")).to_have_text("+ Best cheap food in {{city}}")
    shot(page, "07-prompt-diff")


# -- charts -------------------------------------------------------------------------------------------

DRAWN = """(title) => {
  const plot = document.querySelector(`[data-chart="${title}"] .plot`);
  const u = plot.uplot;
  const { width, height } = u.ctx.canvas;
  const pixels = u.ctx.getImageData(0, 0, width, height).data;
  const found = {};
  for (const s of u.series.slice(1)) {
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(s.color.slice(i, i + 2), 16));
    let n = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      if (pixels[i + 3] > 200 && Math.abs(pixels[i] - r) + Math.abs(pixels[i + 1] - g) + Math.abs(pixels[i + 2] - b) < 24) n++;
    }
    found[s.label] = n;
  }
  return { found, ticks: u.axes[1]._splits, times: u.axes[0]._values.filter(Boolean).length };
}"""


def _drawn(page: Page, title: str) -> dict[str, Any]:
    return page.evaluate(DRAWN, title)


def test_charts_are_drawn_fitted_to_the_calls_with_exact_tooltips(
    page: Page, served: RunningProxy, calls: dict[str, str]
) -> None:
    page.goto(served.url + "/dashboard/#/charts")
    # The history starts 2.5 hours ago: the span fits it, in minutes (not 24 hourly buckets).
    expect(page.locator("#span")).to_contain_text("one bar per minute (fitted to the calls")
    for title, series in [
        ("Requests", {"ok", "errors"}),
        ("Cost", {"all"}),
        ("Error rate", {"error rate"}),
        ("Latency and time to first token", {"latency p50", "latency p95", "latency p99", "TTFT p50", "TTFT p95"}),
        ("Tokens", {"input", "output"}),
        ("Latency histogram", {"calls"}),
    ]:
        drawn = _drawn(page, title)
        assert set(drawn["found"]) == series, title
        # Every series is on the canvas, overlapping latency lines included: pixels of its own colour.
        assert all(n > 0 for n in drawn["found"].values()), (title, drawn["found"])
        if title in ("Requests", "Tokens", "Latency histogram"):
            assert all(float(t).is_integer() for t in drawn["ticks"]), (title, drawn["ticks"])
        if title != "Latency histogram":
            assert drawn["times"] >= 4, title  # enough time labels
    shot(page, "08-charts", full=True)

    # The tooltip of the busiest minute says how many calls and errors it had, worked out from the records.
    point = page.evaluate(
        """() => {
          const u = document.querySelector('[data-chart="Requests"] .plot').uplot;
          const ok = u.series.find((s) => s.label === "ok"), errors = u.series.find((s) => s.label === "errors");
          let best = 0;
          u.data[0].forEach((_, i) => { if (ok.raw[i] + errors.raw[i] > ok.raw[best] + errors.raw[best]) best = i; });
          const box = u.over.getBoundingClientRect();
          return { t: u.data[0][best], x: box.left + u.valToPos(u.data[0][best], "x"), y: box.top + box.height - 5 };
        }"""
    )
    page.mouse.move(point["x"], point["y"])
    tip = page.locator('[data-chart="Requests"] .u-tip')
    expect(tip).to_be_visible()
    start = datetime.fromtimestamp(point["t"] - 30, UTC)  # bars stand in the middle of their minute
    minute = [
        r for r in served.records() if start <= datetime.fromisoformat(r["created_at"]) < start + timedelta(minutes=1)
    ]
    failed = sum(1 for r in minute if is_error(r))
    assert tip.inner_text().replace("\n", "").replace(" ", "").endswith(f"ok{len(minute) - failed}errors{failed}"), (
        tip.inner_text()
    )
    shot(page, "08-charts-tooltip")


def test_charts_stack_cost_by_the_chosen_group(page: Page, served: RunningProxy, calls: dict[str, str]) -> None:
    page.goto(served.url + "/dashboard/#/charts?by=model")
    expect(page.locator("#groups tbody tr", has_text="gpt-4o-mini")).to_be_visible()
    drawn = _drawn(page, "Cost")
    models = {"gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "gemini-2.0-flash"}
    assert models <= set(drawn["found"])
    # Other tests share this proxy and their models are groups too (a few-token Bedrock call's cost
    # is too thin a band to colour a pixel): only this test's own groups must show on the canvas.
    assert all(drawn["found"][model] > 0 for model in models), drawn["found"]
    assert _drawn(page, "Latency p95 by model")["found"]
    shot(page, "09-charts-by-model", full=True)


# -- first contact: nothing recorded yet, and keys ------------------------------------------------------


def test_empty_pages_say_what_to_do(make_proxy: Any, page: Page) -> None:
    proxy = make_proxy()
    page.goto(proxy.url + "/dashboard/")
    empty = page.locator(".empty")
    expect(empty).to_contain_text("No requests yet")
    expect(empty.locator("pre")).to_contain_text(f'OpenAI(base_url="{proxy.url}/v1")')
    shot(page, "16-empty-requests")
    page.goto(proxy.url + "/dashboard/#/charts")
    expect(page.locator(".empty")).to_contain_text("No calls in the last 30 days")
    send(proxy, "First call")
    page.goto(proxy.url + "/dashboard/#/requests?since=15m&model=nothing-like-this")
    expect(page.locator(".empty")).to_contain_text("No requests match these filters")
    page.get_by_role("link", name="Show every request").click()
    expect(page.locator("#requests tbody tr")).to_have_count(1)


def test_a_wrong_key_is_said_to_be_rejected(make_proxy: Any, page: Page, console: list[str]) -> None:
    proxy = make_proxy()
    secret, _ = proxy.keys.create("browser")
    page.goto(proxy.url + "/dashboard/")
    form = page.locator(".key-form")
    expect(form).to_contain_text("A relaylog key is needed")
    shot(page, "09-key-needed")
    page.fill('input[name="key"]', "rl-not-a-real-key")
    page.click(".key-form button")
    expect(form.locator("h2")).to_have_text("That key was rejected")
    expect(form.get_by_role("alert")).to_contain_text("not one of its keys, or it was revoked")
    shot(page, "09-key-rejected")
    page.fill('input[name="key"]', secret)
    page.click(".key-form button")
    expect(page.locator("h1")).to_have_text("Requests")
    expected_refusals(console)


# -- the same dashboard on the AWS back end (DynamoDB index and rollups, S3 records; moto) ---------


def test_the_dashboard_on_the_aws_back_end(aws_stack: Stack, page: Page, console: list[str]) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    trip = {"session_id": "aws-trip", "session_name": "AWS trip", "user_id": "lee", "properties": {"team": "ops"}}
    records = [
        make_record(now, session_path="/plan", **trip),
        make_record(now + timedelta(minutes=1), session_path="/plan/hotel", **trip),
        make_record(now + timedelta(minutes=2), user_id="kim", status=500, error_type="upstream_error", **NO_USAGE),
    ]
    s3, dynamodb = aws_stack.client("s3"), aws_stack.client("dynamodb")
    key = layout.partition_path(layout.RAW_PREFIX, records[0]["dt"], records[0]["hour"]) + "records-0"
    aws_stack.put_raw_object(key, records)
    process_object(s3, dynamodb, aws_stack.table, aws_stack.bucket, key)
    keys = DynamoKeyStore(aws_stack.table, dynamodb)
    secret, _ = keys.create("dashboard")
    backend = DynamoBackend(aws_stack.table, aws_stack.bucket, dynamodb, s3)
    with ServedApp(QueryApp(lambda: backend, keys, require_key=True), lifespan="off") as served:
        page.goto(served.url + "/dashboard/")
        page.fill('input[name="key"]', secret)
        page.click(".key-form button")
        for record in records:
            expect(row(page, record["request_id"])).to_be_visible()
        hotel = row(page, records[1]["request_id"])
        expect(hotel).to_contain_text("team=ops")
        expect(hotel).to_contain_text("hi")  # the previews, from the records in S3
        expect(hotel).to_contain_text("hello")
        shot(page, "12-aws-requests")
        hotel.click()
        # The full record, read back from its line in the delivered S3 object.
        expect(page.locator("#drawer #conversation .msg.user")).to_contain_text("hi")
        expect(page.locator("#drawer #conversation .msg.assistant")).to_contain_text("hello")
        page.click('button[aria-label="thumbs up"]')
        expect(page.locator("#score-list")).to_contain_text("feedback: true")
        page.goto(served.url + "/dashboard/#/sessions/aws-trip")
        nested = page.locator('#session-tree li[data-path="/plan"] li[data-path="/plan/hotel"]')
        expect(nested.locator(f'li[data-id="{records[1]["request_id"]}"]')).to_be_visible()
        shot(page, "13-aws-session")
        # Fitted to the calls, in hours: the rollups' finest bucket.
        page.goto(served.url + "/dashboard/#/charts")
        expect(page.locator("#span")).to_contain_text("one bar per hour")
        assert all(n > 0 for n in _drawn(page, "Requests")["found"].values())
        page.goto(served.url + "/dashboard/#/charts?since=24h&by=user")
        expect(page.locator("#groups tbody tr", has_text="lee")).to_contain_text("2")
        shot(page, "14-aws-charts", full=True)
        page.close()  # before the server stops: its polling would fail
    expected_refusals(console)  # the first load, before the key was given
