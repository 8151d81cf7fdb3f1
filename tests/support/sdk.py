"""The same client-library call made directly against the provider stand-in and through relaylog.

One harness for the tests of every client: the `openai` and `anthropic` SDKs (sync and async), and
the pieces LangChain and plain HTTP (Gemini) share: choosing the request id, reading back the
record, and what the record of a successful call must say.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anthropic
import genai_prices
import httpx
import openai
import orjson
import pytest
from relaylog.standin import StandIn

from tests.support.pricing import genai_cost
from tests.support.proxy import RunningProxy

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)
MODES = ("sync", "async")
# One TLS context for every client: building one per client (certifi's bundle) costs ~30 ms.
TLS = ssl.create_default_context()
# Headers relaylog adds to a relayed event stream (everything else must be the provider's, unchanged).
RELAY_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass
class Call:
    """One SDK call: what it returned (streams read into a list) and the HTTP requests it sent."""

    result: Any
    sent: list[httpx.Request]
    headers: httpx.Headers | None = None  # set for `with_raw_response` calls

    @property
    def body(self) -> bytes:
        assert len(self.sent) == 1, f"expected exactly one HTTP request, the SDK sent {len(self.sent)}"
        return self.sent[0].content


@dataclass(frozen=True)
class Sdk:
    """A provider SDK: its clients, the key they send, and their base URL directly and through relaylog."""

    clients: tuple[type[Any], type[Any]]  # (sync, async)
    http_clients: tuple[Callable[..., httpx.Client], Callable[..., httpx.AsyncClient]]  # with the SDK's defaults
    streams: tuple[type[Any], type[Any]]  # what a streamed call returns, read to the end here
    api_key: str
    direct_path: str  # after the stand-in's URL
    relay_path: str  # after relaylog's URL: the provider's prefix

    def call(self, mode: str, base_url: str, fn: Callable[[Any], Any], headers: dict[str, str] | None = None) -> Call:
        """`fn(client)` with a fresh client; an async `fn` may return an awaitable. Raw responses
        (`with_raw_response`) are parsed, keeping their headers."""
        sent: list[httpx.Request] = []
        options: dict[str, Any] = {
            "base_url": base_url,
            "api_key": self.api_key,
            "max_retries": 0,
            "timeout": 10.0,
            "default_headers": headers or {},
        }
        if mode == "sync":
            http = self.http_clients[0](verify=TLS, event_hooks={"request": [sent.append]})
            with self.clients[0](http_client=http, **options) as client:
                result, raw_headers = _unwrap_raw(fn(client))
                if isinstance(result, self.streams[0]):
                    result = list(result)
                return Call(result, sent, raw_headers)

        async def record_request(request: httpx.Request) -> None:
            sent.append(request)

        async def run() -> Call:
            http = self.http_clients[1](verify=TLS, event_hooks={"request": [record_request]})
            async with self.clients[1](http_client=http, **options) as client:
                result = fn(client)
                if inspect.isawaitable(result):
                    result = await result
                result, raw_headers = _unwrap_raw(result)
                if inspect.isawaitable(result):
                    result = await result
                if isinstance(result, self.streams[1]):
                    result = [item async for item in result]
                return Call(result, sent, raw_headers)

        return asyncio.run(run())

    def direct(
        self, mode: str, standin: StandIn, fn: Callable[[Any], Any], headers: dict[str, str] | None = None
    ) -> Call:
        return self.call(mode, standin.url + self.direct_path, fn, headers)

    def relayed(
        self, mode: str, proxy: RunningProxy, fn: Callable[[Any], Any], headers: dict[str, str] | None = None
    ) -> tuple[Call, dict[str, Any]]:
        """The call through relaylog, and its record."""
        base_url = proxy.url + self.relay_path
        return recorded(proxy, lambda ids: self.call(mode, base_url, fn, {**(headers or {}), **ids}))

    def both(
        self,
        mode: str,
        standin: StandIn,
        proxy: RunningProxy,
        fn: Callable[[Any], Any],
        headers: dict[str, str] | None = None,
    ) -> tuple[Call, Call, dict[str, Any]]:
        """The same call directly and through relaylog: (direct, relayed, record of the relayed call)."""
        mine = self.direct(mode, standin, fn, headers)
        relayed, record = self.relayed(mode, proxy, fn, headers)
        return mine, relayed, record

    def fail_both(
        self,
        error: type[E],
        mode: str,
        standin: StandIn,
        proxy: RunningProxy,
        fn: Callable[[Any], Any],
        headers: dict[str, str] | None = None,
    ) -> tuple[E, E, dict[str, Any]]:
        """The same call failing directly and through relaylog, each raising `error`:
        (direct exception, relayed exception, record of the relayed call)."""
        with pytest.raises(error) as direct_error:
            self.direct(mode, standin, fn, headers)

        def send(ids: dict[str, str]) -> E:
            with pytest.raises(error) as relayed_error:
                self.call(mode, proxy.url + self.relay_path, fn, {**(headers or {}), **ids})
            return relayed_error.value

        relayed, record = recorded(proxy, send)
        return direct_error.value, relayed, record


def _unwrap_raw(result: Any) -> tuple[Any, httpx.Headers | None]:
    if hasattr(result, "http_response") and hasattr(result, "parse"):
        return result.parse(), result.headers
    return result, None


OPENAI = Sdk(
    clients=(openai.OpenAI, openai.AsyncOpenAI),
    http_clients=(openai.DefaultHttpxClient, openai.DefaultAsyncHttpxClient),
    streams=(openai.Stream, openai.AsyncStream),
    api_key="sk-test-provider-key",
    direct_path="/v1",
    relay_path="/v1",
)
ANTHROPIC = Sdk(
    clients=(anthropic.Anthropic, anthropic.AsyncAnthropic),
    http_clients=(anthropic.DefaultHttpxClient, anthropic.DefaultAsyncHttpxClient),
    streams=(anthropic.Stream, anthropic.AsyncStream),
    api_key="sk-ant-test-provider-key",
    direct_path="",
    relay_path="/anthropic",
)


def recorded(proxy: RunningProxy, send: Callable[[dict[str, str]], T]) -> tuple[T, dict[str, Any]]:
    """`send(headers)` through relaylog, `headers` naming the record (Helicone-Request-Id):
    (what `send` returned, that record once written)."""
    request_id = str(uuid.uuid4())
    result = send({"Helicone-Request-Id": request_id})
    return result, proxy.record(request_id)


def headers_without(headers: httpx.Headers, *names: str) -> list[tuple[str, str]]:
    """Every header in order, less `names`."""
    drop = {name.lower() for name in names}
    return [(name, value) for name, value in headers.multi_items() if name.lower() not in drop]


def chat_usage(usage: Any) -> dict[str, int | None]:
    """An OpenAI chat/completions `usage` in record terms (OpenAI counts cached tokens inside prompt_tokens)."""
    assert usage is not None
    prompt, completion = usage.prompt_tokens_details, usage.completion_tokens_details
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_tokens": prompt.cached_tokens,
        "cache_write_tokens": None,
        "reasoning_tokens": completion.reasoning_tokens,
        "audio_input_tokens": prompt.audio_tokens,
        "audio_output_tokens": completion.audio_tokens,
    }


def check_record(
    record: dict[str, Any],
    *,
    provider: str,
    api_key: str,
    sent: bytes,
    endpoint: str,
    model: str,
    response_model: str,
    stream: bool,
    usage: dict[str, int | None],
    usage_source: str = "provider",
    price_provider: str | None = None,
) -> None:
    """What the record of a successful call must say: the request as sent, the usage the provider
    reported (in record terms), genai-prices' own price for it, and never the provider key."""
    expected = {
        "schema_version": 1,
        "provider": provider,
        "endpoint": endpoint,
        "method": "POST",
        "model": model,
        "response_model": response_model,
        "status": 200,
        "stream": stream,
        **usage,
        "usage_source": usage_source,
        "cost_source": f"genai-prices@{genai_prices.__version__}",
        "error_type": None,
        "parse_error": None,
        "key_id": None,
        "request_body": sent.decode(),
        "request_body_ref": None,
        "request_bytes": len(sent),
    }
    assert {name: record[name] for name in expected} == expected
    assert record["cost_usd"] is not None and record["cost_usd"] > 0
    price = genai_cost(usage, response_model, price_provider or provider)
    assert record["cost_usd"] == pytest.approx(price, rel=1e-9, abs=1e-12)
    assert record["response_body"], "the response must be kept in the record"
    assert record["response_bytes"] > 0
    assert 0 < record["ttft_ms"] <= record["latency_ms"]
    assert record["upstream_ms"] <= record["latency_ms"]
    assert api_key not in orjson.dumps(record).decode()
