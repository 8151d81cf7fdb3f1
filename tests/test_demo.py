"""`relaylog demo` as a newcomer runs it: a process of its own, no provider key, its URL read from
stdout, the mix checked through the query API, then Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from relaylog.demo.calls import CACHED, calls

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_demo_populates_the_dashboard_without_a_provider_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RELAYLOG_", "OPENAI_", "ANTHROPIC_", "GEMINI_"))}
    err = tmp_path / "stderr"
    started = time.monotonic()
    with err.open("wb") as stderr:
        demo = subprocess.Popen(
            [sys.executable, "-m", "relaylog", "demo", "--port", "0"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
        try:
            assert demo.stdout is not None
            line = demo.stdout.readline()
            populated_s = time.monotonic() - started
            found = re.fullmatch(r"Open (http://127\.0\.0\.1:\d+)/dashboard/  \(Ctrl-C stops the demo\)\n", line)
            assert found, (line, err.read_text())
            base = found[1]
            print(f"\nrelaylog demo: populated dashboard {populated_s:.1f} s after start")

            page = httpx.get(base + "/dashboard/")
            assert page.status_code == 200 and "<html" in page.text.lower()
            rows = httpx.get(base + "/api/v1/requests", params={"limit": 100}).json()["data"]
            assert len(rows) == len(calls()) + 1  # every call of the mix, and the cache's second one
            assert {r["provider"] for r in rows} == {"openai", "anthropic", "gemini"}
            assert {r["provider"] for r in rows if r["stream"]} == {"openai", "anthropic", "gemini"}
            assert {r["status"] for r in rows} >= {200, 429, 529}
            assert any(r["error_type"] == "upstream_disconnect" for r in rows)  # the stream cut mid-answer
            hits = [r for r in rows if r["cache_status"] == "HIT"]
            assert len(hits) == 1 and hits[0]["model"] == CACHED.body["model"]
            assert {r["user_id"] for r in rows} == {"alice@example.com", "bob@example.com", "carol@example.com"}
            assert all(r["properties"].get("environment") == "demo" for r in rows)
            session = httpx.get(base + "/api/v1/sessions/demo-trip-7f3a").json()["data"]
            assert session["requests"] == 4, session
            versions = httpx.get(base + "/api/v1/prompts/trip-summary").json()["data"]["versions"]
            assert [v["version"] for v in versions] == [1, 2]
            with_feedback = [r for r in rows if r["scores"].get("feedback") is True]
            assert len(with_feedback) == 1 and with_feedback[0]["scores"]["relevance"] == 0.9
            # A tool call and an image went through and are in the bodies.
            detail = [httpx.get(f"{base}/api/v1/requests/{r['request_id']}").json()["data"] for r in rows]
            assert any("image_url" in (d["request_body"] or "") for d in detail)
            assert any("tool_calls" in (d["response_body"] or "") for d in detail)
        finally:
            demo.send_signal(signal.SIGINT)
            code = demo.wait(timeout=60)
    text = err.read_text()
    assert code == 0, text
    assert "Traceback" not in text
    where = re.search(r"data dir (\S+) \(temporary\)", text)
    assert where and not Path(where[1]).exists()  # the temporary data dir went with the demo
    assert "Application shutdown complete" in text  # serve was stopped, not killed


def test_demo_refuses_a_data_dir_whose_keys_it_cannot_send(tmp_path: Path) -> None:
    from relaylog.keys.file import KeyStore

    KeyStore.in_data_dir(tmp_path).create("someone")
    done = subprocess.run(
        [sys.executable, "-m", "relaylog", "demo", "--port", "0", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr
        == f"relaylog: error: {tmp_path} has active relaylog keys and the demo sends none; give it another --data-dir\n"
    )
