"""Node clients (the Vercel AI SDK and the OpenAI Node SDK) give the same output through relaylog as
directly against the provider stand-in, and leave correct records.

The scripts live in tests/node; `make test` installs their packages (`npm install` in tests/node).
A missing node_modules is a failure, not a skip: these are the clients relaylog exists for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import genai_prices
import orjson
import pytest
from relaylog.standin import StandIn

from tests.support.pricing import genai_cost
from tests.support.proxy import RunningProxy, module_proxy

pytestmark = pytest.mark.node

NODE_DIR = Path(__file__).resolve().parent / "node"
PACKAGES = ("ai", "@ai-sdk/openai", "@ai-sdk/amazon-bedrock", "openai")
API_KEY = "sk-test-provider-key"
# Headers relaylog adds to a relayed event stream (the rest must be the provider's, unchanged).
RELAY_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@pytest.fixture(scope="module")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail("`node` is not on PATH: Node.js 20+ is needed for tests/test_node_clients.py")
    missing = [name for name in PACKAGES if not (NODE_DIR / "node_modules" / name / "package.json").is_file()]
    if missing:
        pytest.fail(
            f"tests/node/node_modules lacks {', '.join(missing)}: run `make tests/node/node_modules/.installed` "
            "(or `npm install` in tests/node) before the tests"
        )
    return path


proxy = module_proxy("relaylog-node")


def start(node: str, script: str, base_url: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    environ = {**os.environ, "OPENAI_API_KEY": API_KEY, **env}
    return subprocess.Popen(
        [node, script, base_url, *args], cwd=NODE_DIR, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def finish(process: subprocess.Popen[bytes], *, ok: bool = True) -> Any:
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    if not ok:
        assert process.returncode == 1, f"the script was expected to fail:\n{err.decode()}"
        return orjson.loads(out)["error"]
    assert process.returncode == 0, f"{process.args!r} exited with {process.returncode}:\n{err.decode()}"
    return orjson.loads(out)


def run_both(
    node: str, standin: StandIn, proxy: RunningProxy, script: str, *args: str, **env: str
) -> tuple[Any, Any, dict[str, Any]]:
    """The script directly and through relaylog, concurrently: (direct, relayed, record)."""
    request_id = str(uuid.uuid4())
    direct = start(node, script, standin.url + "/v1", *args, **env)
    relayed = start(node, script, proxy.url + "/v1", *args, HELICONE_REQUEST_ID=request_id, **env)
    mine, through = finish(direct), finish(relayed)
    assert mine["heliconeId"] is None
    assert through["heliconeId"] == request_id
    return mine, through, proxy.record(request_id)


def strip_relay_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in RELAY_STREAM_HEADERS.items():
        assert headers.get(name) == value, f"relaylog should add {name}: {value}"
    return {name: value for name, value in headers.items() if name not in RELAY_STREAM_HEADERS}


def without_ids(output: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in output.items() if key != "heliconeId"}


def check_record(record: dict[str, Any], expected: dict[str, Any]) -> None:
    assert {name: record[name] for name in expected} == expected
    assert record["cost_usd"] is not None and record["cost_usd"] > 0
    assert record["cost_source"] == f"genai-prices@{genai_prices.__version__}"
    usage = {name: record[name] for name in ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens")}
    assert record["cost_usd"] == pytest.approx(
        genai_cost(usage, record["response_model"], "openai"), rel=1e-9, abs=1e-12
    )
    assert 0 < record["ttft_ms"] <= record["latency_ms"]
    assert record["response_body"]
    assert API_KEY not in orjson.dumps(record).decode()


def vercel_record(output: dict[str, Any], sent: bytes, **overrides: Any) -> dict[str, Any]:
    """What the record of a relayed vercel_stream.mjs run must say, from the usage the SDK reported."""
    usage = output["usage"]
    raw = usage["raw"]
    assert usage["inputTokens"] == raw["input_tokens"] and usage["outputTokens"] == raw["output_tokens"]
    return {
        "provider": "openai",
        "endpoint": "/v1/responses",
        "method": "POST",
        "model": "gpt-4o",
        "response_model": output["response"]["modelId"],
        "status": 200,
        "stream": True,
        "input_tokens": usage["inputTokens"],
        "output_tokens": usage["outputTokens"],
        "cache_read_tokens": usage["inputTokenDetails"]["cacheReadTokens"],
        "cache_write_tokens": None,
        "reasoning_tokens": usage["outputTokenDetails"]["reasoningTokens"],
        "usage_source": "provider",  # Responses streams carry usage: nothing to inject
        "properties": {"app": "vercel-seed"},
        "user_id": None,
        "key_id": None,
        "error_type": None,
        "parse_error": None,
        "request_body": sent.decode(),
        **overrides,
    }


def split_direct_relayed(standin: StandIn) -> tuple[Any, Any]:
    """The two requests the stand-in received from a concurrent direct + relayed run: the direct
    one still carries the client's Helicone-* headers, the relayed one must have none."""
    requests = [r for r in standin.requests if r.route == "/v1/responses"]
    assert len(requests) == 2, [r.route for r in standin.requests]
    relayed = [r for r in requests if not any(n.lower().startswith("helicone-") for n, _ in r.headers)]
    direct = [r for r in requests if r.header("helicone-auth") is not None]
    assert len(relayed) == 1 and len(direct) == 1, "relaylog must strip every Helicone-* header"
    return direct[0], relayed[0]


# --------------------------------------------------------------------------------------------
# Vercel AI SDK: streamText over the Responses API


def test_vercel_stream_text(node: str, standin: StandIn, proxy: RunningProxy) -> None:
    standin.clear()
    mine, through, record = run_both(node, standin, proxy, "vercel_stream.mjs")
    direct_sent, relayed_sent = split_direct_relayed(standin)
    assert relayed_sent.body == direct_sent.body  # the Responses body is relayed untouched
    assert orjson.loads(relayed_sent.body)["stream"] is True
    assert direct_sent.header("helicone-property-app") == "vercel-seed"
    assert relayed_sent.header("authorization") == f"Bearer {API_KEY}"

    assert through["response"]["headers"].pop("helicone-id", None) is None  # printed separately
    through["response"]["headers"] = strip_relay_headers(through["response"]["headers"])
    assert without_ids(through) == without_ids(mine)
    assert mine["text"] and mine["finishReason"] == "stop" and "".join(mine["deltas"]) == mine["text"]
    assert mine["usage"]["inputTokens"] > 0 and mine["usage"]["outputTokens"] > 0
    check_record(record, vercel_record(mine, relayed_sent.body))
    assert record["response_body"].startswith("event: response.created\n")


# --------------------------------------------------------------------------------------------
# OpenAI Node SDK: chat.completions.create({ stream: true })


def test_openai_node_stream_without_usage(node: str, standin: StandIn, proxy: RunningProxy) -> None:
    asked = start(node, "openai_stream.mjs", standin.url + "/v1", "--usage")
    mine, through, record = run_both(node, standin, proxy, "openai_stream.mjs")
    with_usage = finish(asked)

    assert through["chunks"] == mine["chunks"]
    assert strip_relay_headers(through["headers"]) == mine["headers"]
    assert all("usage" not in chunk and chunk["choices"] for chunk in through["chunks"])
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in through["chunks"])
    assert text and through["chunks"][-1]["choices"][0]["finish_reason"] == "stop"

    usage = with_usage["chunks"][-1]["usage"]
    assert with_usage["chunks"][-1]["choices"] == []
    check_record(
        record,
        {
            "provider": "openai",
            "endpoint": "/v1/chat/completions",
            "model": "gpt-4o-mini",
            "response_model": mine["chunks"][0]["model"],
            "status": 200,
            "stream": True,
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "cache_read_tokens": usage["prompt_tokens_details"]["cached_tokens"],
            "reasoning_tokens": usage["completion_tokens_details"]["reasoning_tokens"],
            "usage_source": "provider_injected",
            "error_type": None,
            "parse_error": None,
            "request_body": '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}],"stream":true}',
        },
    )
    assert '"usage"' not in record["response_body"]


def test_openai_node_stream_with_usage(node: str, standin: StandIn, proxy: RunningProxy) -> None:
    mine, through, record = run_both(node, standin, proxy, "openai_stream.mjs", "--usage")
    assert through["chunks"] == mine["chunks"]
    assert strip_relay_headers(through["headers"]) == mine["headers"]
    usage = through["chunks"][-1]["usage"]
    assert through["chunks"][-1]["choices"] == [] and usage["prompt_tokens"] > 0
    check_record(
        record,
        {
            "endpoint": "/v1/chat/completions",
            "model": "gpt-4o-mini",
            "stream": True,
            "input_tokens": usage["prompt_tokens"],
            "output_tokens": usage["completion_tokens"],
            "usage_source": "provider",
            "error_type": None,
        },
    )


# --------------------------------------------------------------------------------------------
# relaylog keys, presented the Helicone way by the Vercel client


def test_vercel_with_relaylog_key(node: str, standin: StandIn, make_proxy: Callable[..., RunningProxy]) -> None:
    keyed = make_proxy()
    standin.clear()
    secret, info = keyed.keys.create("ci")
    direct = start(node, "vercel_stream.mjs", standin.url + "/v1")

    request_id = str(uuid.uuid4())
    relayed = start(
        node, "vercel_stream.mjs", keyed.url + "/v1", HELICONE_AUTH=f"Bearer {secret}", HELICONE_REQUEST_ID=request_id
    )
    mine, through = finish(direct), finish(relayed)
    assert through["heliconeId"] == request_id
    through["response"]["headers"] = strip_relay_headers(through["response"]["headers"])
    assert without_ids(through) == without_ids(mine)
    record = keyed.record(request_id)
    direct_sent, relayed_sent = split_direct_relayed(standin)  # the relaylog key never goes upstream
    assert relayed_sent.body == direct_sent.body
    check_record(record, vercel_record(mine, relayed_sent.body, key_id=info.key_id))
    assert secret not in orjson.dumps(record).decode()

    # A wrong key is refused by relaylog itself; the provider never hears of the call.
    seen = len(standin.requests)
    refused_id = str(uuid.uuid4())
    error = finish(
        start(
            node,
            "vercel_stream.mjs",
            keyed.url + "/v1",
            HELICONE_AUTH="Bearer rl-not-a-real-key",
            HELICONE_REQUEST_ID=refused_id,
        ),
        ok=False,
    )
    assert error["name"] == "AI_APICallError" and error["statusCode"] == 401
    assert orjson.loads(error["responseBody"]) == {
        "error": {"type": "unauthorized", "message": "Missing or invalid Helicone-Auth: Bearer <relaylog key>"}
    }
    assert len(standin.requests) == seen
    refused = keyed.record(refused_id)
    expected = {"status": 401, "error_type": "unauthorized", "key_id": None, "usage_source": "absent", "cost_usd": None}
    assert {name: refused[name] for name in expected} == expected
    assert "rl-not-a-real-key" not in orjson.dumps(refused).decode()
