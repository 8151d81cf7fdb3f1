"""A collector that is down, or one that never answers, changes nothing for the relay's clients:
every call is answered and recorded, the spans that cannot be delivered are counted and reported
in a rate-limited warning, and the queue between the relay and the exporter stays bounded. Also:
the settings read from the standard variables, the SDK never imported when export is off, and
the synchronous export the AWS aggregator will use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from relaylog.config import OtelSettings, otel_from_env
from relaylog.otel import shown, span_shipper
from relaylog.otel.stats import ExportStats
from relaylog.standin import StandIn

from tests.support.otlp import BlackHole, OtlpReceiver, closed_port
from tests.support.proxy import RunningProxy
from tests.support.records import make_record

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def call(proxy: RunningProxy) -> str:
    request_id = str(uuid.uuid4())
    reply = httpx.post(proxy.url + "/v1/chat/completions", json=CHAT, headers={"Helicone-Request-Id": request_id})
    assert reply.status_code == 200 and reply.json()["choices"]
    return request_id


def warnings_in(err: str) -> list[str]:
    """The exporter process's warning lines (it writes to the server's stderr)."""
    return [line for line in err.splitlines() if line.startswith("WARNING:  relaylog.otel:")]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
@pytest.mark.slow
def test_a_collector_that_is_down_costs_the_relay_nothing_and_is_reported_once(
    protocol: str, standin: StandIn, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    otel = OtelSettings(
        endpoint=url + "/v1/traces" if protocol == "http/protobuf" else url,
        protocol=protocol,  # type: ignore[arg-type]
        timeout_s=0.5,
        schedule_delay_s=0.01,
        batch_size=1,
    )
    with RunningProxy(tmp_path, standin.url, otel=otel) as proxy:
        request_ids = [call(proxy) for _ in range(10)]
        assert {r["request_id"] for r in proxy.wait_records(10)} >= set(request_ids)
        pipe = proxy.sink.spans
        assert pipe is not None
    # Shut down with the proxy: every span was tried once and counted, none retried for ever.
    assert pipe.stats == ExportStats(failed=10)
    err = capfd.readouterr().err
    warnings = warnings_in(err)
    # The first failure at once, the rest summed into one line at shutdown (a minute had not passed).
    assert 1 <= len(warnings) <= 2
    assert sum(int(w.split(" span(s)")[0].split()[-1]) for w in warnings) == 10
    assert url in warnings[0]
    # The exporter library's own lines are folded into ours, not printed.
    assert all(line in warnings for line in err.splitlines() if "xport" in line)
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_stuck_exporter_blocks_nothing_and_every_record_is_accounted_for(standin: StandIn, tmp_path: Path) -> None:
    otel = OtelSettings(endpoint=f"http://127.0.0.1:{closed_port()}/v1/traces", timeout_s=0.5, schedule_delay_s=0.0)
    # Prompts of 100 kB: twenty records are twice what the pipe to the exporter holds (1 MiB).
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 100_000}]}
    with RunningProxy(tmp_path, standin.url, otel=otel) as proxy:
        pipe = proxy.sink.spans
        assert pipe is not None
        os.kill(pipe.pid, signal.SIGSTOP)  # the exporter process frozen: it reads nothing
        try:
            for _ in range(20):
                reply = httpx.post(proxy.url + "/v1/chat/completions", json=big)
                assert reply.status_code == 200
            assert len(proxy.wait_records(20)) == 20
            assert pipe.stats.pipe_full >= 5  # dropped on the relay's side, at once
        finally:
            os.kill(pipe.pid, signal.SIGCONT)
    stats = pipe.stats
    assert stats.exported == 0 and stats.pipe_full + stats.failed + stats.queue_full == 20


@pytest.mark.slow
def test_a_collector_that_never_answers_blocks_nothing(standin: StandIn, tmp_path: Path) -> None:
    with BlackHole() as hole:
        otel = OtelSettings(
            endpoint=hole.url + "/v1/traces", timeout_s=1, schedule_delay_s=0.0, batch_size=1, queue_size=2
        )
        with RunningProxy(tmp_path, standin.url, otel=otel) as proxy:
            for _ in range(20):
                call(proxy)
            assert len(proxy.wait_records(20)) == 20
            pipe = proxy.sink.spans
            assert pipe is not None
    stats = pipe.stats
    # Nothing delivered, nothing waited for: each span dropped with the queue full (one batch in
    # flight, two queued), timed out, or dropped in the pause after; each counted once.
    assert stats.exported == 0 and stats.queue_full > 0
    assert stats.queue_full + stats.failed + stats.pipe_full == 20


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def test_export_in_hand_is_synchronous_and_a_repeated_record_is_the_same_span(receiver: OtlpReceiver) -> None:
    created = datetime(2026, 11, 25, 22, 10, 0, 250000, tzinfo=UTC)
    records: list[Any] = [make_record(created, request_id=str(uuid.uuid4())) for _ in range(3)]
    # A record written before these fields existed: no longer the current Record type, as records
    # decoded from S3 are not either (hence Any, like `records`).
    older: Any = make_record(created)
    for name in ("response_id", "finish_reasons", "traceparent", "tracestate"):
        del older[name]
    settings = OtelSettings(endpoint=receiver.http_url + "/v1/traces")
    from relaylog.otel.export import SpanShipper

    shipper = SpanShipper(settings, {})
    try:
        assert shipper.export([*records, older]) == 4
        assert shipper.export(records[:1]) == 1  # an SQS redelivery exports the record again
    finally:
        shipper.close()
    first = [s for s in receiver.spans if s.attributes["relaylog.request_id"] == records[0]["request_id"]]
    assert len(first) == 2 and first[0].span_id == first[1].span_id and first[0].trace_id == first[1].trace_id
    assert receiver.span(older["request_id"]).start_ns == 1_795_644_600_250_000_000


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, None),  # no endpoint: off
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, OtelSettings(endpoint="http://c:4318/v1/traces")),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"},
            OtelSettings(endpoint="http://t:1/x"),
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
                "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true",
            },
            OtelSettings(endpoint="http://c:4317", protocol="grpc", timeout_s=2.5, insecure=True),
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c",
                "OTEL_EXPORTER_OTLP_HEADERS": "a=1,b=x%20y",
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "b=2",
                "OTEL_SERVICE_NAME": "gw",
                "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment=prod%2Feu",
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "True",
                "OTEL_BSP_MAX_QUEUE_SIZE": "10",
                "OTEL_BSP_SCHEDULE_DELAY": "250",
                "OTEL_TRACES_SAMPLER": "always_on",
                "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100",
                "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
            },
            OtelSettings(
                endpoint="http://c/v1/traces",
                headers=(("a", "1"), ("b", "2")),
                service_name="gw",
                resource=(("deployment.environment", "prod/eu"),),
                capture_content=True,
                queue_size=10,
                schedule_delay_s=0.25,
                follow_parent_sampling=False,
                max_value_chars=100,
                compression="gzip",
            ),
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_TRACES_EXPORTER": "none"}, None),
    ],
)
def test_settings_come_from_the_standard_variables(env: dict[str, str], expected: OtelSettings | None) -> None:
    assert otel_from_env(env) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_EXPORTER_OTLP_HEADERS": "x-api-key"},
        {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "maybe"},
        {"OTEL_TRACES_SAMPLER": "traceidratio"},
        {"OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"},
    ],
)
def test_settings_relaylog_cannot_honour_stop_the_start(env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        otel_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", **env})


def test_header_values_never_reach_a_repr_or_an_error() -> None:
    with pytest.raises(ValueError) as error:
        otel_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_HEADERS": "k=s3cret,bad"})
    assert "s3cret" not in str(error.value) and "bad" not in str(error.value)
    ok = otel_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_HEADERS": "k=s3cret"})
    assert ok is not None and "s3cret" not in repr(ok)
    # Collector URLs are printed (start-up line, warnings) without the credentials they may carry.
    assert shown("https://user:s3cret@collector.example:4318/v1/traces") == "https://collector.example:4318/v1/traces"


@pytest.mark.slow
def test_the_relay_process_never_imports_opentelemetry(tmp_path: Path) -> None:
    script = (
        "import sys, relaylog.server as s\n"
        "app = s.create_app()\n"
        "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('opentelemetry.')}), type(app.local_sink.spans).__name__)\n"
        "app.sink.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | {
        "RELAYLOG_DATA_DIR": str(tmp_path / "d")
    }
    off = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "[] NoneType"
    # With an endpoint the SDK is loaded by the exporter process, not by the relay.
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{closed_port()}"
    on = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert on.stdout.strip() == "[] SpanPipe"


def test_an_endpoint_without_the_otel_extra_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import relaylog.otel
    from relaylog.config import Settings

    monkeypatch.setattr(relaylog.otel, "_NEEDED", ("opentelemetry-sdk", "opentelemetry-not-installed-here"))
    settings = replace(Settings(data_dir=tmp_path), otel=OtelSettings(endpoint="http://127.0.0.1:1/v1/traces"))
    with pytest.raises(
        RuntimeError, match=r"opentelemetry-not-installed-here is not installed: pip install 'relaylog\[otel\]'"
    ):
        span_shipper(settings)


def test_after_a_failed_export_nothing_is_built_or_sent_for_a_pause() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from relaylog.otel.export import SpanShipper

    class Counting(OTLPSpanExporter):
        calls = 0

        def export(self, spans: Any) -> Any:
            Counting.calls += 1
            return super().export(spans)

    endpoint = f"http://127.0.0.1:{closed_port()}/v1/traces"
    created = datetime(2026, 11, 25, 22, 10, tzinfo=UTC)
    records: list[Any] = [make_record(created, request_id=str(uuid.uuid4())) for _ in range(5)]
    shipper = SpanShipper(
        OtelSettings(endpoint=endpoint, timeout_s=0.5), {}, exporter=Counting(endpoint=endpoint, timeout=0.5)
    )
    try:
        assert shipper.export(records[:1]) == 0 and Counting.calls == 1
        assert shipper.export(records) == 0 and Counting.calls == 1  # paused: not even encoded
        shipper.offer(records)
        assert shipper.stats.failed == 11 and shipper.stats.queue_full == 0
        time.sleep(1.1)  # the first pause is one second
        assert shipper.export(records[:1]) == 0 and Counting.calls == 2
    finally:
        shipper.close(0.1)
