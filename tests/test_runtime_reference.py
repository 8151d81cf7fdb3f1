"""The Runtime API emulator reads streamed responses exactly as AWS's own Node.js runtime client
(npm aws-lambda-ric) writes them: the check that the emulator, and so relaylog's runtime tested
against it, speak the real wire format. In Managed Instances mode too: that client (version 4)
then asks for invocations without waiting for those it serves, and leaves the limit to the
Runtime API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.lambda_emulator import LambdaEmulator

pytestmark = [pytest.mark.node, pytest.mark.aws]

NODE_DIR = Path(__file__).resolve().parent / "node"
RIC = NODE_DIR / "node_modules" / "aws-lambda-ric" / "index.mjs"


@contextmanager
def _node(emulator: LambdaEmulator, **extra: str) -> Iterator[LambdaEmulator]:
    if shutil.which("node") is None or not RIC.exists():
        pytest.fail("node and tests/node/node_modules are needed: run `make test`, which installs them")
    env = {
        **os.environ,
        **emulator.runtime_env(),
        "LAMBDA_TASK_ROOT": str(NODE_DIR),
        "_HANDLER": "lambda_stream_handler.handler",
        "AWS_LAMBDA_FUNCTION_NAME": "reference",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/reference",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/27/[$LATEST]0123456789abcdef",
        **extra,
    }
    process = subprocess.Popen(
        ["node", str(RIC), "lambda_stream_handler.handler"],
        cwd=NODE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield emulator
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def node_runtime() -> Iterator[LambdaEmulator]:
    with LambdaEmulator() as emulator, _node(emulator) as running:
        yield running


def _spec(**changes: object) -> dict[str, object]:
    spec = {
        "status": 201,
        "headers": {"content-type": "text/event-stream", "x-multi": "a, b"},
        "cookies": ["session=abc; Path=/", "theme=dark"],
        "chunks": ["data: one\n\n", "data: two\n\n", "data: [DONE]\n\n"],
        "delayMs": 20,
    }
    return {**spec, **changes}


def test_a_streamed_response_from_the_official_client_decodes(node_runtime: LambdaEmulator) -> None:
    outcome = node_runtime.invoke({"body": json.dumps(_spec())}, timeout_s=20)
    assert outcome.headers["lambda-runtime-function-response-mode"] == "streaming"
    assert outcome.headers["content-type"] == "application/vnd.awslambda.http-integration-response"
    assert outcome.headers["transfer-encoding"] == "chunked"
    assert outcome.prelude == {
        "statusCode": 201,
        "headers": {"content-type": "text/event-stream", "x-multi": "a, b"},
        "cookies": ["session=abc; Path=/", "theme=dark"],
    }
    assert outcome.chunks == [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]
    assert outcome.trailers == {}


def test_a_mid_stream_failure_from_the_official_client_arrives_as_trailers(node_runtime: LambdaEmulator) -> None:
    outcome = node_runtime.invoke({"body": json.dumps(_spec(failAfter=2))}, timeout_s=20)
    assert outcome.prelude is not None and outcome.prelude["statusCode"] == 201
    assert outcome.chunks == [b"data: one\n\n", b"data: two\n\n"]
    assert outcome.trailers["lambda-runtime-function-error-type"] == "Error"
    report = outcome.error_trailer()
    assert report is not None
    assert report["errorType"] == "Error" and report["errorMessage"] == "failed after 2 chunks"


def test_the_official_client_reads_large_events_framed_as_the_runtime_api_frames_them(
    node_runtime: LambdaEmulator,
) -> None:
    # Over 2 KiB the emulator sends the event chunked, as the Runtime API (Go's net/http) does.
    outcome = node_runtime.invoke({"body": json.dumps(_spec(padding="x" * 50_000))}, timeout_s=20)
    assert outcome.prelude is not None and outcome.prelude["statusCode"] == 201
    assert outcome.chunks == [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]


def test_the_official_client_in_managed_instances_mode_gets_no_more_than_the_limit_at_once() -> None:
    # One worker thread (the client starts 8 per CPU by default), so one loop does all the asking.
    with LambdaEmulator(max_concurrency=4) as emulator, _node(emulator, AWS_LAMBDA_NODEJS_WORKER_COUNT="1"):
        outcomes = [
            emulator.invoke({"body": json.dumps(_spec(delayMs=100))}, timeout_s=20, wait=False) for _ in range(12)
        ]
        for outcome in outcomes:
            assert outcome.done.wait(30), "the official client did not answer every invocation"
        # It asked again before each invocation ended: only the Runtime API's limit held it back.
        assert emulator.peak_in_flight == 4 and emulator.next_calls > 4
    for outcome in outcomes:
        assert outcome.prelude is not None and outcome.prelude["statusCode"] == 201
        assert outcome.chunks == [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]
