"""relaylog's echo route (relay/echo.py) and `relaylog verify --url` against `relaylog serve`, both
run as users run them: separate processes, keys made with `relaylog keys create`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy, read_records
from tests.test_serve import REPO, Served, _free_port, served  # noqa: F401 (served: a fixture)

pytestmark = pytest.mark.slow

RELAYLOG = Path(sys.executable).parent / "relaylog"  # the console script `pip install` made
ECHO = "/relaylog/verify"


def _relaylog(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "RELAYLOG_KEY"}
    return subprocess.run(
        [str(RELAYLOG), *args], env={**environment, **env}, capture_output=True, text=True, timeout=120, cwd=REPO
    )


def _stage_status(out: str) -> list[tuple[str, str]]:
    return [(line.split()[0], line.split()[1]) for line in out.splitlines() if line.startswith(("ok ", "FAILED "))]


def test_serve_then_verify_green_then_refused_without_a_key_then_green_with_it(
    served: tuple[Served, Path],  # noqa: F811 (the fixture imported above)
    standin: StandIn,
) -> None:
    server, data_dir = served
    done = _relaylog("verify", "--url", server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _stage_status(done.stdout) == [("ok", "proxy"), ("ok", "query_api"), ("ok", "dashboard")]
    assert "verified: every stage passed" in done.stdout

    created = _relaylog("keys", "create", "--name", "verify", "--data-dir", str(data_dir))
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    _wait_until_keys_are_seen(server.url)

    refused = _relaylog("verify", "--url", server.url)
    assert refused.returncode == 1
    assert _stage_status(refused.stdout) == [("FAILED", "proxy")]
    assert "401" in refused.stdout and "pass one with --key or the RELAYLOG_KEY environment variable" in refused.stdout
    assert refused.stderr.strip().endswith("relaylog: error: verify failed at stage proxy")

    by_env = _relaylog("verify", "--url", server.url, RELAYLOG_KEY=key)
    by_option = _relaylog("verify", "--url", server.url, "--key", key, "--json")
    assert by_env.returncode == by_option.returncode == 0, by_env.stdout + by_option.stdout
    verdict = json.loads(by_option.stdout)
    assert verdict["verified"] and [s["status"] for s in verdict["stages"]] == ["ok"] * 3
    for run in (done, refused, by_env, by_option):  # `keys create` alone shows it, once
        assert key not in run.stdout + run.stderr

    # Grouped apart from real traffic: a real call and the echoes in their own provider rows.
    httpx.post(
        f"{server.url}/v1/chat/completions",
        headers={"Authorization": "Bearer sk-test", "Helicone-Auth": f"Bearer {key}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    ).raise_for_status()
    deadline = time.monotonic() + 10
    while not any(r["provider"] == "openai" for r in read_records(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    echoes = [r for r in read_records(data_dir) if r["provider"] == "relaylog"]
    assert {r["request_id"] for r in echoes} >= {json.loads(by_option.stdout)["request_id"]}
    stats = _relaylog("stats", "--by", "provider", "--json", "--data-dir", str(data_dir))
    groups = {g["key"]: g for g in json.loads(stats.stdout)["groups"]}
    assert groups["relaylog"]["requests"] == len(echoes)
    assert groups["relaylog"]["errors"] == sum(r["status"] == 401 for r in echoes) >= 2  # the waits' and verify's
    # No provider, no usage, no price: nothing added to the spend.
    assert groups["relaylog"]["cost_usd"] == 0 and groups["relaylog"]["usage_unknown"] == len(echoes)
    assert groups["openai"]["requests"] == 1 and groups["openai"]["cost_usd"] > 0


def _wait_until_keys_are_seen(url: str) -> None:
    """The server reads new keys within a second: until then the echo still answers without one."""
    deadline = time.monotonic() + 10
    while httpx.post(url + ECHO, content=b"{}").status_code != 401:
        assert time.monotonic() < deadline, "the server did not see the new key"
        time.sleep(0.05)


def test_verify_names_a_server_that_is_not_there() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    done = _relaylog("verify", "--url", url, "--timeout", "proxy=0.5")
    assert done.returncode == 1
    assert done.stdout.splitlines()[1].startswith("FAILED   proxy") and "no answer from" in done.stdout
    assert "check: the URL (is `relaylog serve` running there?" in done.stdout


# -- the echo route itself, in process ---------------------------------------------------------------


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[RunningProxy]:
    # Every provider points at the discard port: a call that reached one would fail with 502.
    with RunningProxy(tmp_path / "data", "http://127.0.0.1:9") as running:
        yield running


def test_the_echo_answers_without_a_provider_and_is_recorded_as_relaylogs(proxy: RunningProxy) -> None:
    request_id = str(uuid.uuid4())
    body = b'{"verify": "ping", "text": "caf\xc3\xa9"}'
    answer = httpx.post(
        proxy.url + ECHO,
        content=body,
        headers={"Content-Type": "application/json", "Helicone-Request-Id": request_id,
                 "Helicone-Property-Check": "deploy", "Authorization": "Bearer sk-not-sent-anywhere"},
    )  # fmt: skip
    assert answer.status_code == 200 and answer.headers["helicone-id"] == request_id
    assert answer.json() == {"object": "relaylog.echo", "request_id": request_id, "provider_called": False,
                             "echo": body.decode()}  # fmt: skip
    record = proxy.record(request_id)
    assert (record["provider"], record["endpoint"], record["method"], record["status"]) == (
        "relaylog",
        "/verify",
        "POST",
        200,
    )
    assert (record["attempt_count"], record["upstream_ms"], record["error_type"]) == (0, None, None)
    assert (record["usage_source"], record["cost_usd"], record["cost_source"]) == ("absent", None, "no_usage")
    assert record["request_body"] == body.decode() and record["response_body"] == answer.text
    assert record["properties"] == {"check": "deploy"}
    assert "sk-not-sent-anywhere" not in json.dumps(record)


def test_the_echo_is_refused_like_any_call_when_keys_exist(proxy: RunningProxy) -> None:
    secret, info = proxy.keys.create("ci")
    _wait_until_keys_are_seen(proxy.url)
    for auth in ({}, {"Helicone-Auth": "Bearer rl-wrong"}):
        refused = httpx.post(proxy.url + ECHO, content=b"{}", headers=auth)
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
        assert proxy.record(refused.headers["helicone-id"])["error_type"] == "unauthorized"
    answer = httpx.post(proxy.url + ECHO, content=b"{}", headers={"Helicone-Auth": f"Bearer {secret}"})
    assert answer.status_code == 200
    assert proxy.record(answer.headers["helicone-id"])["key_id"] == info.key_id


def test_the_echo_keeps_the_relays_limits(tmp_path: Path) -> None:
    with RunningProxy(tmp_path / "data", "http://127.0.0.1:9", max_request_bytes=100) as proxy:
        answer = httpx.post(proxy.url + ECHO, content=b"x" * 101)
        assert answer.status_code == 413 and answer.json()["error"]["type"] == "body_too_large"
        # Only the exact path is relaylog's: anything else under /relaylog is an unknown provider.
        assert httpx.post(proxy.url + ECHO + "/more", content=b"{}").status_code == 404


def test_the_readme_names_every_stage_and_its_default_timeout() -> None:
    from relaylog.verify.stages import STAGES, TIMEOUTS_S

    text = (REPO / "README.md").read_text()
    section = text[text.index("### Verify a deployment") :]
    section = section[: section.index("\n### ", 1)]
    for stage in STAGES:
        assert re.search(rf"\b(ok|skipped)\s+{stage}\b", section), stage  # in the example output
    assert "aggregator and athena 120 s; proxy and query_api 30 s;\ndashboard 15 s" in section
    assert (TIMEOUTS_S["aggregator"], TIMEOUTS_S["athena"], TIMEOUTS_S["proxy"]) == (120, 120, 30)
    assert (TIMEOUTS_S["query_api"], TIMEOUTS_S["dashboard"]) == (30, 15)
