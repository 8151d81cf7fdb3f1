"""relaylog Bedrock benchmark: the time to first byte relaylog adds to a Bedrock stream, in one run.

    python bench/bedrock.py            # about 1 minute; --help for durations
    python bench/bedrock.py --quick    # about 20 s, noisier

It starts `python -m relaylog.standin` and `relaylog serve --workers 1` (records written to a temporary
data dir, one relaylog key, RELAYLOG_UPSTREAM_BEDROCK at the stand-in, and the stand-in's temporary
AWS identity in relaylog's environment for the standard credential chain to find) as subprocesses on
127.0.0.1, and times streams one after another on one keep-alive connection (the raw-socket probe of
bench/relay.py), request sent -> first event-stream frame:

- ConverseStream with a Bedrock API key: relaylog passes the key through;
- ConverseStream, SigV4: directly the request is signed once by botocore and replayed (valid for
  15 minutes); through relaylog it is unsigned and relaylog signs each call with its identity. The
  stand-in verifies every signature with botocore in both columns, so that cost is in both;
- InvokeModelWithResponseStream (Claude) with an API key: base64 `chunk` frames;
- an OpenAI chat completion stream (SSE) with an API key, the same probe, for comparison.

Each stream is the stand-in's short answer with its frames (events) paced 1 ms apart, so the first
one reaches relaylog on its own as from a real provider. The rows are measured in rounds (direct then
relayed, row after row, again) and each number is the median over the rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules next to this file

from load import Call, measure_ttfb, percentile  # noqa: E402
from procs import REPO, kill_all, machine_busy_seconds, start_relaylog, start_standin  # noqa: E402

sys.path.insert(0, str(REPO / "layers"))
sys.path.insert(0, str(REPO))

from relaylog.keys.file import KeyStore  # noqa: E402
from relaylog.standin.bedrock_auth import TEMPORARY  # noqa: E402

REGION = "us-east-1"
# As boto3 sends a model id with a colon: percent-encoded in the path.
CONVERSE = "/model/us.amazon.nova-lite-v1%3A0/converse-stream"
INVOKE = "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/invoke-with-response-stream"
CONVERSE_BODY = b'{"messages":[{"role":"user","content":[{"text":"Say hi"}]}]}'
INVOKE_BODY = (
    b'{"anthropic_version":"bedrock-2023-05-31","max_tokens":100,"messages":[{"role":"user","content":"Say hi"}]}'
)
OPENAI_BODY = b'{"messages":[{"role":"user","content":"Say hi"}],"model":"gpt-4o-mini","stream":true}'
# What boto3's bedrock-runtime client sends besides its signature.
BOTO3_HEADERS = (
    ("Content-Type", "application/json"),
    ("User-Agent", "Boto3/1.40.0 md/Botocore#1.40.0 ua/2.1 os/linux"),
)
EVENT_STREAM_FRAME = b":message-type"  # a header every AWS event-stream frame carries
API_KEY = (("Authorization", "Bearer bedrock-api-key-bench"),)


@dataclass
class Row:
    label: str
    direct: Call
    relayed: Call
    rounds: list[tuple[list[float], list[float]]] = field(default_factory=list)  # (direct, relayed) TTFB ms
    failures: int = 0

    def median(self, column: int, pct: float) -> float:
        return statistics.median(percentile(run[column], pct) for run in self.rounds)


def signed_directly(url: str, path: str, body: bytes) -> tuple[tuple[str, str], ...]:
    """The SigV4 headers botocore's signer makes for this request with the stand-in's identity."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=url + path, data=body, headers=dict(BOTO3_HEADERS))
    SigV4Auth(Credentials(TEMPORARY.access_key, TEMPORARY.secret_key, TEMPORARY.token), "bedrock", REGION).add_auth(
        request
    )
    return tuple(
        (k, v)
        for k, v in request.headers.items()
        if k.lower() in ("authorization", "x-amz-date", "x-amz-security-token")
    )


def rows(standin: str, relay: str, relaylog_key: str, pace_ms: float) -> list[Row]:
    paced = (("x-standin-fault", f"chunk-delay-ms={pace_ms:g}"),)
    ours = (("Helicone-Auth", f"Bearer {relaylog_key}"),)
    base = f"{relay}/bedrock/{REGION}"

    def frames(url: str, body: bytes, *headers: tuple[str, str]) -> Call:
        return Call(url, body, BOTO3_HEADERS + paced + headers, first_event=EVENT_STREAM_FRAME)

    return [
        Row(
            "ConverseStream, API key",
            frames(standin + CONVERSE, CONVERSE_BODY, *API_KEY),
            frames(base + CONVERSE, CONVERSE_BODY, *API_KEY, *ours),
        ),
        Row(
            "ConverseStream, SigV4",
            frames(standin + CONVERSE, CONVERSE_BODY, *signed_directly(standin, CONVERSE, CONVERSE_BODY)),
            frames(base + CONVERSE, CONVERSE_BODY, *ours),
        ),
        Row(
            "InvokeModelWithResponseStream, API key",
            frames(standin + INVOKE, INVOKE_BODY, *API_KEY),
            frames(base + INVOKE, INVOKE_BODY, *API_KEY, *ours),
        ),
        Row(
            "OpenAI chat stream (SSE), API key",
            Call(
                standin + "/v1/chat/completions",
                OPENAI_BODY,
                (("Content-Type", "application/json"), ("Authorization", "Bearer sk-bench"), *paced),
            ),
            Call(
                relay + "/v1/chat/completions",
                OPENAI_BODY,
                (("Content-Type", "application/json"), ("Authorization", "Bearer sk-bench"), *paced, *ours),
            ),
        ),
    ]


def report(table: list[Row], rounds: int, seconds: float, busy: float, wall: float) -> str:
    lines = [
        f"relaylog Bedrock stream TTFB, {platform.machine()} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; "
        f"{rounds} rounds x {seconds:g} s per column, c=1, medians over the rounds",
        "",
        f"{'stream':<40} {'direct p50':>10} {'relaylog p50':>12} {'added p50':>9} {'ratio':>6}   "
        f"{'direct p99':>10} {'relaylog p99':>12} {'added p99':>9}",
    ]
    for row in table:
        d50, r50, d99, r99 = row.median(0, 50), row.median(1, 50), row.median(0, 99), row.median(1, 99)
        samples = sum(len(r[1]) for r in row.rounds)
        lines.append(
            f"{row.label:<40} {d50:>10.3f} {r50:>12.3f} {r50 - d50:>9.3f} {r50 / d50:>6.2f}   "
            f"{d99:>10.3f} {r99:>12.3f} {r99 - d99:>9.3f}"
            f"   ({samples} relayed streams, {row.failures} failed)"
        )
    lines += ["", "milliseconds, request sent -> first frame (first SSE `data:` for OpenAI)"]
    if busy / wall > 0.15:
        lines.append(f"WARNING: other processes used {busy / wall:.2f} cores during the run: rerun for cleaner numbers")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every row (default 3)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per column and round (default 4)")
    parser.add_argument("--pace-ms", type=float, default=1.0, help="ms between the stand-in's frames (default 1)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.quick:
        opts.rounds, opts.seconds = 2, 2.0
    work = Path(tempfile.mkdtemp(prefix="relaylog-bench-bedrock-"))
    try:
        standin, standin_url = start_standin(work)
        data_dir = work / "data"
        data_dir.mkdir()
        key = KeyStore.in_data_dir(data_dir).create("bench")[0]
        identity = {"AWS_ACCESS_KEY_ID": TEMPORARY.access_key, "AWS_SECRET_ACCESS_KEY": TEMPORARY.secret_key,
                    "AWS_SESSION_TOKEN": TEMPORARY.token or "", "AWS_CONFIG_FILE": os.devnull,
                    "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
        relay, relay_url = start_relaylog(
            work, standin_url, data_dir, 1, {"RELAYLOG_UPSTREAM_BEDROCK": standin_url, **identity}
        )
        table = rows(standin_url, relay_url, key, opts.pace_ms)
        for row in table:  # warm-up: one call of each kind each way, and fail early on a broken setup
            for call in (row.direct, row.relayed):
                times = measure_ttfb(call, 0.5, max_samples=20)
                if times.failures or not times.ttfb_ms:
                    raise SystemExit(f"{row.label}: {call.url} did not stream (see {work})")
        busy, started = machine_busy_seconds(), time.monotonic()
        own = standin.cpu_seconds() + relay.cpu_seconds()
        for _ in range(opts.rounds):
            for row in table:
                direct, relayed = measure_ttfb(row.direct, opts.seconds), measure_ttfb(row.relayed, opts.seconds)
                row.failures += direct.failures + relayed.failures
                row.rounds.append((direct.ttfb_ms, relayed.ttfb_ms))
        wall = time.monotonic() - started
        # The probe runs in this process and is busy the whole time: about one core.
        others = machine_busy_seconds() - busy - (standin.cpu_seconds() + relay.cpu_seconds() - own) - wall
        relay.stop()
        print(report(table, opts.rounds, opts.seconds, max(others, 0.0), wall))
        return 1 if any(row.failures for row in table) else 0
    finally:
        kill_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
