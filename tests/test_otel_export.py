"""Relayed calls arrive at a real OTLP receiver (tests.support.otlp: the official opentelemetry-proto
service and messages over gRPC and HTTP/protobuf) as GenAI client spans: attribute names as the
semantic conventions spell them (written out here from the conventions' text, not taken from the
code under test), values as the real SDKs report them, the span's times inside the client's own
clock readings, the caller's span as parent, and no prompt content unless asked for.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from relaylog.config import OtelSettings
from relaylog.standin import StandIn

from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.proxy import RunningProxy

SPAN_KIND_CLIENT = 3  # opentelemetry.proto.trace.v1.Span.SpanKind
STATUS_ERROR = 2


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def settings(endpoint: str, **overrides: Any) -> OtelSettings:
    return replace(OtelSettings(endpoint=endpoint), schedule_delay_s=0.02, **overrides)


@pytest.fixture(scope="module")
def http_proxy(
    receiver: OtlpReceiver, standin: StandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningProxy]:
    otel = settings(receiver.http_url + "/v1/traces", resource=(("deployment.environment", "test"),))
    with RunningProxy(tmp_path_factory.mktemp("otel-http"), standin.url, otel=otel) as running:
        yield running


def ids(**headers: str) -> tuple[str, dict[str, str]]:
    request_id = str(uuid.uuid4())
    return request_id, {"Helicone-Request-Id": request_id, **headers}


def epoch_ns(created_at: str) -> int:
    moment = datetime.fromisoformat(created_at)
    return int(moment.replace(microsecond=0).timestamp()) * 10**9 + moment.microsecond * 1000


def gen_ai(span: ReceivedSpan) -> dict[str, Any]:
    return {k: v for k, v in span.attributes.items() if k.startswith("gen_ai.")}


def test_a_chat_completion_is_a_genai_client_span(
    http_proxy: RunningProxy, receiver: OtlpReceiver, standin: StandIn
) -> None:
    request_id, headers = ids(
        **{
            "Helicone-User-Id": "alice",
            "Helicone-Session-Id": "sess-1",
            "Helicone-Session-Path": "/plan",
            "Helicone-Prompt-Id": "greeting",
            "Helicone-Property-Team": "search",
        }
    )
    client = openai.OpenAI(base_url=http_proxy.url + "/v1", api_key="sk-test", default_headers=headers)
    before = time.time_ns()
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    after = time.time_ns()
    record = http_proxy.record(request_id)
    span = receiver.span(request_id)

    assert span.name == "chat gpt-4o-mini" and span.kind == SPAN_KIND_CLIENT
    assert span.parent_span_id == "" and span.trace_id == request_id.replace("-", "")  # a root span
    usage = completion.usage
    assert usage is not None
    assert gen_ai(span) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": completion.model,
        "gen_ai.response.id": completion.id,
        "gen_ai.response.finish_reasons": [completion.choices[0].finish_reason],
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.prompt_tokens_details.cached_tokens,
        "gen_ai.usage.reasoning.output_tokens": usage.completion_tokens_details.reasoning_tokens,
        "gen_ai.conversation.id": "sess-1",
        "gen_ai.prompt.name": "greeting",
    }
    assert span.attributes["server.address"] == "127.0.0.1" and span.attributes["server.port"] == standin.port
    assert span.attributes["http.response.status_code"] == 200 and "error.type" not in span.attributes
    mine = {k: v for k, v in span.attributes.items() if k.startswith("relaylog.")}
    assert mine["relaylog.request_id"] == request_id
    assert mine["relaylog.user_id"] == "alice" and mine["relaylog.session_path"] == "/plan"
    assert mine["relaylog.properties.team"] == "search"
    assert mine["relaylog.cost_usd"] == record["cost_usd"] and mine["relaylog.cost_source"] == record["cost_source"]
    assert mine["relaylog.upstream_ms"] == record["upstream_ms"]
    assert not any("body" in k or "messages" in k for k in span.attributes)  # no content unless asked for
    # The call's real times: inside the client's own clock readings, exactly the record's.
    assert before <= span.start_ns <= span.end_ns <= after
    assert span.start_ns == epoch_ns(record["created_at"])
    assert span.end_ns - span.start_ns == round(record["latency_ms"] * 1_000_000)
    assert [(name, at) for name, at, _ in span.events] == [
        ("relaylog.first_chunk", span.start_ns + round(record["ttft_ms"] * 1_000_000))
    ]
    assert span.resource["service.name"] == "relaylog" and span.resource["deployment.environment"] == "test"
    assert span.scope[0] == "relaylog" and span.scope[2] == "https://opentelemetry.io/schemas/1.44.0"


def test_a_stream_over_grpc_carries_time_to_first_chunk_and_the_configured_headers(
    receiver: OtlpReceiver, standin: StandIn, tmp_path: Path
) -> None:
    otel = settings(
        receiver.grpc_url, protocol="grpc", headers=(("x-api-key", "collector-secret"),), compression="gzip"
    )
    with RunningProxy(tmp_path, standin.url, otel=otel) as proxy:
        request_id, headers = ids()
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", default_headers=headers)
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        record = proxy.record(request_id)
        span = receiver.span(request_id)
    assert span.headers["x-api-key"] == "collector-secret"
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["gen_ai.response.time_to_first_chunk"] == record["ttft_ms"] / 1000
    assert span.attributes["gen_ai.response.id"] == chunks[0].id
    assert span.attributes["gen_ai.usage.output_tokens"] == chunks[-1].usage.completion_tokens
    assert span.events[0][1] - span.start_ns == round(record["ttft_ms"] * 1_000_000)


def test_the_span_is_a_child_of_the_instrumented_callers_http_span(
    http_proxy: RunningProxy, receiver: OtlpReceiver
) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    # The application's own tracing: an SDK tracer, and the httpx instrumentation on the client
    # the openai SDK uses, which propagates the HTTP span as `traceparent`.
    app_spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(app_spans))
    tracer = provider.get_tracer("app")
    http_client = httpx.Client()
    HTTPXClientInstrumentor.instrument_client(http_client, tracer_provider=provider)
    request_id, headers = ids()
    client = openai.OpenAI(
        base_url=http_proxy.url + "/v1", api_key="sk-test", default_headers=headers, http_client=http_client
    )
    with tracer.start_as_current_span("answer the user"):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    http_client.close()
    (http_span,) = [s for s in app_spans.get_finished_spans() if s.name != "answer the user"]
    span = receiver.span(request_id)
    assert span.trace_id == f"{http_span.context.trace_id:032x}"
    assert span.parent_span_id == f"{http_span.context.span_id:016x}"
    assert span.span_id != span.parent_span_id


def test_a_callers_unsampled_trace_stays_unsampled_unless_always_on(
    receiver: OtlpReceiver, standin: StandIn, tmp_path: Path
) -> None:
    unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    for always, folder in ((False, "parent"), (True, "always")):
        otel = settings(receiver.http_url + "/v1/traces", follow_parent_sampling=not always)
        with RunningProxy(tmp_path / folder, standin.url, otel=otel) as proxy:
            request_id, headers = ids(traceparent=unsampled, tracestate="congo=t61rcWkgMzE")
            httpx.post(
                proxy.url + "/v1/chat/completions",
                headers=headers,
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            )
            proxy.record(request_id)
        assert proxy.sink.spans is not None
        if always:
            span = receiver.span(request_id)
            assert (span.trace_id, span.parent_span_id) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
            assert span.trace_state == "congo=t61rcWkgMzE"
        else:
            assert proxy.sink.spans.stats.unsampled == 1 and proxy.sink.spans.stats.exported == 0


def test_a_provider_error_is_an_error_span(http_proxy: RunningProxy, receiver: OtlpReceiver) -> None:
    request_id, headers = ids(**{"x-standin-fault": "status=429"})
    reply = httpx.post(
        http_proxy.url + "/v1/chat/completions",
        headers=headers,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert reply.status_code == 429
    record = http_proxy.record(request_id)
    span = receiver.span(request_id)
    assert span.status_code == STATUS_ERROR
    assert span.attributes["error.type"] == (record["error_type"] or "429") == span.status_message
    assert span.attributes["http.response.status_code"] == 429


def _content_proxy(receiver: OtlpReceiver, standin: StandIn, path: Path) -> RunningProxy:
    return RunningProxy(path, standin.url, otel=settings(receiver.http_url + "/v1/traces", capture_content=True))


def test_content_is_exported_only_when_asked_and_never_an_omitted_body(
    receiver: OtlpReceiver, standin: StandIn, tmp_path: Path
) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "rainy, 14C"},
    ]
    with _content_proxy(receiver, standin, tmp_path) as proxy:
        spans = {}
        for omit in (None, "Helicone-Omit-Request", "Helicone-Omit-Response"):
            request_id, headers = ids(**({omit: "true"} if omit else {}))
            client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", default_headers=headers)
            completion = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            spans[omit] = receiver.span(request_id)
    full = spans[None].attributes
    assert json.loads(full["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    assert json.loads(full["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy, 14C"}]},
    ]
    answer = completion.choices[0]
    assert json.loads(full["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": answer.message.content}],
            "finish_reason": answer.finish_reason,
        }
    ]
    no_request = spans["Helicone-Omit-Request"].attributes
    assert "gen_ai.input.messages" not in no_request and "gen_ai.system_instructions" not in no_request
    assert "gen_ai.output.messages" in no_request
    no_response = spans["Helicone-Omit-Response"].attributes
    assert "gen_ai.output.messages" not in no_response and "gen_ai.input.messages" in no_response
    # Metadata read from the response is not content: it stays.
    assert no_response["gen_ai.response.id"] == completion.id


def test_streamed_answers_are_put_back_together(receiver: OtlpReceiver, standin: StandIn, tmp_path: Path) -> None:
    with _content_proxy(receiver, standin, tmp_path) as proxy:
        request_id, headers = ids()
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", default_headers=headers)
        chunks = list(
            client.chat.completions.create(
                model="standin-long", messages=[{"role": "user", "content": "tell me"}], stream=True
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        openai_span = receiver.span(request_id)

        request_id, headers = ids()
        claude = anthropic.Anthropic(base_url=proxy.url + "/anthropic", api_key="sk-ant-test", default_headers=headers)
        tool = {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
        with claude.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=200,
            tools=[tool],
            system="Be brief.",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
        ) as stream:
            message = stream.get_final_message()
        claude_span = receiver.span(request_id)
    assert json.loads(openai_span.attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": "stop"}
    ]
    expected_parts = []
    for block in message.content:
        if block.type == "text":
            expected_parts.append({"type": "text", "content": block.text})
        else:
            expected_parts.append({"type": "tool_call", "id": block.id, "name": block.name, "arguments": block.input})
    assert json.loads(claude_span.attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": expected_parts, "finish_reason": message.stop_reason}
    ]
    assert any(p["type"] == "tool_call" for p in expected_parts)
    assert json.loads(claude_span.attributes["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "Be brief."}
    ]


def test_gemini_content_and_provider_name(receiver: OtlpReceiver, standin: StandIn, tmp_path: Path) -> None:
    with _content_proxy(receiver, standin, tmp_path) as proxy:
        request_id, headers = ids()
        body = {
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        }
        reply = httpx.post(
            f"{proxy.url}/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            json=body,
            headers=headers | {"x-goog-api-key": "g-test"},
        )
        span = receiver.span(request_id)
    chunks = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    text = "".join(
        p["text"] for c in chunks for cand in c.get("candidates", []) for p in cand.get("content", {}).get("parts", [])
    )
    assert span.name == "generate_content gemini-2.0-flash"
    assert span.attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert json.loads(span.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]}
    ]
    (output,) = json.loads(span.attributes["gen_ai.output.messages"])
    assert output["parts"] == [{"type": "text", "content": text}] and output["finish_reason"] == "STOP"


def test_a_bedrock_converse_call_is_a_chat_span_of_aws_bedrock(
    http_proxy: RunningProxy, receiver: OtlpReceiver
) -> None:
    request_id, headers = ids(Authorization="Bearer bedrock-api-key")  # the client's Bedrock API key
    body = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    reply = httpx.post(
        f"{http_proxy.url}/bedrock/us-east-1/model/us.amazon.nova-lite-v1%3A0/converse", json=body, headers=headers
    )
    span = receiver.span(request_id)
    usage = reply.json()["usage"]
    assert span.name == "chat us.amazon.nova-lite-v1:0"
    attributes = gen_ai(span)
    assert (attributes["gen_ai.provider.name"], attributes["gen_ai.operation.name"]) == ("aws.bedrock", "chat")
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (
        usage["inputTokens"],
        usage["outputTokens"],
    )
