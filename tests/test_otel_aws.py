"""Span export on AWS: the aggregator sends each delivered object's records to a real OTLP receiver
(tests.support.otlp), with the collector's headers from Secrets Manager or an SSM SecureString,
all under moto. The deployed proxy, in a process of its own, records the caller's `traceparent`
and never imports OpenTelemetry; the aggregator's span is then a child of the caller's span.

What is guaranteed, and tested here: a request is exported by the one object that owns it (a
record delivered in two objects is one span); the same object delivered again sends nothing again
once the collector accepted its spans, and sends them when it did not; an object that failed
before export is exported when it comes back. A collector that is down costs at most one export
attempt per invocation, never fails an SQS message, and never keeps the aggregator past its deadline.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Self

import httpx
import openai
import orjson
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from moto.server import ThreadedMotoServer
from relaylog.aws import layout
from relaylog.otel.aws import ENV_HEADERS_ARN, RESERVE_S
from relaylog.standin import StandIn

from tests.support.aggregator import APP, LambdaContext, invoke, load_aggregator
from tests.support.aws import Stack, create_stack, fake_credentials, moto_endpoint
from tests.support.lambda_emulator import LambdaEmulator
from tests.support.lambda_runtime import LambdaRuntime
from tests.support.otlp import OtlpReceiver, ReceivedSpan, closed_port
from tests.support.records import BASE, make_record
from tests.test_aggregate_function import _CrashAfter

ROOT = Path(__file__).resolve().parents[1]
DAY = BASE.strftime("%Y-%m-%d")
RAW_KEY = f"raw/dt={DAY}/hour={BASE:%H}/relaylog-records-1-{DAY}-22-10-00-0f1e2d3c.gz"
SPOOL_KEY = f"spool/dt={DAY}/hour={BASE:%H}/spooled-0001.jsonl.gz"
TEAM_KEY = "hcaik_0123456789abcdef"  # what a hosted backend's API key looks like: it must never be printed
# A short exporter timeout keeps the tests of a dead collector short; the rules are the same at 10 s.
TIMEOUT_MS = "500"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def spans_of(receiver: OtlpReceiver, request_id: str) -> list[ReceivedSpan]:
    return [s for s in receiver.spans if s.attributes.get("relaylog.request_id") == request_id]


def records(count: int, **overrides: Any) -> list[dict[str, Any]]:
    return [make_record(BASE + timedelta(seconds=i, microseconds=250 * i), **overrides) for i in range(count)]


def epoch_ns(created_at: str) -> int:
    """RFC 3339 with microseconds to integer nanoseconds, by string arithmetic (not the code's datetime)."""
    whole, fraction = created_at.rstrip("Z").split(".")
    from datetime import UTC, datetime

    seconds = int(datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp())
    return seconds * 10**9 + int(fraction) * 1000


def exporting(monkeypatch: pytest.MonkeyPatch, endpoint: str, **env: str) -> Any:  # load_aggregator's module
    """The aggregator as the template configures it with an endpoint, cold-started now."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "llm-gateway")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "false")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_aggregator()


def processed(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The key and span counts of each "object processed" line the aggregator logged."""
    lines = [r for r in caplog.records if r.name == "aggregator" and r.getMessage() == "object processed"]
    return [{k: v for k, v in vars(line).items() if k == "key" or k.startswith("spans_")} for line in lines]


def metrics(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def secret_headers(stack: Stack, kind: str) -> str:
    """The ARN of the collector's headers, stored as `kind` says."""
    pairs = f"x-honeycomb-team={TEAM_KEY},x-env=prod%20eu"
    if kind.startswith("secret-"):
        text = json.dumps({"x-honeycomb-team": TEAM_KEY, "x-env": "prod eu"}) if kind == "secret-json" else pairs
        return str(stack.client("secretsmanager").create_secret(Name="relaylog/otel", SecretString=text)["ARN"])
    ssm = stack.client("ssm")
    kind_of = {"securestring": "SecureString", "string": "String"}[kind]
    ssm.put_parameter(Name="/relaylog/otel-headers", Type=kind_of, Value=pairs)
    return str(ssm.get_parameter(Name="/relaylog/otel-headers")["Parameter"]["ARN"])


# -- the headers, from their secret ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["secret-json", "secret-pairs", "securestring"])
def test_a_delivered_object_arrives_as_spans_with_the_headers_from_the_secret(
    kind: str, aws_stack: Stack, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    arn = secret_headers(aws_stack, kind)
    module = exporting(monkeypatch, receiver.http_url, **{ENV_HEADERS_ARN: arn})
    sent = records(3, user_id="alice", properties={"team": "search"})
    sent[1].update(status=429, error_type="upstream_error", input_tokens=None, output_tokens=None)
    aws_stack.put_raw_object(RAW_KEY, sent)
    assert invoke(module, aws_stack.sqs_event()) == {"batchItemFailures": []}
    for record in sent:
        (span,) = spans_of(receiver, record["request_id"])
        assert span.headers["x-honeycomb-team"] == TEAM_KEY and span.headers["x-env"] == "prod eu"
        assert span.resource["service.name"] == "llm-gateway"
        assert span.name == "chat gpt-4o-mini" and span.trace_id == record["request_id"].replace("-", "")
        assert span.parent_span_id == ""  # no traceparent: a root span
        # The call's real times, from the record, not the time of export.
        assert span.start_ns == epoch_ns(record["created_at"])
        assert span.end_ns - span.start_ns == round(record["latency_ms"] * 1_000_000)
        assert span.events[0][:2] == ("relaylog.first_chunk", span.start_ns + round(record["ttft_ms"] * 1_000_000))
        assert span.attributes["gen_ai.provider.name"] == "openai"
        assert span.attributes["gen_ai.request.model"] == "gpt-4o-mini"
        assert span.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
        assert span.attributes["relaylog.user_id"] == "alice"
        assert span.attributes["relaylog.properties.team"] == "search"
        assert not any("messages" in name for name in span.attributes)  # content off by default
    failed = spans_of(receiver, sent[1]["request_id"])[0]
    assert failed.attributes["error.type"] == "upstream_error" and failed.attributes["http.response.status_code"] == 429
    assert "gen_ai.usage.input_tokens" not in failed.attributes
    assert spans_of(receiver, sent[0]["request_id"])[0].attributes["gen_ai.usage.input_tokens"] == 120
    out, err = capfd.readouterr()
    assert processed(caplog) == [{"key": RAW_KEY, "spans_exported": 3, "spans_failed": 0, "spans_skipped": 0,
                               "spans_unsampled": 0, "spans_repeated": 0}]  # fmt: skip
    (emitted,) = metrics(out)
    assert emitted["SpansExported"] == [3.0] and emitted["SpansNotExported"] == [0.0]
    assert TEAM_KEY not in out + err


@pytest.mark.parametrize("kind", ["string", "missing", "binary", "not-pairs"])
def test_headers_that_cannot_be_used_stop_export_not_aggregation(
    kind: str, aws_stack: Stack, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    secrets = aws_stack.client("secretsmanager")
    if kind == "string":  # a plain parameter: readable by anyone who may describe it, not encrypted
        arn = secret_headers(aws_stack, "string")
    elif kind == "missing":
        arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:relaylog/none-AbCdEf"
    elif kind == "binary":
        arn = secrets.create_secret(Name="relaylog/otel", SecretBinary=TEAM_KEY.encode())["ARN"]
    else:
        arn = secrets.create_secret(Name="relaylog/otel", SecretString=f"x-honeycomb-team {TEAM_KEY}")["ARN"]
    module = exporting(monkeypatch, receiver.http_url, **{ENV_HEADERS_ARN: arn})
    sent = records(2)
    aws_stack.put_raw_object(RAW_KEY, sent)
    assert invoke(module, aws_stack.sqs_event()) == {"batchItemFailures": []}
    day = aws_stack.rollup(layout.rollup_pk("d", DAY), "all#")
    assert day is not None and day["requests"] == 2  # aggregated all the same
    assert not [s for r in sent for s in spans_of(receiver, r["request_id"])]
    (error,) = [r for r in caplog.records if r.name == "relaylog.otel" and r.levelname == "ERROR"]
    assert f"spans are not exported (headers from {arn})" in error.getMessage()
    out, err = capfd.readouterr()
    assert processed(caplog) == [{"key": RAW_KEY, "spans_exported": 0, "spans_failed": 0, "spans_skipped": 2,
                               "spans_unsampled": 0, "spans_repeated": 0}]  # fmt: skip
    assert metrics(out)[0]["SpansNotExported"] == [2.0]
    assert TEAM_KEY not in out + err + caplog.text


def test_without_an_endpoint_no_secret_is_read_and_opentelemetry_is_never_imported(
    aws_stack: Stack, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # As the template sets it up by default: an empty endpoint. A headers ARN that does not exist
    # would log an error if anything tried to read it.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    monkeypatch.setenv(ENV_HEADERS_ARN, "arn:aws:secretsmanager:us-east-1:123456789012:secret:relaylog/none-AbCdEf")
    module = load_aggregator()
    assert module.spans is None
    aws_stack.put_raw_object(RAW_KEY, records(1))
    assert invoke(module, aws_stack.sqs_event()) == {"batchItemFailures": []}
    out, _ = capfd.readouterr()
    assert processed(caplog) == [{"key": RAW_KEY}] and "SpansExported" not in out
    assert not [r for r in caplog.records if r.name == "relaylog.otel"]
    # A cold start in a process of its own: the SDK is imported with an endpoint, and only then.
    check = (
        "import importlib.util, sys;"
        f"spec = importlib.util.spec_from_file_location('app', {str(APP)!r});"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec));"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('opentelemetry')}))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RELAYLOG_OTEL"))}
    env.update(AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    for endpoint, imported in (("", "[]"), ("https://collector.example", "['opentelemetry']")):
        result = subprocess.run([sys.executable, "-c", check], env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == imported


# -- which records, how often ---------------------------------------------------------------------


def test_a_record_delivered_in_two_objects_is_one_span_and_a_redelivered_object_sends_nothing_again(
    aws_stack: Stack, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    module = exporting(monkeypatch, receiver.http_url)
    sent = records(3)
    aws_stack.put_raw_object(RAW_KEY, sent)
    first = aws_stack.sqs_event()
    assert invoke(module, first) == {"batchItemFailures": []}
    # The proxy's spool held two of them as well (Firehose had taken them after all): that object
    # owns neither, and exports nothing.
    aws_stack.put_raw_object(SPOOL_KEY, sent[1:])
    assert invoke(module, aws_stack.sqs_event()) == {"batchItemFailures": []}
    # SQS delivers the first message again: the collector has its spans already.
    assert invoke(module, first) == {"batchItemFailures": []}
    assert [len(spans_of(receiver, r["request_id"])) for r in sent] == [1, 1, 1]
    assert [(line["spans_exported"], line["spans_repeated"]) for line in processed(caplog)] == [(3, 0), (0, 0), (0, 3)]


def _one_message(*events: dict[str, Any]) -> dict[str, Any]:
    """One SQS message whose S3 notification names the objects of all `events`, in that order (an
    s3:TestEvent among them names none)."""
    messages = [m for event in events for m in event["Records"]]
    entries = [entry for m in messages for entry in json.loads(m["body"]).get("Records", [])]
    return {"Records": [{**messages[0], "body": json.dumps({"Records": entries})}]}


def test_a_message_that_fails_after_one_of_its_objects_does_not_send_that_objects_spans_again(
    aws_stack: Stack, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    module = exporting(monkeypatch, receiver.http_url)
    exported, failing = records(2, user_id="first"), records(2, user_id="second")
    aws_stack.put_raw_object(RAW_KEY, exported)
    done = aws_stack.sqs_event()
    aws_stack.put_raw_object(SPOOL_KEY, failing)
    event = _one_message(done, aws_stack.sqs_event())
    real = module.dynamodb
    module.dynamodb = _CrashAfter(real, 1)  # the first object's one rollup transaction, then the Lambda dies
    with pytest.raises(BatchProcessingError):  # the batch's only message failed: the invocation fails
        invoke(module, event)
    module.dynamodb = real
    assert invoke(module, event) == {"batchItemFailures": []}
    assert [len(spans_of(receiver, r["request_id"])) for r in exported + failing] == [1, 1, 1, 1]
    lines = [(line["key"], line["spans_exported"], line["spans_repeated"]) for line in processed(caplog)]
    assert lines == [(RAW_KEY, 2, 0), (RAW_KEY, 0, 2), (SPOOL_KEY, 2, 0)]


def test_an_object_whose_spans_the_collector_did_not_take_sends_them_when_delivered_again(
    aws_stack: Stack, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    module = exporting(monkeypatch, f"http://127.0.0.1:{closed_port()}", OTEL_EXPORTER_OTLP_TIMEOUT=TIMEOUT_MS)
    sent = records(2)
    aws_stack.put_raw_object(RAW_KEY, sent)
    event = aws_stack.sqs_event()
    assert invoke(module, event) == {"batchItemFailures": []}
    # The collector is back (a new execution environment: the old one's pause is gone with it), and
    # SQS happens to deliver the message again.
    module = exporting(monkeypatch, receiver.http_url)
    assert invoke(module, event) == {"batchItemFailures": []}
    assert [len(spans_of(receiver, r["request_id"])) for r in sent] == [1, 1]
    lines = [(line["spans_exported"], line["spans_failed"], line["spans_repeated"]) for line in processed(caplog)]
    assert lines == [(0, 2, 0), (2, 0, 0)]


def test_an_object_that_failed_before_export_is_exported_when_it_comes_back(
    aws_stack: Stack, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = exporting(monkeypatch, receiver.http_url)
    # 60 users: two rollup transactions; the Lambda dies after the first (test_aggregate_function).
    sent = [make_record(BASE, user_id=f"user-{i}") for i in range(60)]
    aws_stack.put_raw_object(RAW_KEY, sent)
    event = aws_stack.sqs_event()
    real = module.dynamodb
    module.dynamodb = _CrashAfter(real, 1)
    assert len(invoke(module, event)["batchItemFailures"]) == 1
    assert not [s for r in sent for s in spans_of(receiver, r["request_id"])]
    module.dynamodb = real
    assert invoke(module, event) == {"batchItemFailures": []}
    assert [len(spans_of(receiver, r["request_id"])) for r in sent] == [1] * 60


# -- a collector that is down ---------------------------------------------------------------------


class CountingBlackHole:
    """A loopback port that accepts connections, counts them and never answers."""

    def __enter__(self) -> Self:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
        for conn in self.accepted:
            conn.close()


def _three_objects(stack: Stack, batch: int) -> list[dict[str, Any]]:
    sent = []
    for n in range(3):
        two = records(2)
        stack.put_raw_object(RAW_KEY.replace("0f1e2d3c", f"{batch:04d}{n:04d}"), two)
        sent += two
    return sent


@pytest.mark.parametrize("collector", ["refused", "never answers"])
def test_a_collector_that_is_down_costs_one_attempt_per_invocation_and_fails_no_message(
    collector: str, aws_stack: Stack, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    sent = []
    with CountingBlackHole() as hole:
        url = hole.url if collector == "never answers" else f"http://127.0.0.1:{closed_port()}"
        module = exporting(monkeypatch, url, OTEL_EXPORTER_OTLP_TIMEOUT=TIMEOUT_MS)
        connections = []
        for batch in range(2):  # two invocations of three objects each
            sent += _three_objects(aws_stack, batch)
            assert invoke(module, aws_stack.sqs_event()) == {"batchItemFailures": []}
            connections.append(len(hole.accepted))
    day = aws_stack.rollup(layout.rollup_pk("d", DAY), "all#")
    assert day is not None and day["requests"] == len(sent)  # every object aggregated
    out, _ = capfd.readouterr()
    tried = [(line["spans_failed"], line["spans_skipped"]) for line in processed(caplog)]
    # The first invocation tries its first object and fails; its other objects are not tried. The
    # second skips its objects while the pause after that failure (1 s) lasts, then tries one at
    # most: which one depends on the clock (how long the machine took), not the rule.
    assert tried[:3] == [(2, 0), (0, 2), (0, 2)]
    second = tried[3:]
    assert set(second) <= {(2, 0), (0, 2)} and second.count((2, 0)) <= 1
    if collector == "never answers":
        # One connection per try, held until the exporter's timeout, and no other.
        assert connections == [1, 1 + second.count((2, 0))]
    # One EMF line per invocation, with a value per object.
    assert [m["SpansNotExported"] for m in metrics(out)] == [[2.0, 2.0, 2.0]] * 2
    assert [m["SpansExported"] for m in metrics(out)] == [[0.0, 0.0, 0.0]] * 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "relaylog.otel" and r.levelname == "WARNING"]
    assert warnings and "span(s) not exported to " + url in warnings[0]


def test_no_export_starts_that_could_run_into_the_invocations_deadline(
    aws_stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with CountingBlackHole() as hole:
        module = exporting(monkeypatch, hole.url, OTEL_EXPORTER_OTLP_TIMEOUT=TIMEOUT_MS)
        aws_stack.put_raw_object(RAW_KEY, records(2))

        @dataclass
        class NearlyOut(LambdaContext):
            def get_remaining_time_in_millis(self) -> int:
                return int((RESERVE_S + 0.4) * 1000)  # less than the reserve plus the 0.5 s timeout

        assert module.handler(aws_stack.sqs_event(), NearlyOut()) == {"batchItemFailures": []}
        assert hole.accepted == []
    assert processed(caplog)[0]["spans_skipped"] == 2


# -- the deployed shape: the proxy in its own process, Firehose, S3, SQS, the aggregator ----------

# A module the proxy's interpreter imports at start-up (site), writing down every module it is
# asked to find afterwards, as it is asked: what the process imported, even if it never exits.
_WATCH = """
import os, sys

class _Watch:
    def find_spec(self, name, path=None, target=None):
        with open(os.environ["RELAYLOG_TEST_IMPORTS"], "a") as out:
            out.write(name + "\\n")
        return None

sys.meta_path.insert(0, _Watch())
"""


@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A moto server both this process (the aggregator) and the proxy's process talk to."""
    fake_credentials()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = moto_endpoint(server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    try:
        yield endpoint
    finally:
        server.stop()


def test_a_call_through_the_deployed_proxy_becomes_a_child_of_the_callers_span(
    moto_server: str, standin: StandIn, receiver: OtlpReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    stack = create_stack("relaylog-otel")
    for name, value in stack.env().items():
        monkeypatch.setenv(name, value)
    watch = tmp_path / "site"
    watch.mkdir()
    (watch / "sitecustomize.py").write_text(_WATCH)
    imports = tmp_path / "imports.txt"
    standin.fault = None
    with LambdaEmulator() as emulator, LambdaRuntime(
        emulator, tmp_path / "unused", standin.url,
        RELAYLOG_APP_FACTORY="relaylog.aws.proxy:create_app",  # the proxy function's own app
        AWS_ENDPOINT_URL=moto_server, PYTHONPATH=str(watch), RELAYLOG_TEST_IMPORTS=str(imports),
        # Even an endpoint set on the proxy by hand changes nothing there.
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_url, **stack.env(),
    ) as runtime:  # fmt: skip
        # The application's own tracing, propagated by its instrumented HTTP client as `traceparent`.
        app_spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(app_spans))
        http_client = httpx.Client()
        HTTPXClientInstrumentor.instrument_client(http_client, tracer_provider=provider)
        request_id = str(uuid.uuid4())
        client = openai.OpenAI(base_url=emulator.url + "/v1", api_key="sk-test", http_client=http_client,
                               default_headers={"Helicone-Request-Id": request_id})  # fmt: skip
        with provider.get_tracer("app").start_as_current_span("answer the user"):
            chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            completion = client.chat.completions.create(**chat)  # type: ignore[call-overload]
        http_client.close()
        emulator.settle()  # the record is sent before the runtime asks for its next event
        code, output = runtime.stop()
    assert code == 0, output[-3000:]
    seen = set(imports.read_text().split())
    assert {"relaylog.relay.app", "relaylog.sinks.firehose", "relaylog.otel.context", "relaylog.relay.http1"} <= seen
    assert not [name for name in seen if name.startswith("opentelemetry")]
    (http_span,) = [s for s in app_spans.get_finished_spans() if s.name != "answer the user"]

    # Firehose delivered the record to raw/; S3 told the queue; the aggregator takes the message.
    (key,) = stack.objects(layout.RAW_PREFIX)
    body = stack.client("s3").get_object(Bucket=stack.bucket, Key=key)["Body"].read()
    lines = (gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body).splitlines()
    (record,) = [orjson.loads(line) for line in lines]
    assert record["request_id"] == request_id
    caller = http_span.context
    assert record["traceparent"] == f"00-{caller.trace_id:032x}-{caller.span_id:016x}-{int(caller.trace_flags):02x}"
    secret = stack.client("secretsmanager").create_secret(Name="otel", SecretString=f"x-honeycomb-team={TEAM_KEY}")
    module = exporting(monkeypatch, receiver.http_url, **{ENV_HEADERS_ARN: secret["ARN"]})
    assert invoke(module, stack.sqs_event()) == {"batchItemFailures": []}
    (span,) = spans_of(receiver, request_id)
    assert span.trace_id == f"{caller.trace_id:032x}"
    assert span.parent_span_id == f"{caller.span_id:016x}" != span.span_id
    # It starts inside the caller's call. Its end is the proxy's (after its last write), which under
    # load can come a moment after the client read that last byte: not compared with the caller's.
    started, ended = http_span.start_time, http_span.end_time
    assert started is not None and ended is not None  # a finished span has both
    assert started <= span.start_ns <= ended
    assert span.start_ns == epoch_ns(record["created_at"])
    assert span.end_ns - span.start_ns == round(record["latency_ms"] * 1_000_000)
    assert span.attributes["gen_ai.response.id"] == completion.id
    assert completion.usage is not None
    assert span.attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert span.headers["x-honeycomb-team"] == TEAM_KEY


def test_the_aggregators_requirements_are_the_otel_extra_over_http() -> None:
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extra = pyproject["project"]["optional-dependencies"]["otel"]
    names = pyproject["tool"]["relaylog"]["lambda"]["functions/aggregator/requirements.txt"]
    assert set(names) - {"duckdb"} == {re.split("[<>=]", r)[0] for r in extra if "grpc" not in r}
    # make lock pins them (test_lock checks the file follows pyproject.toml): no gRPC comes along.
    pinned = (ROOT / "functions" / "aggregator" / "requirements.txt").read_text()
    assert "opentelemetry-exporter-otlp-proto-http==" in pinned and "grpc" not in pinned
