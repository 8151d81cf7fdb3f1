"""relaylog on Lambda: the exec wrapper's runtime loop against a Runtime API emulator.

The emulator's Function URL front lets real SDKs call through emulator → runtime → relay → the
provider stand-in, the whole way on loopback sockets.
"""

from __future__ import annotations

import base64
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from relaylog.config import LAMBDA_MAX_REQUEST_BYTES, Settings
from relaylog.standin import StandIn

from tests.support.function_url import PAYLOAD_LIMIT, Front
from tests.support.lambda_emulator import LambdaEmulator
from tests.support.lambda_runtime import LambdaRuntime
from tests.support.sdk import OPENAI

pytestmark = pytest.mark.aws

EVENTS = Path(__file__).resolve().parent.parent / "events"


@pytest.fixture(scope="module")
def emulator() -> Iterator[LambdaEmulator]:
    with LambdaEmulator() as running:
        yield running


@pytest.fixture(scope="module")
def runtime(
    emulator: LambdaEmulator, standin: StandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LambdaRuntime]:
    standin.fault = None
    with LambdaRuntime(emulator, tmp_path_factory.mktemp("lambda"), standin.url) as running:
        yield running


def _event(name: str, **changes: Any) -> dict[str, Any]:
    event = json.loads((EVENTS / name).read_text())
    event.update(changes)
    return event


def _chat(stream: bool, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}], "stream": stream, **extra}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("client_asks_usage", [False, True])
def test_the_openai_sdk_streams_through_the_runtime_exactly_as_directly(
    mode: str, client_asks_usage: bool, runtime: LambdaRuntime, standin: StandIn
) -> None:
    extra = {"stream_options": {"include_usage": True}} if client_asks_usage else {}
    fn = lambda c: c.chat.completions.create(**_chat(True, **extra))  # noqa: E731
    direct = OPENAI.call(mode, standin.url + "/v1", fn)
    request_id = str(uuid.uuid4())
    relayed = OPENAI.call(mode, runtime.emulator.url + "/v1", fn, {"Helicone-Request-Id": request_id})
    # Same chunks, same order, same content; with the usage chunk exactly when the client asked.
    assert [c.model_dump() for c in relayed.result] == [c.model_dump() for c in direct.result]
    assert len(relayed.result) > 3
    assert (relayed.result[-1].usage is not None) is client_asks_usage
    runtime.emulator.settle()
    record = runtime.record(request_id)
    assert record["stream"] is True and record["status"] == 200 and record["error_type"] is None
    assert record["usage_source"] == ("provider" if client_asks_usage else "provider_injected")
    assert record["output_tokens"] > 0
    if client_asks_usage:
        usage = relayed.result[-1].usage
        assert (record["input_tokens"], record["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)


def test_non_streamed_calls_and_errors_match_direct_calls(runtime: LambdaRuntime, standin: StandIn) -> None:
    fn = lambda c: c.chat.completions.create(**_chat(False))  # noqa: E731
    assert (
        OPENAI.call("sync", runtime.emulator.url + "/v1", fn).result
        == OPENAI.call("sync", standin.url + "/v1", fn).result
    )
    import openai

    fault = {"x-standin-fault": "status=429;retry-after=7"}
    with pytest.raises(openai.RateLimitError) as relayed:
        OPENAI.call("sync", runtime.emulator.url + "/v1", fn, fault)
    with pytest.raises(openai.RateLimitError) as direct:
        OPENAI.call("sync", standin.url + "/v1", fn, fault)
    assert relayed.value.body == direct.value.body
    assert relayed.value.response.headers["retry-after"] == "7"


def test_each_body_message_is_one_chunk_after_the_prelude(runtime: LambdaRuntime, standin: StandIn) -> None:
    event = _event("function_url_stream_chat.json")
    event["headers"] = {**event["headers"], "x-standin-fault": "chunk-delay-ms=15"}
    outcome = runtime.emulator.invoke(event)
    assert outcome.headers["lambda-runtime-function-response-mode"] == "streaming"
    assert outcome.headers["content-type"] == "application/vnd.awslambda.http-integration-response"
    assert outcome.headers["transfer-encoding"] == "chunked"
    assert outcome.prelude is not None and outcome.prelude["statusCode"] == 200
    assert outcome.prelude["headers"]["content-type"].startswith("text/event-stream")
    assert "content-length" not in outcome.prelude["headers"]
    # The stand-in sends one SSE event per HTTP chunk, 15 ms apart; each is passed on as it comes.
    assert len(outcome.chunks) == outcome.body.count(b"\n\n") > 5
    assert all(chunk.endswith(b"\n\n") for chunk in outcome.chunks)
    gaps = [b - a for a, b in zip(outcome.chunk_times, outcome.chunk_times[1:], strict=False)]
    # Most gaps, not each: on a loaded machine a late read can pass two events on 25 µs apart
    # (seen once in a full run); a runtime that held events back would make most gaps ~0.
    assert sorted(gaps)[len(gaps) // 2] > 0.005
    assert outcome.body.endswith(b"data: [DONE]\n\n")
    assert outcome.trailers == {}


def test_base64_bodies_cookies_query_and_repeated_headers_reach_the_provider(
    runtime: LambdaRuntime, standin: StandIn
) -> None:
    standin.clear()
    event = _event("function_url_base64.json")
    outcome = runtime.emulator.invoke(event)
    assert outcome.prelude is not None and outcome.prelude["statusCode"] == 200
    seen = standin.requests[-1]
    assert seen.body == base64.b64decode(event["body"])
    assert seen.path == event["rawPath"] + "?" + event["rawQueryString"]
    assert seen.header("cookie") == "; ".join(event["cookies"])
    assert seen.header("x-trace") == event["headers"]["x-trace"]  # comma-joined by Lambda, relayed as is
    runtime.emulator.settle()
    assert runtime.record(event["headers"]["helicone-request-id"])["properties"] == {"team": "search"}


def test_records_are_written_after_each_response_and_before_the_next_event(runtime: LambdaRuntime) -> None:
    emulator = runtime.emulator
    emulator.settle()
    emulator.probe = lambda: len(runtime.records())
    try:
        before = len(runtime.records())
        start = len(emulator.timeline)
        ids = [emulator.invoke(_event("function_url_stream_chat.json")).request_id for _ in range(3)]
        emulator.settle()
    finally:
        emulator.probe = None
    # Each response is complete before its record exists (the client never waits for logging),
    # and the record is on disk before the runtime asks for more work (nothing left to freeze).
    assert emulator.timeline[start:] == [
        ("response", ids[0], before),
        ("next", None, before + 1),
        ("response", ids[1], before + 1),
        ("next", None, before + 2),
        ("response", ids[2], before + 2),
        ("next", None, before + 3),
    ]


def test_a_provider_cut_mid_stream_ends_with_error_trailers(runtime: LambdaRuntime) -> None:
    event = _event("function_url_stream_chat.json")
    event["headers"] = {**event["headers"], "x-standin-fault": "drop-after=2", "helicone-request-id": str(uuid.uuid4())}
    outcome = runtime.emulator.invoke(event)
    assert outcome.prelude is not None and outcome.prelude["statusCode"] == 200
    assert outcome.trailers["lambda-runtime-function-error-type"] == "Relay.upstream_disconnect"
    assert outcome.error_trailer() == {
        "errorMessage": "The provider ended the response early",
        "errorType": "Relay.upstream_disconnect",
        "stackTrace": [],
    }
    runtime.emulator.settle()
    assert runtime.record(event["headers"]["helicone-request-id"])["error_type"] == "upstream_disconnect"


def test_a_cut_reaches_an_http_client_as_a_truncated_body(runtime: LambdaRuntime) -> None:
    headers = {"x-standin-fault": "drop-after=2", "content-type": "application/json"}
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream(
            "POST", runtime.emulator.url + "/v1/chat/completions", json=_chat(True), headers=headers
        ) as r:
            assert r.status_code == 200
            for _ in r.iter_raw():
                pass


def test_errors_before_the_first_byte_are_relaylogs_own_status(runtime: LambdaRuntime) -> None:
    outcome = runtime.emulator.invoke(_event("function_url_stream_chat.json", rawPath="/nowhere/v1/chat"))
    assert outcome.prelude is not None and outcome.prelude["statusCode"] == 404
    assert json.loads(outcome.body)["error"]["type"] == "unknown_provider"
    event = _event("function_url_stream_chat.json")
    event["headers"] = {**event["headers"], "x-standin-fault": "reset"}
    outcome = runtime.emulator.invoke(event)
    assert outcome.prelude is not None and outcome.prelude["statusCode"] == 502
    assert json.loads(outcome.body)["error"]["type"] == "upstream_unreachable"


def test_an_event_that_is_not_a_function_url_request_is_an_invocation_error(runtime: LambdaRuntime) -> None:
    outcome = runtime.emulator.invoke({"Records": []})
    assert outcome.error_type == "Runtime.InvalidEvent" and outcome.prelude is None
    assert outcome.error is not None and "not a Function URL event" in outcome.error["errorMessage"]
    # And the runtime goes on serving.
    served = runtime.emulator.invoke(_event("function_url_stream_chat.json"))
    assert served.prelude is not None and served.prelude["statusCode"] == 200


def test_a_client_that_leaves_mid_stream_still_costs_the_whole_answer(runtime: LambdaRuntime, standin: StandIn) -> None:
    request_id = str(uuid.uuid4())
    headers = {"x-standin-fault": "chunk-delay-ms=100", "helicone-request-id": request_id}
    direct = httpx.post(standin.url + "/v1/chat/completions", json=_chat(True), headers=headers).content
    with httpx.stream("POST", runtime.emulator.url + "/v1/chat/completions", json=_chat(True), headers=headers) as r:
        next(r.iter_raw())
    runtime.emulator.settle()
    # AWS documents that the Function URL does not interrupt the stream when its client leaves: the
    # runtime cannot see it, reads the provider to the end, and records a complete call.
    outcome = runtime.emulator.outcomes[-1]
    assert outcome.client_gone and outcome.trailers == {} and outcome.body == direct
    record = runtime.record(request_id)
    assert record["status"] == 200 and record["error_type"] is None
    assert record["response_bytes"] == len(direct) and record["usage_source"] == "provider_injected"
    assert record["output_tokens"] > 0


def test_the_deadline_stops_the_call_with_trailers_and_a_record(runtime: LambdaRuntime) -> None:
    event = _event("function_url_stream_chat.json")
    event["headers"] = {
        **event["headers"],
        "x-standin-fault": "chunk-delay-ms=400",
        "helicone-request-id": str(uuid.uuid4()),
    }
    started = time.monotonic()
    outcome = runtime.emulator.invoke(event, timeout_s=2.0)
    assert time.monotonic() - started < 2.0
    assert outcome.trailers["lambda-runtime-function-error-type"] == "Relay.function_timeout"
    runtime.emulator.settle()
    assert runtime.record(event["headers"]["helicone-request-id"])["error_type"] == "cancelled"


def test_requests_larger_than_a_function_url_carries_never_reach_relaylog(
    runtime: LambdaRuntime, standin: StandIn
) -> None:
    emulator = runtime.emulator
    emulator.settle()
    before, refused, calls = len(runtime.records()), emulator.refused, len(emulator.outcomes)
    url = emulator.url + "/v1/chat/completions"
    # The event (context, headers, body) may be 6 MB; a text body travels as it is.
    fits = _chat(False, messages=[{"role": "user", "content": "x" * (PAYLOAD_LIMIT - 2048)}])
    assert httpx.post(url, json=fits, timeout=30).status_code == 200
    over = _chat(False, messages=[{"role": "user", "content": "x" * PAYLOAD_LIMIT}])
    assert httpx.post(url, json=over, timeout=30).status_code == 413
    # A binary body travels base64-encoded: 4.8 MB is already too much, though relaylog's own
    # limit on Lambda would take it.
    binary = {"content-type": "application/octet-stream"}
    assert 4_800_000 < LAMBDA_MAX_REQUEST_BYTES
    assert httpx.post(url, content=b"\x00" * 4_800_000, headers=binary, timeout=30).status_code == 413
    emulator.settle()
    assert emulator.refused == refused + 2 and len(emulator.outcomes) == calls + 1
    assert len(runtime.records()) == before + 1  # refused before relaylog ran: no record


def test_on_lambda_relaylog_takes_any_body_a_function_url_can_carry(runtime: LambdaRuntime) -> None:
    # Straight to the runtime (no Function URL in front): relaylog's default limit on Lambda is the
    # largest body that can arrive, so it never refuses one that did.
    for size, status in ((LAMBDA_MAX_REQUEST_BYTES, 200), (LAMBDA_MAX_REQUEST_BYTES + 1, 413)):
        request_id = str(uuid.uuid4())
        text = "x" * (size - len(json.dumps(_chat(False, messages=[{"role": "user", "content": ""}]))))
        body = json.dumps(_chat(False, messages=[{"role": "user", "content": text}]))
        assert len(body) == size
        event = _event("function_url_stream_chat.json", body=body)
        event["headers"] = {**event["headers"], "helicone-request-id": request_id}
        outcome = runtime.emulator.invoke(event)
        assert outcome.prelude is not None and outcome.prelude["statusCode"] == status
        runtime.emulator.settle()
        record = runtime.record(request_id)
        assert record["error_type"] == (None if status == 200 else "body_too_large")


def test_the_lambda_default_request_limit_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAYLOG_MAX_REQUEST_BYTES", raising=False)
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    assert Settings.from_env().max_request_bytes == 64 * 1024 * 1024
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    assert Settings.from_env().max_request_bytes == 6 * 1024 * 1024 - 1024
    monkeypatch.setenv("RELAYLOG_MAX_REQUEST_BYTES", "1000")
    assert Settings.from_env().max_request_bytes == 1000


# These start runtimes of their own, so each gets an emulator of its own: two runtimes polling one
# emulator would share its invocations.


@pytest.mark.parametrize("front", [Front(), Front(binary="always", cookie_header=True)], ids=["by-type", "always"])
def test_the_provider_sees_the_clients_request_not_the_function_urls(
    front: Front, standin: StandIn, tmp_path: Path
) -> None:
    # Undocumented: which bodies are base64-encoded, and whether `cookie` stays among the headers
    # beside the `cookies` array. Either way the provider gets what a direct call sends.
    fn = lambda c: c.chat.completions.create(**_chat(True))  # noqa: E731
    headers = {"Cookie": "session=abc; theme=dark", "X-Trace": "t-1"}
    standin.fault = None
    with LambdaEmulator(front=front) as emulator, LambdaRuntime(emulator, tmp_path, standin.url):
        emulator.wait_polled(1)
        standin.clear()
        direct = OPENAI.call("sync", standin.url + "/v1", fn, headers)
        relayed = OPENAI.call("sync", emulator.url + "/v1", fn, headers)
        assert [c.model_dump() for c in relayed.result] == [c.model_dump() for c in direct.result]
        sent_direct, sent_relayed = standin.requests[-2:]
    asked = json.loads(sent_relayed.body)
    assert asked.pop("stream_options") == {"include_usage": True}  # relaylog asks for usage
    assert asked == json.loads(sent_direct.body)
    names = [name.lower() for name, _ in sent_relayed.headers]
    assert not [n for n in names if n.startswith(("x-forwarded-", "x-amzn-"))]
    assert names.count("cookie") == 1 and sent_relayed.header("cookie") == "session=abc; theme=dark"
    assert sent_relayed.header("x-trace") == "t-1"
    # Connection is hop-by-hop; Accept-Encoding relaylog narrows to what it can decode.
    own = {"connection", "accept-encoding"}
    assert set(names) - own == {name.lower() for name, _ in sent_direct.headers} - own


def test_a_runtime_frozen_past_the_deadline_is_reset_and_its_client_cut(standin: StandIn, tmp_path: Path) -> None:
    headers = {"x-standin-fault": "chunk-delay-ms=100", "helicone-request-id": str(uuid.uuid4())}
    with LambdaEmulator(timeout_s=3.0) as emulator, LambdaRuntime(emulator, tmp_path, standin.url) as runtime:
        emulator.wait_polled(1)
        assert runtime.process is not None
        frozen = runtime.process
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("POST", emulator.url + "/v1/chat/completions", json=_chat(True), headers=headers) as r:
                body = r.iter_raw()
                next(body)
                # Frozen, it cannot stop the call itself a second before the deadline as it would.
                frozen.send_signal(signal.SIGSTOP)
                for _ in body:
                    pass
        assert emulator.outcomes[-1].timed_out and runtime.resets == 1 and frozen.poll() is not None
        # Lambda starts the runtime again for the next invocation.
        fn = lambda c: c.chat.completions.create(**_chat(False))  # noqa: E731
        assert OPENAI.call("sync", emulator.url + "/v1", fn).result.object == "chat.completion"
        emulator.settle()
    # The frozen call's record died with its process: only the next call's is there.
    recorded = [r["request_id"] for r in runtime.records()]
    assert len(recorded) == 1 and headers["helicone-request-id"] not in recorded


def test_sigterm_flushes_and_exits(standin: StandIn, tmp_path: Path) -> None:
    with LambdaEmulator() as emulator, LambdaRuntime(emulator, tmp_path, standin.url) as runtime:
        before = emulator.next_calls
        emulator.invoke(_event("function_url_stream_chat.json"), wait=False).done.wait(10)
        emulator.wait_polled(before + 2)
        code, output = runtime.stop(signal.SIGTERM)
    assert code == 0, output
    assert len(runtime.records()) == 1


def test_sigterm_mid_call_lets_the_call_finish_then_flushes_and_exits(standin: StandIn, tmp_path: Path) -> None:
    event = _event("function_url_stream_chat.json")
    event["headers"] = {**event["headers"], "x-standin-fault": "chunk-delay-ms=100"}
    with LambdaEmulator() as emulator, LambdaRuntime(emulator, tmp_path, standin.url) as runtime:
        outcome = emulator.invoke(event, wait=False)
        deadline = time.monotonic() + 10
        while not outcome.chunks and time.monotonic() < deadline:
            time.sleep(0.005)
        code, output = runtime.stop(signal.SIGTERM)
    assert code == 0, output
    assert outcome.done.is_set() and outcome.trailers == {} and outcome.body.endswith(b"data: [DONE]\n\n")
    assert emulator.next_calls == 1  # it stopped instead of asking for more work
    assert len(runtime.records()) == 1


def test_a_factory_that_fails_reports_an_init_error(standin: StandIn, tmp_path: Path) -> None:
    factory = {"RELAYLOG_APP_FACTORY": "relaylog.server:no_such_factory"}
    with LambdaEmulator() as emulator, LambdaRuntime(emulator, tmp_path, standin.url, **factory) as runtime:
        assert runtime.process is not None
        assert runtime.process.wait(15) == 1
    assert emulator.init_errors[-1]["type"] == "Runtime.InitError"
    assert "no_such_factory" in emulator.init_errors[-1]["errorMessage"]


class _Context:
    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def test_the_buffered_handler_answers_whole_responses_when_the_wrapper_is_not_set(
    standin: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relaylog.providers.registry import PROVIDERS
    from relaylog.runtime import buffered

    monkeypatch.setenv("RELAYLOG_APP_FACTORY", "relaylog.server:create_app")
    monkeypatch.setenv("RELAYLOG_DATA_DIR", str(tmp_path))
    for name in PROVIDERS:
        monkeypatch.setenv(f"RELAYLOG_UPSTREAM_{name.upper()}", standin.url)
    monkeypatch.setattr(buffered, "_host", None)
    standin.fault = None
    try:
        streamed = buffered.handler(_event("function_url_stream_chat.json"), _Context())
        assert streamed["statusCode"] == 200 and streamed["isBase64Encoded"] is False
        assert streamed["body"].endswith("data: [DONE]\n\n") and streamed["body"].count("data: ") > 5
        plain = buffered.handler(_event("function_url_base64.json"), _Context())
        assert plain["statusCode"] == 200 and json.loads(plain["body"])["object"] == "chat.completion"
        cut = _event("function_url_stream_chat.json")
        cut["headers"] = {**cut["headers"], "x-standin-fault": "drop-after=2"}
        failed = buffered.handler(cut, _Context())
        assert failed["statusCode"] == 502 and json.loads(failed["body"])["error"]["type"] == "upstream_disconnect"
        assert buffered.handler({"not": "an event"}, _Context())["statusCode"] == 400
        # Flushed before returning: three records (the bad event never reached the relay).
        from tests.support.proxy import read_records

        assert len(read_records(tmp_path)) == 3
    finally:
        host = buffered._host
        if host is not None:
            host.loop.run_until_complete(host.app.shutdown())
            host.app.sink.close()
            host.loop.close()
