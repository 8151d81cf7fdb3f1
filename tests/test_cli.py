"""The `relaylog` command line, in-process through main() and once as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import relaylog
from relaylog.cli import keys as cli_keys
from relaylog.cli import main
from relaylog.keys import KeyInfo
from relaylog.record import SUMMARY_FIELDS

from tests.support.records import BASE, assert_metrics, expected_metrics, make_record, sample_records, write_records

LAYERS = Path(__file__).resolve().parents[1] / "layers"


@pytest.fixture
def records() -> list[dict[str, Any]]:
    return sample_records()


@pytest.fixture
def data_dir(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    data = tmp_path / "data"
    files = write_records(data, records)
    with files[-1].open("ab") as f:
        f.write(b'{"schema_version":1,"request_id":"cut-sh')  # crash mid-line
    return data


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return orjson.loads(out)


# -- requests ----------------------------------------------------------------------------------------


def test_requests_table(capsys: pytest.CaptureFixture[str], data_dir: Path, records: list[dict[str, Any]]) -> None:
    code, out, err = run(capsys, "requests", "--data-dir", str(data_dir), "--limit", "5")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "TIME",
        "(UTC)",
        "ID",
        "PROVIDER",
        "MODEL",
        "STATUS",
        "ERROR",
        "IN",
        "OUT",
        "COST",
        "LATENCY",
        "USER",
    ]
    assert len(lines) == 6
    newest = sorted(records, key=lambda r: r["created_at"], reverse=True)
    for line, record in zip(lines[1:], newest[:5], strict=True):
        # Aligned columns: each row's id and model start where their headers do.
        assert line[lines[0].index("ID") :].startswith(record["request_id"][:8])
        assert line[lines[0].index("MODEL") :].startswith(record["model"])
    assert "relaylog: warning: skipped an incomplete last line" in err


def test_requests_json_and_filters(
    capsys: pytest.CaptureFixture[str], data_dir: Path, records: list[dict[str, Any]]
) -> None:
    rows = run_json(capsys, "requests", "--data-dir", str(data_dir), "--limit", "100")
    assert len(rows) == len(records)
    assert list(rows[0]) == list(SUMMARY_FIELDS)
    rows = run_json(capsys, "requests", "--data-dir", str(data_dir), "--provider", "openai", "--user", "bob")
    assert {r["request_id"] for r in rows} == {
        r["request_id"] for r in records if r["provider"] == "openai" and r["user_id"] == "bob"
    }
    assert rows
    rows = run_json(capsys, "requests", "--data-dir", str(data_dir), "--model", "x' OR '1'='1", "--session", "sess-1")
    assert rows == []
    since = run_json(capsys, "requests", "--data-dir", str(data_dir), "--since", "2026-11-26T05:00:00Z")
    assert {r["request_id"] for r in since} == {r["request_id"] for r in records if r["created_at"] >= "2026-11-26T05"}


def test_data_dir_from_environment(
    capsys: pytest.CaptureFixture[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAYLOG_DATA_DIR", str(data_dir))
    assert len(run_json(capsys, "requests", "--limit", "3")) == 3


def test_default_data_dir_is_relative_to_cwd(
    capsys: pytest.CaptureFixture[str], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELAYLOG_DATA_DIR", raising=False)
    monkeypatch.chdir(data_dir.parent)
    data_dir.rename(data_dir.parent / "relaylog-data")
    assert len(run_json(capsys, "requests", "--limit", "2")) == 2


@pytest.mark.parametrize("command", [["requests"], ["stats"], ["stats", "--by", "property:env"], ["keys", "list"]])
def test_no_data_yet_is_friendly(capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]) -> None:
    code, out, err = run(capsys, *command, "--data-dir", str(tmp_path / "fresh"))
    assert code == 0 and err == ""
    assert out.startswith("No ") and out[-1] == "\n" and len(out.splitlines()) == 1
    assert not (tmp_path / "fresh").exists()  # reading never creates the data dir


def test_no_data_yet_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = str(tmp_path / "fresh")
    assert run_json(capsys, "requests", "--data-dir", empty) == []
    assert run_json(capsys, "query", "SELECT * FROM requests", "--data-dir", empty) == []
    stats = run_json(capsys, "stats", "--data-dir", empty)
    assert stats["total"]["requests"] == 0 and stats["groups"] == []


# -- show --------------------------------------------------------------------------------------------


def test_show(capsys: pytest.CaptureFixture[str], data_dir: Path, records: list[dict[str, Any]]) -> None:
    target = records[3]
    # The record as stored, with its scores and feedback (none here).
    shown = run_json(capsys, "show", target["request_id"][:8], "--data-dir", str(data_dir))
    assert shown == {**target, "scores": {}, "feedback_comment": None}

    code, out, _ = run(capsys, "show", target["request_id"], "--data-dir", str(data_dir))
    assert code == 0
    pairs = [line.split(None, 1) for line in out.split("\n\n")[0].splitlines()]
    fields = dict(pairs)
    assert fields["request_id"] == target["request_id"] and fields["model"] == target["model"]
    assert fields["session_name"] == "-"
    assert [v for k, v in pairs if k == "property"] == ["Team = ml", "env = prod"]
    assert out.endswith("--- request ---\n[user]\nhi\n\n--- response ---\nhello\n")
    code, out, _ = run(capsys, "show", target["request_id"], "--raw", "--data-dir", str(data_dir))
    assert "--- response body ---" in out and '"content": "hello"' in out  # JSON bodies pretty-printed


def test_show_missing_and_ambiguous(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a = make_record(BASE, request_id="abcd0000-0000-4000-8000-000000000001")
    b = make_record(BASE, request_id="abcd0000-0000-4000-8000-000000000002")
    write_records(tmp_path, [a, b])
    code, out, err = run(capsys, "show", "0000dead", "--data-dir", str(tmp_path))
    assert (code, out) == (1, "") and err.startswith("relaylog: error: no request with id '0000dead'")
    code, out, err = run(capsys, "show", "abcd", "--data-dir", str(tmp_path))
    assert code == 1 and "more than one request" in err and len(err.splitlines()) == 1
    code, _, err = run(capsys, "show", "", "--data-dir", str(tmp_path))
    assert code == 2


def test_show_streamed_body_from_ref(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    record = make_record(BASE, stream=True, response_body=None)
    record["response_body_ref"] = f"bodies/dt={record['dt']}/{record['request_id']}.response"
    sse = 'data: {"choices":[{"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
    (tmp_path / "bodies" / f"dt={record['dt']}").mkdir(parents=True)
    (tmp_path / record["response_body_ref"]).write_text(sse)
    write_records(tmp_path, [record])
    code, out, _ = run(capsys, "show", record["request_id"], "--data-dir", str(tmp_path))
    assert code == 0 and out.endswith("--- response (streamed, put back together) ---\nhi\n")
    code, out, _ = run(capsys, "show", record["request_id"], "--raw", "--data-dir", str(tmp_path))
    assert code == 0 and sse in out
    assert run_json(capsys, "show", record["request_id"], "--data-dir", str(tmp_path))["response_body"] == sse


# -- stats -------------------------------------------------------------------------------------------


def test_stats_json_numbers(capsys: pytest.CaptureFixture[str], data_dir: Path, records: list[dict[str, Any]]) -> None:
    stats = run_json(capsys, "stats", "--data-dir", str(data_dir), "--by", "model")
    assert stats["by"] == "model"
    assert_metrics(stats["total"], expected_metrics(records), cli_rounded=True)
    for group in stats["groups"]:
        assert_metrics(group, expected_metrics([r for r in records if r["model"] == group["key"]]), cli_rounded=True)
    assert list(stats) == ["by", "since", "total", "groups"]
    assert list(stats["groups"][0])[:3] == ["key", "requests", "errors"]


def test_stats_human(capsys: pytest.CaptureFixture[str], data_dir: Path, records: list[dict[str, Any]]) -> None:
    expected = expected_metrics(records)
    code, out, _ = run(capsys, "stats", "--data-dir", str(data_dir))
    assert code == 0
    assert f"requests           {expected['requests']}" in out
    assert f"errors             {expected['errors']} ({expected['error_rate']:.1%})" in out
    assert f"input tokens       {expected['input_tokens']:,}" in out
    assert f"cost               ${expected['cost_usd']:.6f}" in out
    assert f"note: {expected['cost_unknown']} request(s) without a cost" in out
    assert f"note: {expected['usage_unknown']} request(s) without token usage" in out

    code, out, _ = run(capsys, "stats", "--data-dir", str(data_dir), "--by", "property:Team")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["PROPERTY:TEAM", "REQUESTS", "ERRORS"]
    assert lines[1].split()[0] == "(none)" and lines[2].split()[0] == "ml" and lines[3].split()[0] == "TOTAL"


def test_stats_since_span(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from datetime import datetime

    now = datetime.now(UTC)
    write_records(tmp_path, [make_record(now - timedelta(minutes=5)), make_record(now - timedelta(days=2))])
    assert run_json(capsys, "stats", "--since", "1h", "--data-dir", str(tmp_path))["total"]["requests"] == 1
    assert run_json(capsys, "stats", "--since", "7d", "--data-dir", str(tmp_path))["total"]["requests"] == 2


# -- query -------------------------------------------------------------------------------------------


def test_query(capsys: pytest.CaptureFixture[str], data_dir: Path, records: list[dict[str, Any]]) -> None:
    sql = "SELECT provider, count(*) AS n, sum(cost_usd) AS cost FROM requests GROUP BY 1 ORDER BY 1"
    rows = run_json(capsys, "query", sql, "--data-dir", str(data_dir))
    providers = sorted({r["provider"] for r in records})
    assert [r["provider"] for r in rows] == providers
    for row in rows:
        mine = [r for r in records if r["provider"] == row["provider"]]
        assert row["n"] == len(mine)
        assert row["cost"] == pytest.approx(sum(r["cost_usd"] for r in mine if r["cost_usd"] is not None))

    code, out, _ = run(
        capsys,
        "query",
        "SELECT model, count(*) FROM requests GROUP BY 1 ORDER BY 2 DESC, 1",
        "--data-dir",
        str(data_dir),
    )
    assert code == 0 and out.splitlines()[0].split() == ["model", "count_star()"]

    # Types JSON has no word for still come out as JSON.
    rows = run_json(capsys, "query", "SELECT 1.5::DECIMAL(4,2) AS d, DATE '2026-11-26' AS day, INTERVAL 1 HOUR AS i, "
                    "MAP {1: 'a'} AS m, NULL AS n", "--data-dir", str(data_dir))  # fmt: skip
    assert rows == [{"d": 1.5, "day": "2026-11-26", "i": "1:00:00", "m": {"1": "a"}, "n": None}]


def test_query_bad_sql(capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    code, out, err = run(capsys, "query", "SELEC model FROM requests", "--data-dir", str(data_dir))
    assert code == 1 and out == ""
    assert "Parser Error" in err and "syntax error" in err and "Traceback" not in err
    code, _, err = run(capsys, "query", "SELECT nope FROM requests", "--data-dir", str(data_dir))
    assert code == 1 and "Binder Error" in err


# -- usage errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["stats", "--by", "colour"],
        ["stats", "--by", "property:x') OR 1=1 --"],
        ["stats", "--by", "property:"],
        ["requests", "--since", "last tuesday"],
        ["requests", "--limit", "0"],
        ["requests", "--limit", "ten"],
        ["serve", "--port", "99999"],
        ["serve", "--workers", "0"],
        ["keys"],
        ["keys", "revoke"],
        ["show"],
    ],
)
def test_bad_usage_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("relaylog") and "error:" in err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "serve" in out and "keys" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"relaylog {relaylog.__version__}"


# -- keys ----------------------------------------------------------------------------------------------


def test_keys_lifecycle(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    code, out, err = run(capsys, "keys", "create", "--name", "laptop", "--data-dir", data)
    secret = out.strip()
    assert code == 0 and secret.startswith("rl-") and len(out.splitlines()) == 1
    assert "only time the key is shown" in err
    assert secret not in (tmp_path / "data" / "keys.json").read_text()

    created = run_json(capsys, "keys", "create", "--data-dir", data)
    assert set(created) == {"key", "key_id", "name", "prefix", "created_at", "revoked_at", "limit"}
    listed = run_json(capsys, "keys", "list", "--data-dir", data)
    assert [k["key_id"] for k in listed][1] == created["key_id"]
    assert all("key" not in k and "sha256" not in k for k in listed)

    code, out, _ = run(capsys, "keys", "list", "--data-dir", data)
    assert "laptop" in out and "active" in out and secret not in out

    assert run_json(capsys, "keys", "revoke", created["key_id"], "--data-dir", data) == {
        "key_id": created["key_id"],
        "revoked": True,
    }
    code, _, err = run(capsys, "keys", "revoke", created["key_id"], "--data-dir", data)
    assert code == 1 and "already revoked" in err
    code, _, err = run(capsys, "keys", "revoke", "key_nothere", "--data-dir", data)
    assert code == 1 and "no key 'key_nothere'" in err
    code, out, _ = run(capsys, "keys", "list", "--data-dir", data)
    assert "revoked 20" in out


def test_keys_create_with_a_limit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    code, out, err = run(
        capsys, "keys", "create", "--name", "batch", "--limit", "1000;w=3600;u=cents", "--data-dir", data
    )
    assert code == 0 and out.strip().startswith("rl-") and "limited to 1000;w=3600;u=cents" in err
    created = run_json(capsys, "keys", "create", "--limit", "50;w=60", "--data-dir", data)
    assert created["limit"] == "50;w=60;u=request"
    listed = run_json(capsys, "keys", "list", "--data-dir", data)
    assert [k["limit"] for k in listed] == ["1000;w=3600;u=cents", "50;w=60;u=request"]
    code, out, _ = run(capsys, "keys", "list", "--data-dir", data)
    header, *rows = out.splitlines()
    assert "LIMIT" in header and "1000;w=3600;u=cents" in rows[0] and "50;w=60;u=request" in rows[1]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("1000", "needs a window"),
        ("lots;w=60", "is not a number"),
        ("10;w=60;u=tokens", "must be 'request' or 'cents'"),
        ("10;w=60;x=1", "unknown parameter"),
    ],
)
def test_keys_create_with_a_bad_limit_exits_2_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, policy: str, message: str
) -> None:
    code, out, err = run(capsys, "keys", "create", "--limit", policy, "--data-dir", str(tmp_path / "data"))
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "--limit" in err and message in err
    assert not (tmp_path / "data").exists()


def test_keys_create_with_a_limit_on_a_stack(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[tuple[str | None, str | None]] = []

    class FakeStore:
        def create(self, name: str | None, limit: str | None) -> tuple[str, KeyInfo]:
            made.append((name, limit))
            return "rl-secret", KeyInfo("key_00000000", name, "rl-sec", "2025-01-01T00:00:00Z", limit=limit)

    monkeypatch.setattr(cli_keys, "key_store", lambda args: FakeStore())
    created = run_json(capsys, "keys", "create", "--stack", "prod", "--limit", "7;w=60;s=user")
    assert made == [(None, "7;w=60;u=request;s=user")] and created["limit"] == "7;w=60;u=request;s=user"


# -- serve ---------------------------------------------------------------------------------------------


def test_serve_calls_server_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[dict[str, Any]] = []
    fake = types.ModuleType("relaylog.server")
    fake.run = lambda **kwargs: calls.append(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "relaylog.server", fake)
    monkeypatch.setattr(relaylog, "server", fake, raising=False)

    assert main(["serve", "--data-dir", str(tmp_path), "--port", "9999", "--workers", "2", "--host", "0.0.0.0"]) == 0
    assert calls == [{"host": "0.0.0.0", "port": 9999, "data_dir": tmp_path, "workers": 2}]
    monkeypatch.setenv("RELAYLOG_DATA_DIR", str(tmp_path / "env"))
    assert main(["serve"]) == 0
    assert calls[1] == {"host": "127.0.0.1", "port": 8787, "data_dir": tmp_path / "env", "workers": 1}


# -- a real process ------------------------------------------------------------------------------------


def test_console_entry_point_in_a_subprocess(data_dir: Path, records: list[dict[str, Any]]) -> None:
    env = {**os.environ, "PYTHONPATH": str(LAYERS), "RELAYLOG_DATA_DIR": str(data_dir)}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from relaylog.cli import main; sys.exit(main())",
            "stats",
            "--json",
            "--by",
            "provider",
        ],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    stats = orjson.loads(proc.stdout)
    assert_metrics(stats["total"], expected_metrics(records), cli_rounded=True)
    assert proc.stderr.decode().startswith("relaylog: warning: skipped an incomplete last line in 1 file(s)")

    bad = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from relaylog.cli import main; sys.exit(main())",
            "query",
            "SELECT FROM WHERE",
        ],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 1 and b"Traceback" not in bad.stderr
    assert bad.stderr.startswith(b"relaylog: error: Parser Error: syntax error")


# -- prompts ---------------------------------------------------------------------------------------


def _prompt_record(minutes: int, text: str, city: str) -> dict[str, Any]:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a guide."},
            {
                "role": "user",
                "content": text.format(f'<helicone-prompt-input key="city">{city}</helicone-prompt-input>'),
            },
        ],
    }
    return make_record(BASE + timedelta(minutes=minutes), prompt_id="guide", request_body=orjson.dumps(body).decode())


@pytest.fixture
def prompt_dir(tmp_path: Path) -> Path:
    write_records(
        tmp_path,
        [
            _prompt_record(0, "Sights in {}", "Rome"),
            _prompt_record(1, "Sights in {}", "Oslo"),
            _prompt_record(2, "Sights and food in {}", "Lima"),
        ],
    )
    return tmp_path


def test_prompts_lists_versions(capsys: pytest.CaptureFixture[str], prompt_dir: Path) -> None:
    code, out, err = run(capsys, "prompts", "guide", "--data-dir", str(prompt_dir))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["VERSION", "HASH", "REQUESTS"]
    assert lines[1].split()[0] == "v1" and lines[1].split()[2] == "2"
    assert lines[2].split()[0] == "v2" and lines[2].split()[2] == "1"
    assert "v2 (latest):\n[system]\nYou are a guide.\n[user]\nSights and food in {{city}}" in out
    versions = run_json(capsys, "prompts", "guide", "--data-dir", str(prompt_dir))
    assert [(v["version"], v["requests"]) for v in versions] == [(1, 2), (2, 1)]


def test_prompts_diff(capsys: pytest.CaptureFixture[str], prompt_dir: Path) -> None:
    code, out, err = run(capsys, "prompts", "guide", "--diff", "1", "v2", "--data-dir", str(prompt_dir))
    assert code == 0, err
    assert out.splitlines() == [
        "--- v1",
        "+++ v2",
        " [system]",
        " You are a guide.",
        " [user]",
        "-Sights in {{city}}",
        "+Sights and food in {{city}}",
    ]
    diff = run_json(capsys, "prompts", "guide", "--diff", "2", "1", "--data-dir", str(prompt_dir))
    assert {"op": "+", "text": "Sights in {{city}}"} in diff["lines"]


def test_prompts_errors(capsys: pytest.CaptureFixture[str], prompt_dir: Path) -> None:
    code, _, err = run(capsys, "prompts", "nope", "--data-dir", str(prompt_dir))
    assert code == 1 and "no requests with prompt id 'nope'" in err
    code, _, err = run(capsys, "prompts", "guide", "--diff", "1", "7", "--data-dir", str(prompt_dir))
    assert code == 1 and "no version 7" in err
    code, _, err = run(capsys, "prompts", "guide", "--diff", "one", "2", "--data-dir", str(prompt_dir))
    assert code == 2 and "version number" in err
