"""The relay against the provider stand-in: pass-through, headers, routing and every failure path."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web
from relaylog.config import LAMBDA_MAX_REQUEST_BYTES, Settings
from relaylog.standin import StandIn

from tests.support.proxy import RunningProxy
from tests.support.upstream import AiohttpUpstream

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
STREAM = {**CHAT, "stream": True}


def _post(url: str, body: object, **headers: str) -> httpx.Response:
    return httpx.post(url, content=orjson.dumps(body), headers={"content-type": "application/json", **headers})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_non_streamed_call_is_relayed_unchanged(proxy: RunningProxy, standin: StandIn) -> None:
    direct = _post(standin.url + "/v1/chat/completions", CHAT, authorization="Bearer sk-test")
    relayed = _post(proxy.url + "/v1/chat/completions", CHAT, authorization="Bearer sk-test")
    assert relayed.status_code == direct.status_code == 200
    assert relayed.content == direct.content
    for name in ("content-type", "x-request-id", "openai-processing-ms"):
        assert relayed.headers.get(name) == direct.headers.get(name)
    record = proxy.record(relayed.headers["helicone-id"])
    usage = direct.json()["usage"]
    assert record["status"] == 200 and record["stream"] is False and record["error_type"] is None
    assert record["provider"] == "openai" and record["endpoint"] == "/v1/chat/completions"
    assert record["model"] == "gpt-4o-mini" and record["response_model"] == direct.json()["model"]
    assert record["input_tokens"] == usage["prompt_tokens"]
    assert record["output_tokens"] == usage["completion_tokens"]
    assert record["usage_source"] == "provider"
    assert record["cost_usd"] is not None and record["cost_usd"] > 0
    assert record["cost_source"].startswith("genai-prices@")
    assert record["request_body"] == orjson.dumps(CHAT).decode()
    assert record["response_body"] == direct.text
    assert record["request_bytes"] == len(orjson.dumps(CHAT)) and record["response_bytes"] == int(
        relayed.headers["content-length"]  # as relayed: gzip-compressed
    )
    assert 0 < record["ttft_ms"] <= record["latency_ms"]
    assert record["upstream_ms"] <= record["latency_ms"]
    assert record["overhead_ms"] == pytest.approx(record["latency_ms"] - record["upstream_ms"], abs=0.01)


def test_helicone_headers_are_read_and_never_forwarded(proxy: RunningProxy, standin: StandIn) -> None:
    request_id = str(uuid.uuid4())
    response = _post(
        proxy.url + "/v1/chat/completions",
        {**CHAT, "user": "body-user"},
        authorization="Bearer sk-secret-provider-key",
        **{
            "Helicone-Request-Id": request_id,
            "Helicone-User-Id": "alice",
            "Helicone-Session-Id": "s-1",
            "Helicone-Session-Path": "/plan/step-1",
            "Helicone-Session-Name": "Trip planner",
            "Helicone-Prompt-Id": "greeting",
            "Helicone-Property-Environment": "staging",
            "Helicone-Property-Team": "search",
            "Helicone-Model-Override": "gpt-4o",
            "OpenAI-Organization": "org-123",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "only for the next hop",
            "TE": "trailers",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic cmVsYXk6bG9n",
        },
    )
    assert response.status_code == 200
    assert response.headers["helicone-id"] == request_id
    received = standin.requests[-1]
    assert not [name for name, _ in received.headers if name.lower().startswith("helicone-")]
    for hop_by_hop in ("te", "keep-alive", "proxy-authorization", "x-hop"):
        assert received.header(hop_by_hop) is None, hop_by_hop
    assert received.header("authorization") == "Bearer sk-secret-provider-key"
    assert received.header("openai-organization") == "org-123"
    assert received.body == orjson.dumps({**CHAT, "user": "body-user"})
    record = proxy.record(request_id)
    assert record["user_id"] == "alice"
    assert (record["session_id"], record["session_path"], record["session_name"]) == (
        "s-1",
        "/plan/step-1",
        "Trip planner",
    )
    assert record["prompt_id"] == "greeting"
    assert record["properties"] == {"environment": "staging", "team": "search"}
    assert record["model"] == "gpt-4o"
    assert "sk-secret-provider-key" not in orjson.dumps(record).decode()


def test_user_falls_back_to_the_body_and_bad_request_ids_are_replaced(proxy: RunningProxy) -> None:
    response = _post(proxy.url + "/v1/chat/completions", {**CHAT, "user": "bob"}, **{"Helicone-Request-Id": "nope"})
    request_id = response.headers["helicone-id"]
    assert request_id != "nope" and uuid.UUID(request_id)
    assert proxy.record(request_id)["user_id"] == "bob"


def test_omit_request_and_response(proxy: RunningProxy) -> None:
    response = _post(
        proxy.url + "/v1/chat/completions",
        CHAT,
        **{"Helicone-Omit-Request": "true", "Helicone-Omit-Response": "true"},
    )
    record = proxy.record(response.headers["helicone-id"])
    assert record["request_body"] is None and record["response_body"] is None
    assert record["input_tokens"] is not None  # usage is still read, only the text is not kept


def test_streamed_call_is_byte_identical_to_direct_without_usage(proxy: RunningProxy, standin: StandIn) -> None:
    direct = _post(standin.url + "/v1/chat/completions", STREAM)
    with_usage = _post(standin.url + "/v1/chat/completions", {**STREAM, "stream_options": {"include_usage": True}})
    standin.clear()
    relayed = _post(proxy.url + "/v1/chat/completions", STREAM)
    assert b'"usage"' not in direct.content
    assert relayed.content == direct.content
    assert relayed.headers["content-type"].startswith("text/event-stream")
    assert relayed.headers["cache-control"] == "no-cache"
    assert relayed.headers["x-accel-buffering"] == "no"
    assert standin.requests[-1].json()["stream_options"] == {"include_usage": True}
    record = proxy.record(relayed.headers["helicone-id"])
    final = orjson.loads(with_usage.content.split(b"data: ")[-2])
    assert record["stream"] is True and record["usage_source"] == "provider_injected"
    assert record["input_tokens"] == final["usage"]["prompt_tokens"]
    assert record["output_tokens"] == final["usage"]["completion_tokens"]
    assert record["response_body"] == direct.text
    assert record["response_bytes"] == len(direct.content)
    # Equal when the whole stream arrived in one read: its first and last bytes went out in one write.
    assert record["ttft_ms"] <= record["latency_ms"]


def test_client_asking_for_usage_gets_it_untouched(proxy: RunningProxy, standin: StandIn) -> None:
    body = {**STREAM, "stream_options": {"include_usage": True}}
    direct = _post(standin.url + "/v1/chat/completions", body)
    relayed = _post(proxy.url + "/v1/chat/completions", body)
    assert relayed.content == direct.content
    assert proxy.record(relayed.headers["helicone-id"])["usage_source"] == "provider"


def test_provider_not_asked_for_usage_records_null_not_zero(proxy: RunningProxy, standin: StandIn) -> None:
    relayed = _post(proxy.url + "/mistral/v1/chat/completions", {**STREAM, "model": "mistral-small-latest"})
    assert relayed.status_code == 200
    assert "stream_options" not in standin.requests[-1].json()
    record = proxy.record(relayed.headers["helicone-id"])
    assert record["provider"] == "mistral"
    assert record["input_tokens"] is None and record["output_tokens"] is None
    assert record["usage_source"] == "absent"
    assert record["cost_usd"] is None and record["cost_source"] == "no_usage"


def test_unknown_model_has_null_cost_and_says_why(proxy: RunningProxy) -> None:
    response = _post(proxy.url + "/v1/chat/completions", {**CHAT, "model": "my-private-finetune-x"})
    record = proxy.record(response.headers["helicone-id"])
    assert record["input_tokens"] is not None
    assert record["cost_usd"] is None and record["cost_source"] == "unknown_model"


def test_provider_rejecting_stream_options_is_asked_again_as_the_client_asked(
    make_proxy: Callable[..., RunningProxy],
) -> None:
    seen: list[dict[str, object]] = []
    events = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen.append(body)
        if "stream_options" in body:
            error = {"error": {"message": "Unrecognized request argument supplied: stream_options"}}
            return web.json_response(error, status=400)
        return web.Response(body=events, content_type="text/event-stream")

    with AiohttpUpstream(chat) as upstream:
        proxy = make_proxy(upstream)
        response = _post(proxy.url + "/groq/openai/v1/chat/completions", {**STREAM, "model": "llama-3.3-70b"})
    assert response.status_code == 200 and response.content == events
    assert ["stream_options" in body for body in seen] == [True, False]
    record = proxy.record(response.headers["helicone-id"])
    assert record["status"] == 200 and record["usage_source"] == "absent"


def test_gzip_responses_pass_compressed_and_are_read(proxy: RunningProxy, standin: StandIn) -> None:
    with httpx.Client(headers={"accept-encoding": "gzip"}) as client:
        relayed = client.post(proxy.url + "/v1/chat/completions", json=CHAT)
    assert relayed.headers["content-encoding"] == "gzip"
    assert orjson.loads(relayed.content)["object"] == "chat.completion"  # httpx decoded it
    record = proxy.record(relayed.headers["helicone-id"])
    assert record["input_tokens"] is not None
    assert orjson.loads(record["response_body"])["object"] == "chat.completion"
    assert record["response_bytes"] == int(relayed.headers["content-length"])


def test_unknown_prefix_is_a_404_listing_prefixes(proxy: RunningProxy, standin: StandIn) -> None:
    response = _post(proxy.url + "/nowhere/v1/chat/completions", CHAT)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "unknown_provider" and "/anthropic" in error["message"]
    assert standin.requests == []
    record = proxy.record(response.headers["helicone-id"])
    assert record["status"] == 404 and record["error_type"] == "unknown_provider"
    assert record["provider"] == "unknown"


def test_target_url_off_the_allow_list_is_refused_without_connecting(proxy: RunningProxy, standin: StandIn) -> None:
    response = _post(proxy.url + "/v1/chat/completions", CHAT, **{"Helicone-Target-Url": standin.url})
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "target_not_allowed"
    assert standin.requests == []
    assert proxy.record(response.headers["helicone-id"])["error_type"] == "target_not_allowed"


def test_target_url_on_the_allow_list_is_used(make_proxy: Callable[..., RunningProxy], standin: StandIn) -> None:
    standin.clear()
    host = standin.url.split("://", 1)[1]
    proxy = make_proxy(f"http://127.0.0.1:{_closed_port()}", target_allowlist=(host,))
    response = _post(proxy.url + "/v1/chat/completions", CHAT, **{"Helicone-Target-Url": standin.url})
    assert response.status_code == 200
    assert standin.requests[-1].route == "/v1/chat/completions"
    record = proxy.record(response.headers["helicone-id"])
    assert record["provider"] == "custom" and record["input_tokens"] is not None


def test_body_over_the_limit_is_a_413(make_proxy: Callable[..., RunningProxy], standin: StandIn) -> None:
    standin.clear()
    proxy = make_proxy(max_request_bytes=1000)
    response = _post(proxy.url + "/v1/chat/completions", {**CHAT, "pad": "x" * 2000})
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "body_too_large"
    assert standin.requests == []
    assert proxy.record(response.headers["helicone-id"])["status"] == 413


def test_relaylog_keys_gate_the_proxy(proxy: RunningProxy, standin: StandIn) -> None:
    secret, info = proxy.keys.create("ci")
    time.sleep(1.1)  # the running server looks at the key file at most once a second
    missing = _post(proxy.url + "/v1/chat/completions", CHAT)
    wrong = _post(proxy.url + "/v1/chat/completions", CHAT, **{"Helicone-Auth": "Bearer rl-wrong"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["error"]["type"] == "unauthorized"
    assert standin.requests == []
    good = _post(proxy.url + "/v1/chat/completions", CHAT, **{"Helicone-Auth": f"Bearer {secret}"})
    assert good.status_code == 200
    record = proxy.record(good.headers["helicone-id"])
    assert record["key_id"] == info.key_id
    assert proxy.record(missing.headers["helicone-id"])["error_type"] == "unauthorized"
    everything = b"".join(p.read_bytes() for p in proxy.data_dir.rglob("*") if p.is_file())
    assert secret.encode() not in everything


def test_keys_that_cannot_be_read_at_start_close_the_proxy_and_the_api(
    tmp_path: Path, make_proxy: Callable[..., RunningProxy], standin: StandIn
) -> None:
    """Fail closed: a damaged keys.json at start is not 'no keys' (which would open both to anyone)."""
    data_dir = tmp_path / "data0"  # the directory make_proxy gives its first proxy
    data_dir.mkdir()
    (data_dir / "keys.json").write_text("{ damaged")
    standin.clear()
    proxy = make_proxy()
    response = _post(proxy.url + "/v1/chat/completions", CHAT)
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "keys_unavailable"
    assert standin.requests == []
    assert proxy.record(response.headers["helicone-id"])["error_type"] == "keys_unavailable"
    api = httpx.get(proxy.url + "/api/v1/requests")
    assert api.status_code == 503 and api.json()["error"]["type"] == "keys_unavailable"


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_provider_errors_are_relayed_unchanged(proxy: RunningProxy, standin: StandIn, status: int) -> None:
    fault = {"x-standin-fault": f"status={status};retry-after=1"}
    direct = _post(standin.url + "/v1/chat/completions", CHAT, **fault)
    relayed = _post(proxy.url + "/v1/chat/completions", CHAT, **fault)
    assert relayed.status_code == direct.status_code == status
    assert relayed.content == direct.content
    assert relayed.headers.get("retry-after") == "1"
    record = proxy.record(relayed.headers["helicone-id"])
    assert record["status"] == status and record["error_type"] == "upstream_error"
    assert record["response_body"] == direct.text
    assert record["usage_source"] == "absent" and record["cost_source"] == "no_usage"


def test_provider_down_is_a_502(make_proxy: Callable[..., RunningProxy]) -> None:
    proxy = make_proxy(f"http://127.0.0.1:{_closed_port()}")
    response = _post(proxy.url + "/v1/chat/completions", CHAT, authorization="Bearer sk-never-logged")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_unreachable" and "sk-never-logged" not in error["message"]
    record = proxy.record(response.headers["helicone-id"])
    assert record["status"] == 502 and record["error_type"] == "upstream_unreachable"


def test_provider_resetting_the_connection_is_a_502(proxy: RunningProxy) -> None:
    response = _post(proxy.url + "/v1/chat/completions", CHAT, **{"x-standin-fault": "reset"})
    assert response.status_code == 502
    assert proxy.record(response.headers["helicone-id"])["error_type"] == "upstream_unreachable"


def test_provider_too_slow_is_a_504(make_proxy: Callable[..., RunningProxy]) -> None:
    proxy = make_proxy(read_timeout_s=0.3)
    response = _post(proxy.url + "/v1/chat/completions", CHAT, **{"x-standin-fault": "delay-ms=3000"})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"
    record = proxy.record(response.headers["helicone-id"])
    assert record["status"] == 504 and record["error_type"] == "upstream_timeout"
    assert record["latency_ms"] < 2000


def _read_stream(url: str, body: object, headers: dict[str, str]) -> tuple[int, bytes, str, BaseException | None]:
    received = b""
    with httpx.stream("POST", url, json=body, headers=headers) as response:
        try:
            for chunk in response.iter_raw():
                received += chunk
        except httpx.HTTPError as error:
            return response.status_code, received, response.headers["helicone-id"], error
        return response.status_code, received, response.headers["helicone-id"], None


def test_provider_dropping_mid_stream_cuts_the_client_stream(proxy: RunningProxy) -> None:
    status, received, request_id, error = _read_stream(
        proxy.url + "/v1/chat/completions", STREAM, {"x-standin-fault": "drop-after=3"}
    )
    assert status == 200 and error is not None  # the client sees the cut, as it would directly
    assert received.count(b"data: ") == 3 and b"[DONE]" not in received
    record = proxy.record(request_id)
    assert record["status"] == 200 and record["error_type"] == "upstream_disconnect"
    assert record["usage_source"] == "absent" and record["input_tokens"] is None
    assert record["response_body"] == received.decode()


def _read_raw(url: str, body: object, headers: dict[str, str]) -> tuple[int, httpx.Headers, bytes, type | None]:
    """(status, headers, the raw body bytes received, the exception that ended the read)."""
    received = b""
    with httpx.stream("POST", url, json=body, headers={"accept-encoding": "gzip", **headers}) as response:
        try:
            for chunk in response.iter_raw():
                received += chunk
        except httpx.HTTPError as error:
            return response.status_code, response.headers, received, type(error)
        return response.status_code, response.headers, received, None


def test_provider_cutting_a_non_streamed_answer_cuts_the_client_the_same_way(
    proxy: RunningProxy, standin: StandIn
) -> None:
    """200 with a content-length, then the connection closes after 40 bytes: the client gets the
    provider's status, headers and those bytes, and the same broken body it would get directly."""
    fault = {"x-standin-fault": "drop-after=40"}
    status, headers, received, error = _read_raw(standin.url + "/v1/chat/completions", CHAT, fault)
    r_status, r_headers, r_received, r_error = _read_raw(proxy.url + "/v1/chat/completions", CHAT, fault)
    assert (r_status, r_received, r_error) == (status, received, error) == (200, received, httpx.RemoteProtocolError)
    assert len(received) == 40
    for name in ("content-length", "content-encoding", "content-type", "x-request-id"):
        assert r_headers[name] == headers[name], name
    record = proxy.record(r_headers["helicone-id"])
    assert (record["status"], record["error_type"], record["response_bytes"]) == (200, "upstream_disconnect", 40)
    assert record["usage_source"] == "absent"


def test_provider_going_silent_mid_answer_is_cut_after_the_read_timeout(
    make_proxy: Callable[..., RunningProxy],
) -> None:
    proxy = make_proxy(read_timeout_s=0.3)
    status, headers, received, error = _read_raw(
        proxy.url + "/v1/chat/completions", CHAT, {"x-standin-fault": "stall-after=40"}
    )
    assert (status, len(received), error) == (200, 40, httpx.RemoteProtocolError)
    record = proxy.record(headers["helicone-id"])
    assert (record["status"], record["error_type"], record["response_bytes"]) == (200, "upstream_timeout", 40)


def test_provider_stalling_mid_stream_times_out(make_proxy: Callable[..., RunningProxy]) -> None:
    proxy = make_proxy(read_timeout_s=0.3)
    status, received, request_id, error = _read_stream(
        proxy.url + "/anthropic/v1/messages",
        {"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True, "messages": CHAT["messages"]},
        {"x-standin-fault": "stall-after=2", "x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"},
    )
    assert status == 200 and error is not None
    record = proxy.record(request_id)
    assert record["error_type"] == "upstream_timeout" and record["provider"] == "anthropic"
    # message_start carried the input tokens: usage seen so far is kept.
    assert record["input_tokens"] is not None


def test_client_going_away_mid_stream_stops_the_relay(proxy: RunningProxy, standin: StandIn) -> None:
    body = {**STREAM, "model": "standin-long"}
    with httpx.stream(
        "POST", proxy.url + "/v1/chat/completions", json=body, headers={"x-standin-fault": "chunk-delay-ms=20"}
    ) as response:
        request_id = response.headers["helicone-id"]
        for _ in response.iter_raw():
            break
    record = proxy.record(request_id)
    assert record["status"] == 200 and record["error_type"] == "client_disconnect"
    assert record["upstream_ms"] is not None and record["upstream_ms"] <= record["latency_ms"]
    # About 500 events 20 ms apart would take 10 s: the relay stopped long before.
    assert record["latency_ms"] < 3000
    assert 0 < record["response_bytes"] < 20_000


def test_client_going_away_before_the_answer_records_status_zero(proxy: RunningProxy) -> None:
    with pytest.raises(httpx.ReadTimeout):
        _post_with_timeout(proxy.url + "/v1/chat/completions", CHAT, 0.3, {"x-standin-fault": "delay-ms=1500"})
    records = proxy.wait_records(1)
    assert len(records) == 1
    assert records[0]["status"] == 0 and records[0]["error_type"] == "client_disconnect"
    assert records[0]["upstream_ms"] is not None and records[0]["ttft_ms"] is None
    assert records[0]["latency_ms"] < 1400


def _post_with_timeout(url: str, body: object, timeout: float, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, json=body, timeout=timeout, headers=headers)


def test_non_json_body_is_relayed_and_noted(proxy: RunningProxy, standin: StandIn) -> None:
    response = httpx.post(
        proxy.url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    direct = httpx.post(
        standin.url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == direct.status_code
    assert response.content == direct.content
    assert standin.requests[-2].body == b"{not json"
    record = proxy.record(response.headers["helicone-id"])
    assert record["parse_error"] is not None and record["parse_error"].startswith("request:")
    assert record["request_body"] == "{not json"


def test_binary_response_passes_through_and_goes_to_a_body_file(proxy: RunningProxy, standin: StandIn) -> None:
    body = {"model": "tts-1", "input": "Hello", "voice": "alloy"}
    direct = _post(standin.url + "/v1/audio/speech", body)
    relayed = _post(proxy.url + "/v1/audio/speech", body)
    assert relayed.headers["content-type"] == direct.headers["content-type"] == "audio/mpeg"
    assert relayed.content == direct.content
    record = proxy.record(relayed.headers["helicone-id"])
    assert record["response_body"] is None
    assert (proxy.data_dir / record["response_body_ref"]).read_bytes() == direct.content


def test_multipart_upload_passes_through_byte_for_byte(proxy: RunningProxy, standin: StandIn) -> None:
    audio = bytes(range(256)) * 400
    files = {"file": ("clip.mp3", audio, "audio/mpeg")}
    response = httpx.post(proxy.url + "/v1/audio/transcriptions", files=files, data={"model": "whisper-1"})
    assert response.status_code == 200
    sent = standin.requests[-1]
    content_type = sent.header("content-type")
    assert audio in sent.body and content_type is not None and content_type.startswith("multipart/form-data; boundary=")
    assert str(len(audio)) in response.json()["text"]
    record = proxy.record(response.headers["helicone-id"])
    assert record["request_body"] is None
    assert (proxy.data_dir / record["request_body_ref"]).read_bytes() == sent.body


def test_large_text_bodies_go_to_body_files(make_proxy: Callable[..., RunningProxy]) -> None:
    proxy = make_proxy(body_inline_max=512)
    body = {**CHAT, "messages": [{"role": "user", "content": "word " * 500}]}
    response = _post(proxy.url + "/v1/chat/completions", body)
    record = proxy.record(response.headers["helicone-id"])
    assert record["request_body"] is None
    assert (proxy.data_dir / record["request_body_ref"]).read_bytes() == orjson.dumps(body)


def _big_answer(streamed: bool) -> tuple[bytes, str]:
    """An answer of about 7 MB, larger than the largest request Lambda takes, usage at its end."""
    words = "word " * 200
    usage = {"prompt_tokens": 5, "completion_tokens": 1_500_000, "total_tokens": 1_500_005}
    if not streamed:
        message = {"role": "assistant", "content": words * 7_000}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        answer = {
            "id": "chatcmpl-big",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [choice],
            "usage": usage,
        }
        return orjson.dumps(answer), "application/json"
    head = {"id": "chatcmpl-big", "object": "chat.completion.chunk", "model": "gpt-4o-mini"}
    delta = orjson.dumps({**head, "choices": [{"index": 0, "delta": {"content": words}}]})
    end = orjson.dumps({**head, "choices": [], "usage": usage})
    events = [b"data: " + delta + b"\n\n"] * 7_000 + [b"data: " + end + b"\n\n", b"data: [DONE]\n\n"]
    return b"".join(events), "text/event-stream"


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
def test_an_answer_larger_than_the_lambda_request_limit_is_stored_whole(
    make_proxy: Callable[..., RunningProxy], monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """On Lambda a request may be at most what a Function URL carries (6.29 MB); an answer may be
    larger, and its record keeps it whole (RELAYLOG_MAX_CAPTURE_BYTES), not cut at the request limit."""
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    on_lambda = Settings.from_env()
    assert on_lambda.max_request_bytes == LAMBDA_MAX_REQUEST_BYTES
    answer, content_type = _big_answer(streamed)
    assert len(answer) > on_lambda.max_request_bytes

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        return web.Response(body=answer, content_type=content_type)

    with AiohttpUpstream(chat) as upstream:
        proxy = make_proxy(
            upstream, max_request_bytes=on_lambda.max_request_bytes, max_capture_bytes=on_lambda.max_capture_bytes
        )
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}} if streamed else CHAT
        response = _post(proxy.url + "/v1/chat/completions", body)
    assert response.status_code == 200 and response.content == answer
    record = proxy.record(response.headers["helicone-id"])
    assert (record["response_bytes"], record["parse_error"], record["error_type"]) == (len(answer), None, None)
    assert (proxy.data_dir / record["response_body_ref"]).read_bytes() == answer
    assert (record["output_tokens"], record["usage_source"]) == (1_500_000, "provider")


def test_get_requests_and_query_strings_pass(proxy: RunningProxy, standin: StandIn) -> None:
    response = httpx.get(proxy.url + "/v1/models?limit=2")
    assert response.status_code == 200
    assert standin.requests[-1].path == "/v1/models?limit=2"
    record = proxy.record(response.headers["helicone-id"])
    assert record["method"] == "GET" and record["parse_error"] is None


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", STREAM),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "Say hello", "stream": True}),
        (
            "/anthropic/v1/messages",
            {"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": True, "messages": CHAT["messages"]},
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]},
        ),
    ],
)
def test_error_inside_a_stream_is_recorded(proxy: RunningProxy, path: str, body: object) -> None:
    headers = {"x-standin-scenario": "stream-error", "anthropic-version": "2023-06-01"}
    status, received, request_id, _ = _read_stream(proxy.url + path, body, headers)
    assert status == 200 and b"error" in received
    record = proxy.record(request_id)
    assert record["status"] == 200 and record["error_type"] == "upstream_stream_error"
    assert record["response_body"] == received.decode()


@pytest.mark.parametrize("usage", ["asked", "added"], ids=["passed-through", "usage-withheld"])
def test_a_client_that_stops_reading_holds_the_provider_back(
    make_proxy: Callable[..., RunningProxy], usage: str
) -> None:
    """Backpressure on a stream: while the client does not read, relaylog stops reading the provider
    (it holds at most its high-water mark and the sockets' buffers), then relays every byte."""
    event_count, content = 1024, "x" * 65000  # 63.5 MiB of events, within the capture limit (64 MiB)
    written: list[int] = [0]

    async def chat(request: web.Request) -> web.StreamResponse:
        asked = (await request.json()).get("stream_options", {}).get("include_usage", False)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": content}}]}
        event = b"data: " + orjson.dumps({**chunk, "usage": None} if asked else chunk) + b"\n\n"
        for _ in range(event_count):
            await response.write(event)  # returns once the socket took it (aiohttp drains)
            written[0] += len(event)
        if asked:
            usage_event = {
                "id": "c",
                "choices": [],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
            }
            await response.write(b"data: " + orjson.dumps(usage_event) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    body = {**STREAM, "stream_options": {"include_usage": True}} if usage == "asked" else STREAM
    with AiohttpUpstream(chat) as upstream:
        direct = _post(upstream + "/v1/chat/completions", body).content
        written[0] = 0
        proxy = make_proxy(upstream)
        with httpx.stream("POST", proxy.url + "/v1/chat/completions", content=orjson.dumps(body)) as response:
            parts = response.iter_raw()
            first = next(parts)
            time.sleep(1.0)
            held = written[0]
            relayed = first + b"".join(parts)
    print(
        f"\nthe provider wrote {held / 2**20:.1f} of {len(direct) / 2**20:.1f} MiB while the client read nothing for 1 s"
    )
    assert relayed == direct
    assert held < len(direct) / 2  # 8-10 MiB here; all of it when the proxy reads on regardless
    record = proxy.record(response.headers["helicone-id"])
    assert record["status"] == 200 and record["error_type"] is None and record["output_tokens"] == 5
