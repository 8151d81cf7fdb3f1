"""relaylog on Lambda Managed Instances: one runtime process, started as Lambda starts it (the exec
wrapper, `AWS_LAMBDA_MAX_CONCURRENCY` set), relays many streamed calls at once through the
emulator's Function URL to the provider stand-in: the bytes of each are the direct call's, each
gets one record, faults stay with their own call, and SIGTERM loses nothing under way. The
Firehose sink's side is the in-process test at the end (moto)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from relaylog.aws.proxy import create_app
from relaylog.standin import StandIn

from tests.support.aws import Stack
from tests.support.lambda_emulator import LambdaEmulator, Outcome
from tests.support.lambda_runtime import InProcessRuntime, LambdaRuntime

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}], "stream": True}
# The stand-in's short answer is 16 events: about a second apart from the first to the last.
ONE_SECOND = "chunk-delay-ms=65"


@dataclass
class Received:
    """What one client got through the Function URL."""

    request_id: str
    status: int = 0
    body: bytes = b""
    error: str | None = None  # the exception that ended the read, if one did
    first_byte: float = 0.0
    ended: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


async def _stream(client: httpx.AsyncClient, url: str, fault: str, request_id: str) -> Received:
    received = Received(request_id)
    headers = {"x-standin-fault": fault, "helicone-request-id": request_id}
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=CHAT, headers=headers) as response:
            received.status, received.headers = response.status_code, dict(response.headers)
            async for piece in response.aiter_raw():
                received.first_byte = received.first_byte or time.monotonic()
                received.body += piece
    except httpx.HTTPError as exc:
        received.error = type(exc).__name__
    received.ended = time.monotonic()
    return received


def _call_all(url: str, faults: list[str], started: Callable[[list[str]], None] | None = None) -> list[Received]:
    """One streamed call per fault, all at once; `started(ids)` runs on another thread meanwhile."""

    async def run() -> list[Received]:
        limits = httpx.Limits(max_connections=len(faults), max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            ids = [str(uuid.uuid4()) for _ in faults]
            calls = [asyncio.ensure_future(_stream(client, url, f, i)) for f, i in zip(faults, ids, strict=True)]
            if started is not None:
                await asyncio.to_thread(started, ids)
            return list(await asyncio.gather(*calls))

    return asyncio.run(run())


def _direct(standin: StandIn, fault: str) -> bytes:
    (received,) = _call_all(standin.url, [fault])
    assert received.status == 200 and received.error is None
    return received.body


def _outcome(emulator: LambdaEmulator, request_id: str) -> Outcome:
    (outcome,) = [o for o in emulator.outcomes if o.event["headers"].get("helicone-request-id") == request_id]
    return outcome


def _records(runtime: LambdaRuntime, count: int) -> dict[str, dict[str, Any]]:
    """The records, once `count` are on disk (the flusher sends them within a fraction of a second)."""
    deadline = time.monotonic() + 15
    while len(records := runtime.records()) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    by_id = {r["request_id"]: r for r in records}
    assert len(by_id) == len(records) == count, f"{len(records)} records for {count} calls"
    return by_id


def test_64_streams_at_once_through_one_process_each_as_direct_with_one_record(
    standin: StandIn, tmp_path: Path
) -> None:
    standin.fault = None
    direct = _direct(standin, ONE_SECOND)
    with LambdaEmulator(max_concurrency=64) as emulator, LambdaRuntime(emulator, tmp_path, standin.url) as runtime:
        emulator.wait_polled(64)
        received = _call_all(emulator.url, [ONE_SECOND] * 64)
        records = _records(runtime, 64)
        code, output = runtime.stop()
    assert code == 0, output
    assert [(r.status, r.error) for r in received] == [(200, None)] * 64
    assert all(r.body == direct for r in received)  # byte for byte
    # All 64 were under way together in the one process: every first byte came before any end.
    assert emulator.peak_in_flight == 64
    assert max(r.first_byte for r in received) < min(r.ended for r in received)
    for r in received:
        record = records[r.request_id]
        assert (record["status"], record["error_type"], record["stream"]) == (200, None, True)
        assert record["response_bytes"] == len(direct) and record["output_tokens"] > 0
    print(f"64 one-second streams took {max(r.ended for r in received) - min(r.first_byte for r in received):.2f} s")


def test_faults_in_some_calls_leave_the_others_whole(standin: StandIn, tmp_path: Path) -> None:
    standin.fault = None
    direct = _direct(standin, ONE_SECOND)
    # Normal calls, a provider that resets the connection, one that stalls until the invocation's
    # deadline (4 s, so the runtime stops it at 3 s), and the Runtime API dropping a response.
    faults = [ONE_SECOND, "reset", "stall-after=2", ONE_SECOND + ";id=broken"] * 8

    with (
        LambdaEmulator(max_concurrency=32, timeout_s=4.0) as emulator,
        LambdaRuntime(emulator, tmp_path, standin.url) as runtime,
    ):
        emulator.wait_polled(32)

        def break_some(ids: list[str]) -> None:
            for fault, request_id in zip(faults, ids, strict=True):
                if fault.endswith("id=broken"):
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline:
                        found = [
                            o for o in emulator.outcomes if o.event["headers"].get("helicone-request-id") == request_id
                        ]
                        if found and found[0].chunks:
                            emulator.break_runtime(found[0])
                            break
                        time.sleep(0.005)

        received = _call_all(emulator.url, faults, break_some)
        records = _records(runtime, 32)
        outcomes = {r.request_id: _outcome(emulator, r.request_id) for r in received}
        code, output = runtime.stop()
    assert code == 0, output
    for fault, r in zip(faults, received, strict=True):
        record, outcome = records[r.request_id], outcomes[r.request_id]
        if fault == ONE_SECOND:
            assert (r.status, r.error, r.body) == (200, None, direct)
            assert (record["status"], record["error_type"]) == (200, None)
        elif fault == "reset":  # relaylog's own answer: the provider never answered
            assert r.status == 502 and r.error is None
            assert json.loads(r.body)["error"]["type"] == record["error_type"] == "upstream_unreachable"
        elif fault == "stall-after=2":  # the provider's status and first events, then a cut
            assert r.status == 200 and r.error == "RemoteProtocolError" and r.body == direct[: len(r.body)]
            assert outcome.trailers["lambda-runtime-function-error-type"] == "Relay.function_timeout"
            assert record["error_type"] == "cancelled"
        else:  # the Runtime API broke mid-response: the client sees a cut, the relay a disconnect
            assert r.status == 200 and r.error == "RemoteProtocolError" and r.body == direct[: len(r.body)]
            assert record["error_type"] == "client_disconnect"
    assert runtime.resets == 0  # a deadline on Managed Instances resets nothing


def test_sigterm_with_32_calls_under_way_loses_no_record(standin: StandIn, tmp_path: Path) -> None:
    standin.fault = None
    slow = "chunk-delay-ms=100"  # about 1.6 s each
    direct = _direct(standin, slow)
    with LambdaEmulator(max_concurrency=32) as emulator, LambdaRuntime(emulator, tmp_path, standin.url) as runtime:
        emulator.wait_polled(32)
        stopped: list[tuple[int, str]] = []

        def sigterm_once_all_started(ids: list[str]) -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                outcomes = [o for o in emulator.outcomes if o.event["headers"].get("helicone-request-id") in ids]
                if len(outcomes) == 32 and all(o.chunks for o in outcomes):
                    break
                time.sleep(0.005)
            stopped.append(runtime.stop(signal.SIGTERM))

        received = _call_all(emulator.url, [slow] * 32, sigterm_once_all_started)
        ((code, output),) = stopped
    assert code == 0, output
    assert emulator.extensions  # on AWS, what makes Lambda send the SIGTERM at all
    assert all((r.status, r.error, r.body) == (200, None, direct) for r in received)
    records = {r["request_id"]: r for r in runtime.records()}
    assert sorted(records) == sorted(r.request_id for r in received)
    assert all(record["error_type"] is None for record in records.values())


def test_concurrent_calls_reach_firehose_in_batches_and_stopping_sends_the_last(
    aws_stack: Stack, standin: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAYLOG_UPSTREAM_OPENAI", standin.url)
    standin.fault = None
    with LambdaEmulator(max_concurrency=16) as emulator:
        runtime = InProcessRuntime(emulator, create_app()).__enter__()
        try:
            emulator.wait_polled(16)
            received = _call_all(emulator.url, [ONE_SECOND] * 16)
        finally:
            runtime.stop()
    assert all((r.status, r.error) == (200, None) for r in received)
    s3 = aws_stack.client("s3")
    objects = aws_stack.objects("raw/")  # moto writes one object per PutRecordBatch
    delivered = [
        orjson.loads(line)
        for key in objects
        for line in s3.get_object(Bucket=aws_stack.bucket, Key=key)["Body"].read().splitlines()
    ]
    assert sorted(r["request_id"] for r in delivered) == sorted(r.request_id for r in received)
    assert len(objects) < len(received)  # batched, not one PutRecordBatch per call
