"""The dashboard in headless Chromium (Debian's, driven by Playwright): calls sent through relaylog
with the real `openai` SDK appear live, filter by property, open with their prompt and completion,
show their session tree, compare prompt versions and take a score.

Screenshots of each step are kept in tests/artifacts/dashboard/.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from relaylog.aggregate.process import process_object
from relaylog.aws import layout
from relaylog.aws.keys import DynamoKeyStore
from relaylog.query.api import QueryApp
from relaylog.query.dynamo import DynamoBackend

from tests.support.aws import Stack
from tests.support.proxy import RunningProxy, ServedApp, module_proxy
from tests.support.records import make_record

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
TIMEOUT_MS = 10_000


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


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.set_default_timeout(TIMEOUT_MS)
    yield opened
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


served = module_proxy("dashboard")


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def send(proxy: RunningProxy, text: str, stream: bool = False, **headers: str) -> str:
    request_id = str(uuid.uuid4())
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=API_KEY, max_retries=0)
    messages = [{"role": "system", "content": "You are a travel agent."}, {"role": "user", "content": text}]
    extra = {"Helicone-Request-Id": request_id, **headers}
    if stream:
        for _ in client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, extra_headers=extra
        ):  # type: ignore[arg-type]
            pass
    else:
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, extra_headers=extra)  # type: ignore[arg-type]
    proxy.record(request_id)
    return request_id


def row(page: Page, request_id: str) -> object:
    return page.locator(f'#requests tbody tr[data-id="{request_id}"]')


def test_calls_appear_live_and_filter_by_property(page: Page, served: RunningProxy) -> None:
    page.goto(served.url + "/dashboard/")
    expect(page.locator("h1")).to_have_text("Requests")
    # Sent after the page loaded: the table must pick it up without a reload.
    first = send(served, "Find me a flight", **{"Helicone-User-Id": "maya", "Helicone-Property-Team": "growth"})
    second = send(served, "And a hotel", **{"Helicone-User-Id": "maya", "Helicone-Property-Team": "search"})
    expect(row(page, first)).to_be_visible()  # type: ignore[attr-defined]
    expect(row(page, second)).to_be_visible()  # type: ignore[attr-defined]
    expect(row(page, first)).to_contain_text("maya")  # type: ignore[attr-defined]
    expect(row(page, first)).to_contain_text("team=growth")  # type: ignore[attr-defined]
    shot(page, "01-requests-live")

    page.fill('input[name="property"]', "team=growth")
    page.click('form.filters button[type="submit"]')
    expect(row(page, first)).to_be_visible()  # type: ignore[attr-defined]
    expect(row(page, second)).to_have_count(0)  # type: ignore[attr-defined]
    assert "property=team%3Dgrowth" in page.url
    shot(page, "02-requests-filtered")


def test_request_view_shows_prompt_and_streamed_completion_and_takes_a_score(page: Page, served: RunningProxy) -> None:
    request_id = send(served, "Plan three days in Lisbon", stream=True)
    page.goto(served.url + "/dashboard/#/requests")
    row(page, request_id).click()  # type: ignore[attr-defined]
    conversation = page.locator("#conversation")
    expect(conversation.locator(".msg.system")).to_contain_text("You are a travel agent.")
    expect(conversation.locator(".msg.user")).to_contain_text("Plan three days in Lisbon")
    # The stand-in's streamed answer, reassembled from its SSE chunks.
    record = served.record(request_id)
    assert record["stream"] is True and record["response_body"].startswith("data: ")
    answer = page.locator("#conversation .msg.assistant .text")
    expect(answer).not_to_be_empty()
    assert "data:" not in answer.inner_text()
    shot(page, "03-request-conversation")

    page.click("text=Raw")
    expect(page.locator("#raw pre").first).to_contain_text('"Plan three days in Lisbon"')
    shot(page, "04-request-raw")

    page.fill('input[name="comment"]', "great plan")
    page.click('button[aria-label="thumbs up"]')
    expect(page.locator("#score-list")).to_contain_text("feedback: true")
    page.fill('input[name="score-name"]', "accuracy")
    page.fill('input[name="score-value"]', "0.8")
    page.click("text=Add score")
    expect(page.locator("#score-list")).to_contain_text("accuracy: 0.8")
    shot(page, "05-request-scored")
    page.reload()
    expect(page.locator("#score-list")).to_contain_text("accuracy: 0.8")
    expect(page.get_by_text("Comment: great plan")).to_be_visible()


def test_request_view_shows_retries_and_cache_hits(page: Page, served: RunningProxy) -> None:
    gateway = {
        "Helicone-Cache-Enabled": "true",
        "Helicone-Retry-Enabled": "true",
        "Helicone-Retry-Min-Timeout": "10",
        "x-standin-fault": f"status=503;times=1;id={uuid.uuid4().hex}",
    }
    missed = send(served, "Weekend in Sintra", **gateway)
    hit = send(served, "Weekend in Sintra", **gateway)
    page.goto(served.url + f"/dashboard/#/requests/{missed}")
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("MISS")
    expect(facts).to_contain_text(re.compile(r"503 \(waited [\d.]+ ms\) → 200"))
    shot(page, "15-request-retried")
    page.goto(served.url + f"/dashboard/#/requests/{hit}")
    expect(facts).to_contain_text("HIT")
    expect(facts).to_contain_text("cache_hit")
    expect(facts).to_contain_text("property cache_saved_usd")


def test_session_tree(page: Page, served: RunningProxy) -> None:
    session = {"Helicone-Session-Id": "trip-7", "Helicone-Session-Name": "Lisbon trip"}
    outline = send(served, "Outline", **session, **{"Helicone-Session-Path": "/outline"})
    detail = send(served, "Day one", **session, **{"Helicone-Session-Path": "/outline/day-1"})
    page.goto(served.url + "/dashboard/#/sessions")
    page.locator("#sessions tbody tr", has_text="trip-7").click()
    tree = page.locator("#session-tree")
    expect(page.locator("h1")).to_contain_text("Lisbon trip")
    expect(tree.locator('li[data-path="/outline"]')).to_be_visible()
    nested = tree.locator('li[data-path="/outline"] li[data-path="/outline/day-1"]')
    expect(nested.locator(f'li[data-id="{detail}"]')).to_be_visible()
    expect(tree.locator(f'li[data-path="/outline"] > ul > li[data-id="{outline}"]')).to_be_visible()
    shot(page, "06-session-tree")
    nested.locator(f'li[data-id="{detail}"]').click()
    expect(page.locator("#conversation .msg.user")).to_contain_text("Day one")


def test_prompt_versions_diff(page: Page, served: RunningProxy) -> None:
    tag = '<helicone-prompt-input key="city">{}</helicone-prompt-input>'
    send(served, "Best food in " + tag.format("Porto"), **{"Helicone-Prompt-Id": "food-guide"})
    send(served, "Best cheap food in " + tag.format("Faro"), **{"Helicone-Prompt-Id": "food-guide"})
    page.goto(served.url + "/dashboard/#/prompts")
    page.locator("#prompts tbody tr", has_text="food-guide").click()
    expect(page.locator("#versions tbody tr")).to_have_count(2)
    diff = page.locator("#diff")
    expect(diff.locator(".del")).to_have_text("- Best food in {{city}}")
    expect(diff.locator(".add")).to_have_text("+ Best cheap food in {{city}}")
    shot(page, "07-prompt-diff")


def test_charts_render_with_group_by(page: Page, served: RunningProxy) -> None:
    send(served, "Chart me")
    page.goto(served.url + "/dashboard/#/charts?since=1h&by=model")
    expect(page.locator("#totals")).to_contain_text("Requests")
    for title in ("Cost", "Requests", "Tokens (in + out)", "Latency percentiles"):
        expect(page.locator(f'[data-chart="{title}"] svg circle').first).to_be_attached()
    expect(page.locator("#groups tbody tr", has_text="gpt-4o-mini")).to_be_visible()
    shot(page, "08-charts")


def test_key_prompt_when_keys_exist(page: Page, make_proxy: object) -> None:
    proxy = make_proxy()  # type: ignore[operator]
    secret, _ = proxy.keys.create("browser")
    page.goto(proxy.url + "/dashboard/")
    expect(page.locator(".key-form")).to_be_visible()
    shot(page, "09-key-needed")
    page.fill('input[name="key"]', secret)
    page.click(".key-form button")
    expect(page.locator("h1")).to_have_text("Requests")
    expect(page.locator("#requests")).to_be_visible()


PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_images_tool_calls_and_tool_results_render(page: Page, served: RunningProxy) -> None:
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=API_KEY, max_retries=0)
    asking = str(uuid.uuid4())
    question = [
        {"type": "text", "text": "What is the weather where this photo was taken?"},
        {"type": "image_url", "image_url": {"url": PIXEL}},
    ]
    messages: list[dict[str, object]] = [{"role": "user", "content": question}]
    calls: dict[int, dict[str, str]] = {}
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,  # type: ignore[arg-type]
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        stream=True,
        extra_headers={"Helicone-Request-Id": asking},
    )
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += delta.id or ""
            entry["name"] += (delta.function and delta.function.name) or ""
            entry["arguments"] += (delta.function and delta.function.arguments) or ""
    served.record(asking)
    call = calls[0]

    page.goto(served.url + f"/dashboard/#/requests/{asking}")
    conversation = page.locator("#conversation")
    expect(conversation.locator(".msg.user img.thumb")).to_have_attribute("src", PIXEL)
    # The streamed tool call, reassembled from its argument deltas.
    expect(conversation.locator(".msg.assistant .tool-call")).to_have_text(
        f"tool call {call['name']}({call['arguments']})"
    )
    shot(page, "10-image-and-streamed-tool-call")

    answering = str(uuid.uuid4())
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": "18 C and sunny"},
    ]
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,  # type: ignore[arg-type]
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        extra_headers={"Helicone-Request-Id": answering},
    )
    served.record(answering)
    page.goto(served.url + f"/dashboard/#/requests/{answering}")
    expect(conversation.locator(".msg.tool")).to_contain_text("18 C and sunny")
    expect(conversation.locator(".msg.tool .role")).to_have_text(f"tool {call['id']}")
    expect(conversation.locator(".msg.assistant").first).to_contain_text(f"tool call {call['name']}(")
    shot(page, "11-tool-result")


# -- the same dashboard on the AWS back end (DynamoDB index and rollups, S3 records; moto) ---------


def test_the_dashboard_on_the_aws_back_end(page: Page, aws_stack: Stack) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    trip = {"session_id": "aws-trip", "session_name": "AWS trip", "user_id": "lee", "properties": {"team": "ops"}}
    records = [
        make_record(now, session_path="/plan", **trip),
        make_record(now + timedelta(minutes=1), session_path="/plan/hotel", **trip),
        make_record(now + timedelta(minutes=2), user_id="kim"),
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
            expect(row(page, record["request_id"])).to_be_visible()  # type: ignore[attr-defined]
        expect(row(page, records[1]["request_id"])).to_contain_text("team=ops")  # type: ignore[attr-defined]
        shot(page, "12-aws-requests")
        row(page, records[1]["request_id"]).click()  # type: ignore[attr-defined]
        # The full record, read back from its line in the delivered S3 object.
        expect(page.locator("#conversation .msg.user")).to_contain_text("hi")
        expect(page.locator("#conversation .msg.assistant")).to_contain_text("hello")
        page.click('button[aria-label="thumbs up"]')
        expect(page.locator("#score-list")).to_contain_text("feedback: true")
        page.goto(served.url + "/dashboard/#/sessions/aws-trip")
        nested = page.locator('#session-tree li[data-path="/plan"] li[data-path="/plan/hotel"]')
        expect(nested.locator(f'li[data-id="{records[1]["request_id"]}"]')).to_be_visible()
        shot(page, "13-aws-session")
        page.goto(served.url + "/dashboard/#/charts?since=24h&by=user")
        expect(page.locator("#groups tbody tr", has_text="lee")).to_contain_text("2")
        shot(page, "14-aws-charts")
