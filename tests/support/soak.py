"""The soak: many mixed calls through relaylog while the provider stand-in fails at random and
clients leave at random, then every record checked against what really happened.

Shared by `tests/test_soak.py` (short) and `bench/soak.py` (long). The parts:

- `plan_calls`: seeded random calls (OpenAI chat, Anthropic messages, Gemini generateContent;
  streamed or not; tools; large base64 images) each with one fault kind (`KINDS`).
- `truth`: what the record must say, derived only from what the call asked the stand-in to do
  (the stand-in's replies are pure functions of the request, so its `App` run in this process
  gives the exact events it sent) and what the client saw, never from relaylog's own record.
- `run_calls`: the clients, on one asyncio loop; the ones that leave use raw sockets so the moment
  they leave is exact.
- `check`: one record per call, no duplicates, status / error_type / usage / body placement true,
  and (`check_rollups`, on AWS) the DynamoDB rollups equal to the sums over the records.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from moto import mock_aws
from relaylog.aws import layout
from relaylog.aws.proxy import create_app
from relaylog.providers.registry import PROVIDERS
from relaylog.standin.app import App
from relaylog.standin.faults import parse_fault
from relaylog.standin.wire import Reply, Request

from tests.support.aggregator import invoke, load_aggregator
from tests.support.aws import Stack, create_stack, fake_credentials
from tests.support.lambda_emulator import LambdaEmulator
from tests.support.lambda_runtime import InProcessRuntime
from tests.support.proxy import RunningProxy, read_records

# relaylog's read timeout for the soak: a stall longer than this is upstream_timeout.
READ_TIMEOUT_S = 1.0
# relaylog's inline body limit (its default): larger request bodies go to a body file / S3 object.
BODY_INLINE_MAX = 256 * 1024
# A client that leaves "before the answer" leaves this long after sending; the stand-in holds the
# answer back EARLY_DELAY_MS, which is well past that and still inside the read timeout.
EARLY_LEAVE_S = 0.05
EARLY_DELAY_MS = 600
# A client that leaves mid-stream reads this many body bytes of a paced, long stream first.
MID_LEAVE_BYTES = 200
MID_CHUNK_DELAY_MS = 5  # at least; longer for streams of few events
# A provider that stays silent before answering, longer than the read timeout.
SLOW_DELAY_MS = 2500

ANY = object()  # an expectation that accepts any value (said why where it is used)

# Fault kinds and their weights in the mix.
KINDS: dict[str, int] = {
    "ok": 40,  # no fault (some with small harmless delays)
    "status": 14,  # the provider answers 4xx/5xx
    "reset": 5,  # TCP RST before a single byte
    "drop": 8,  # FIN after N events (streams) or N bytes (non-streamed)
    "stall": 5,  # silence after N events / bytes, longer than the read timeout
    "slow": 3,  # silence before the status line, longer than the read timeout
    "truncate": 6,  # a stream ended cleanly at the HTTP level without its closing events
    "client_early": 5,  # the client leaves before the answer begins
    "client_mid": 5,  # the client leaves in the middle of a stream
}

STATUSES = {"openai": (400, 429, 500, 502, 503), "anthropic": (400, 429, 500, 529), "gemini": (400, 429, 500, 503)}
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "gemini": "gemini-2.0-flash"}


@dataclass(slots=True)
class Call:
    """One planned call: what the client sends, and which fault it asked the stand-in for."""

    request_id: str
    provider: str
    kind: str
    stream: bool
    tools: bool
    image_bytes: int  # size of the inline image in the request (0: none)
    path: str
    headers: dict[str, str]
    body: bytes
    fault: str | None  # the x-standin-fault value
    # What the stand-in sends relaylog, computed in this process: the reply before any cut, and
    # how many events (streams) or bytes (non-streamed) of it go out before the cut.
    reply: Reply | None = None
    cut: int | None = None
    injected: bool = False  # relaylog asks this OpenAI stream for usage (the client did not)
    # The stand-in's reply to the client's own request: what the client receives directly.
    direct: Reply | None = None
    usage_at: int | None = None  # where relaylog's injected usage chunk sits in the stream

    @property
    def label(self) -> str:
        """The fault kind and whether the answer streams: how mismatches are grouped."""
        return f"{self.kind}/{'stream' if self.stream else 'plain'}"


@dataclass(slots=True)
class Seen:
    """What the client saw."""

    status: int | None = None  # None: no response head arrived
    complete: bool = False  # the body ended properly
    left: bool = False  # the client itself went away
    body: bytes = b""
    helicone_id: str | None = None
    error: str | None = None


@dataclass(slots=True)
class Expect:
    status: Any
    error_type: Any
    input_tokens: Any = None
    output_tokens: Any = None


@dataclass(slots=True)
class Mismatch:
    request_id: str
    kind: str
    what: str
    expected: Any
    got: Any

    def __str__(self) -> str:
        return f"{self.request_id} [{self.kind}] {self.what}: expected {self.expected!r}, got {self.got!r}"


@dataclass(slots=True)
class Report:
    """The outcome of one soak run (one target: local or AWS)."""

    target: str
    calls: int = 0
    records: int = 0
    missing: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # records of no planned call
    mismatches: list[Mismatch] = field(default_factory=list)
    rollup_mismatches: list[str] = field(default_factory=list)
    rollups_checked: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def merge(self, other: Report) -> None:
        self.calls += other.calls
        self.records += other.records
        self.missing += other.missing
        self.duplicates += other.duplicates
        self.unknown += other.unknown
        self.mismatches += other.mismatches
        self.rollup_mismatches += other.rollup_mismatches
        self.rollups_checked += other.rollups_checked
        self.by_kind.update(other.by_kind)

    def ok(self, known: Iterable[tuple[str, str, str]] = ()) -> bool:
        return not (self.missing or self.duplicates or self.unknown or self.rollup_mismatches) and not [
            m for m in self.mismatches if not is_known(self.target, m, known)
        ]


def is_known(target: str, mismatch: Mismatch, known: Iterable[tuple[str, str, str]]) -> bool:
    """Whether a (target, kind, what) entry names this mismatch: target "*" is any target, and a
    kind without "/" covers both its streamed and plain calls."""
    return any(
        t in ("*", target) and (k == mismatch.kind or mismatch.kind.startswith(k + "/")) and w == mismatch.what
        for t, k, w in known
    )


# -- planning -------------------------------------------------------------------------------------


def plan_calls(seed: int, count: int, *, image_share: float = 0.04, kinds: dict[str, int] | None = None) -> list[Call]:
    """`count` calls, the same ones for the same seed (request ids included)."""
    rng = random.Random(seed)
    weights = kinds or KINDS
    names, odds = list(weights), list(weights.values())
    truth_app = App(gzip=False)  # a stand-in of our own: its replies, without any socket
    calls = []
    for n in range(count):
        provider = rng.choice(("openai", "openai", "anthropic", "gemini"))
        kind = rng.choices(names, odds)[0]
        stream = kind in ("truncate", "client_mid") or rng.random() < 0.5
        tools = kind != "client_mid" and rng.random() < 0.3
        image = rng.randrange(200_000, 600_000) if rng.random() < image_share else 0
        call = _build(rng, n, provider, kind, stream, tools, image)
        _settle_fault(rng, call, truth_app)
        calls.append(call)
    return calls


def _build(rng: random.Random, n: int, provider: str, kind: str, stream: bool, tools: bool, image: int) -> Call:
    request_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    text = f"soak call {n}: " + " ".join(
        rng.choice(("alpha", "beta", "gamma", "delta")) for _ in range(rng.randrange(1, 40))
    )
    picture = base64.b64encode(rng.randbytes(image * 3 // 4)).decode() if image else ""
    model = MODELS[provider]
    headers = {"content-type": "application/json", "helicone-request-id": request_id,
               "helicone-property-soak": kind, "helicone-user-id": f"user-{n % 7}"}  # fmt: skip
    body: dict[str, Any]
    if provider == "openai":
        content: Any = text
        if picture:
            content = [{"type": "text", "text": text},
                       {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{picture}"}}]  # fmt: skip
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        if tools:
            body["tools"] = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                              "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                             "required": ["city"]}}}]  # fmt: skip
        if stream:
            body["stream"] = True
            if rng.random() < 0.3:  # the client asks for usage itself: relaylog adds nothing
                body["stream_options"] = {"include_usage": True}
        path = "/v1/chat/completions"
        headers["authorization"] = "Bearer sk-soak"
    elif provider == "anthropic":
        content = text
        if picture:
            content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": picture}},
                       {"type": "text", "text": text}]  # fmt: skip
        body = {"model": model, "max_tokens": 1024, "messages": [{"role": "user", "content": content}]}
        if tools:
            body["tools"] = [{"name": "get_weather", "description": "Weather", "input_schema": {
                "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]  # fmt: skip
        if stream:
            body["stream"] = True
        path = "/anthropic/v1/messages"
        headers |= {"x-api-key": "sk-ant-soak", "anthropic-version": "2023-06-01"}
    else:
        parts: list[dict[str, Any]] = [{"text": text}]
        if picture:
            parts.append({"inlineData": {"mimeType": "image/png", "data": picture}})
        body = {"contents": [{"role": "user", "parts": parts}]}
        if tools:
            body["tools"] = [{"functionDeclarations": [{"name": "get_weather", "description": "Weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}]  # fmt: skip
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        path = f"/gemini/v1beta/models/{model}:{method}"
        headers["x-goog-api-key"] = "soak-gemini-key"
    if kind == "client_mid":
        headers["x-standin-scenario"] = "long"  # ~500 events, so the client leaves mid-way
    raw = orjson.dumps(body)
    injected = provider == "openai" and stream and "stream_options" not in body
    return Call(request_id, provider, kind, stream, tools, image, path, headers, raw, None, injected=injected)


def _stand_in_reply(app: App, call: Call, body: bytes, fault: str | None = None) -> Reply:
    headers = [(k, v) for k, v in call.headers.items() if k != "x-standin-fault"]
    if fault:
        headers.append(("x-standin-fault", fault))
    reply, _ = app.handle(Request("POST", _upstream_path(call.path), headers, body))
    return reply


def _upstream_path(path: str) -> str:
    return path.removeprefix("/anthropic").removeprefix("/gemini")


def _settle_fault(rng: random.Random, call: Call, app: App) -> None:
    """Pick the fault's parameters and compute what the stand-in will send relaylog."""
    call.direct = _stand_in_reply(app, call, call.body)
    upstream_body = call.body
    if call.injected:  # what relaylog sends instead: the same request asking for stream usage
        upstream_body = orjson.dumps({**orjson.loads(call.body), "stream_options": {"include_usage": True}})
    reply = _stand_in_reply(app, call, upstream_body)
    if call.injected and reply.events is not None:
        call.usage_at = next(i for i, e in enumerate(reply.events) if _usage_chunk(e))
    size = len(reply.events) if reply.events is not None else len(reply.body)
    kind = call.kind
    if kind == "ok":
        call.fault = rng.choice((None, None, None, "delay-ms=20", "chunk-delay-ms=1"))
    elif kind == "status":
        status = rng.choice(STATUSES[call.provider])
        call.fault = f"status={status}" + (";retry-after=1" if status == 429 else "")
        reply = _stand_in_reply(app, call, upstream_body, call.fault)
    elif kind == "reset":
        call.fault = "reset"
    elif kind in ("drop", "stall"):
        # Streams: any number of whole events, all of them included (the body still never ends).
        # Non-streamed: fewer bytes than the body has (it is gzipped on the wire, so stay short).
        call.cut = rng.randrange(0, size + 1) if call.stream else rng.randrange(0, min(size, 60))
        call.fault = f"{'drop-after' if kind == 'drop' else 'stall-after'}={call.cut}"
    elif kind == "slow":
        call.fault = f"delay-ms={SLOW_DELAY_MS}"
    elif kind == "truncate":
        call.fault = "truncate" if rng.random() < 0.6 else f"truncate={rng.randrange(0, size + 1)}"
        reply = _stand_in_reply(app, call, upstream_body, call.fault)
    elif kind == "client_early":
        call.fault = f"delay-ms={EARLY_DELAY_MS}"
    elif kind == "client_mid":
        # Paced so the stream lasts over a second whatever its length (Gemini's has 3 events), each
        # pause inside the read timeout: the client is sure to leave while it is still going.
        pause = min(600, max(MID_CHUNK_DELAY_MS, 1500 // max(size, 1)))
        call.fault = f"chunk-delay-ms={pause}"
    call.reply = reply
    if call.fault:
        parse_fault(call.fault)  # a typo must fail here, not as a stand-in 400 in the middle of a run
        call.headers["x-standin-fault"] = call.fault


def _whole(reply: Reply) -> bytes:
    return b"".join(reply.events) if reply.events is not None else reply.body


# -- truth ----------------------------------------------------------------------------------------


def truth(call: Call, seen: Seen, target: str) -> Expect:
    """What the record must say, from the fault asked for and what the client saw."""
    kind = call.kind
    if kind == "ok" or kind == "truncate":
        return Expect(200, None, *_usage(call))
    if kind == "status":
        assert call.reply is not None
        return Expect(call.reply.status, "upstream_error")
    if kind == "reset":
        return Expect(502, "upstream_unreachable")
    if kind == "slow":
        return Expect(504, "upstream_timeout")
    if kind in ("drop", "stall"):
        # The answer began: its status stands (the client gets it and the bytes before the cut,
        # then its connection is cut too), and usage is what the events carried. A stream cut
        # after its last event, the terminal one, was complete.
        assert call.reply is not None
        ended = call.stream and call.reply.events is not None and call.cut == len(call.reply.events)
        failure = None if ended else "upstream_disconnect" if kind == "drop" else "upstream_timeout"
        return Expect(200, failure, *_usage(call))
    if kind in ("client_early", "client_mid") and target == "aws":
        # AWS documents that a Function URL does not interrupt a streamed response when its client
        # leaves (configuration-response-streaming): relaylog cannot know, reads the provider to
        # the end, and records the whole call, which the user pays for.
        return Expect(200, None, *_usage(call))
    if kind == "client_early":
        return Expect(0, "client_disconnect")
    if kind == "client_mid":
        # The answer had begun (the client read part of it). How far relaylog read before it saw
        # the client leave depends on timing, so the tokens are not checked.
        return Expect(200, "client_disconnect", ANY, ANY)
    raise ValueError(kind)


def _usage(call: Call) -> tuple[int | None, int | None]:
    """Input and output tokens as the events the stand-in sent (up to any cut) report them: the
    last report of each wins, as every provider's counts are cumulative."""
    reply = call.reply
    assert reply is not None
    if reply.events is None:
        if call.cut is not None:
            return None, None
        try:
            return _usage_of(call.provider, [orjson.loads(reply.body)])
        except orjson.JSONDecodeError:
            return None, None
    events = reply.events if call.cut is None else reply.events[: call.cut]
    return _usage_of(call.provider, [d for e in events for d in _sse_data(e)])


def _sse_data(event: bytes) -> Iterable[Any]:
    for line in event.splitlines():
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if data and data != b"[DONE]":
                yield orjson.loads(data)


def _usage_of(provider: str, objects: Sequence[Any]) -> tuple[int | None, int | None]:
    tokens_in: int | None = None
    tokens_out: int | None = None
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        if provider == "openai" and isinstance(obj.get("usage"), dict):
            tokens_in, tokens_out = obj["usage"]["prompt_tokens"], obj["usage"]["completion_tokens"]
        elif provider == "anthropic":
            usage = obj.get("usage") or (obj.get("message") or {}).get("usage")
            if isinstance(usage, dict):
                parts = [
                    usage.get(k) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
                ]
                if any(p is not None for p in parts):
                    tokens_in = sum(p or 0 for p in parts)
                if usage.get("output_tokens") is not None:
                    tokens_out = usage["output_tokens"]
        elif provider == "gemini" and isinstance(obj.get("usageMetadata"), dict):
            um = obj["usageMetadata"]
            tokens_in = um.get("promptTokenCount", 0)
            tokens_out = um.get("candidatesTokenCount", 0) + um.get("thoughtsTokenCount", 0)
    return tokens_in, tokens_out


def client_problems(call: Call, seen: Seen, target: str) -> list[tuple[str, Any, Any]]:
    """Where what the client saw disagrees with the fault it asked for: (what, expected, got)."""
    kind = call.kind
    out: list[tuple[str, Any, Any]] = []
    if kind == "client_early":
        if seen.status is not None:
            out.append(("client saw an answer before leaving", None, seen.status))
        return out
    expected = truth(call, seen, target)
    if seen.status != expected.status:
        out.append(("client status", expected.status, seen.status))
    elif seen.helicone_id != call.request_id:
        out.append(("client helicone-id", call.request_id, seen.helicone_id))
    cut = kind in ("drop", "stall")
    if kind == "client_mid" or cut:
        if seen.complete:
            out.append(("client body complete", False, True))
    elif not seen.complete:
        out.append(("client body complete", True, f"False ({seen.error})"))
    elif kind in ("ok", "truncate") and seen.body != _client_body(call):
        out.append(("client body == direct body", True, f"{len(seen.body)} bytes differ"))
    return out


def _client_body(call: Call) -> bytes:
    """What the client should receive: the stand-in's direct answer, cut as the fault cut it."""
    assert call.direct is not None and call.reply is not None
    if call.kind != "truncate":
        return _whole(call.direct)
    assert call.reply.events is not None
    return _direct_part(call, len(call.reply.events))


def _usage_chunk(event: bytes) -> bool:
    return any(isinstance(d, dict) and d.get("choices") == [] and d.get("usage") for d in _sse_data(event))


# -- the clients ----------------------------------------------------------------------------------


async def run_calls(base_url: str, calls: Sequence[Call], concurrency: int, *, seed: int = 0) -> dict[str, Seen]:
    """Every call once, `concurrency` at a time, in a seeded shuffled order."""
    order = list(calls)
    random.Random(seed).shuffle(order)
    seen: dict[str, Seen] = {}
    queue: asyncio.Queue[Call] = asyncio.Queue()
    for call in order:
        queue.put_nowait(call)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base_url, timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker() -> None:
            while not queue.empty():
                call = queue.get_nowait()
                if call.kind in ("client_early", "client_mid"):
                    seen[call.request_id] = await _leaving_client(base_url, call)
                else:
                    seen[call.request_id] = await _client(session, call)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return seen


async def _client(session: aiohttp.ClientSession, call: Call) -> Seen:
    seen = Seen()
    try:
        async with session.post(call.path, data=call.body, headers=call.headers) as response:
            seen.status = response.status
            seen.helicone_id = response.headers.get("helicone-id")
            seen.body = await response.read()
            seen.complete = True
    except (TimeoutError, aiohttp.ClientError) as error:
        seen.error = type(error).__name__
    return seen


async def _leaving_client(base_url: str, call: Call) -> Seen:
    """A raw HTTP/1.1 client that goes away on purpose: right after sending (client_early), or
    after the head and some of a stream's body (client_mid)."""
    where = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    head = [f"POST {call.path} HTTP/1.1", f"host: {where.netloc}", f"content-length: {len(call.body)}"]
    head += [f"{k}: {v}" for k, v in call.headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + call.body)
    seen = Seen(left=True)
    try:
        if call.kind == "client_early":
            try:
                got = await asyncio.wait_for(reader.read(1), EARLY_LEAVE_S)
                if got:
                    seen.status = -1  # something arrived before we left: the plan's timing broke
            except TimeoutError:
                pass
        else:
            data = b""
            while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < MID_LEAVE_BYTES:
                piece = await asyncio.wait_for(reader.read(65536), 30)
                if not piece:
                    seen.complete = data.endswith(b"0\r\n\r\n")
                    break
                data += piece
            status_line, _, rest = data.partition(b"\r\n")
            seen.status = int(status_line.split()[1]) if status_line.startswith(b"HTTP/1.1 ") else None
            for line in rest.partition(b"\r\n\r\n")[0].split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"helicone-id":
                    seen.helicone_id = value.strip().decode()
    finally:
        writer.transport.abort()  # RST: gone, with no goodbye
    return seen


# -- checking -------------------------------------------------------------------------------------


def check(target: str, calls: Sequence[Call], seen: dict[str, Seen], records: Sequence[dict[str, Any]]) -> Report:
    report = Report(target, calls=len(calls), records=len(records))
    by_id: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_id[record["request_id"]].append(record)
    planned = {c.request_id for c in calls}
    report.unknown = sorted(set(by_id) - planned)
    for call in calls:
        report.by_kind[call.kind] += 1
        found = by_id.get(call.request_id, [])
        if not found:
            report.missing.append(call.request_id)
            continue
        if len(found) > 1:
            report.duplicates.append(call.request_id)
        saw = seen.get(call.request_id, Seen(error="never ran"))
        for what, expected, got in client_problems(call, saw, target):
            report.mismatches.append(Mismatch(call.request_id, call.label, what, expected, got))
        for what, expected, got in record_problems(call, saw, found[0], target):
            report.mismatches.append(Mismatch(call.request_id, call.label, what, expected, got))
    return report


def record_problems(call: Call, seen: Seen, record: dict[str, Any], target: str) -> list[tuple[str, Any, Any]]:
    expected = truth(call, seen, target)
    out: list[tuple[str, Any, Any]] = []

    def compare(what: str, want: Any, got: Any) -> None:
        if want is not ANY and want != got:
            out.append((what, want, got))

    compare("status", expected.status, record["status"])
    compare("error_type", expected.error_type, record["error_type"])
    sent = _sent_before_cut(call)
    if sent is not None and record["response_bytes"] != sent:
        # The stand-in sent these bytes before it hung up or went silent; relaylog must have
        # relayed and recorded every one (what it reads from them follows, so it is not checked).
        out.append(("bytes sent before the cut, relayed", sent, record["response_bytes"]))
    else:
        compare("input_tokens", expected.input_tokens, record["input_tokens"])
        compare("output_tokens", expected.output_tokens, record["output_tokens"])
        if expected.input_tokens is not ANY:
            compare("usage_source", _usage_source(call, expected), record["usage_source"])
    compare("provider", call.provider, record["provider"])
    compare("stream", call.stream, record["stream"])
    compare("request_bytes", len(call.body), record["request_bytes"])
    large = len(call.body) > BODY_INLINE_MAX
    compare("request body in a body file", large, record["request_body_ref"] is not None)
    compare("request body inline", not large, record["request_body"] is not None)
    if record["usage_source"] != "absent":
        compare("cost known (usage and model known)", True, record["cost_usd"] is not None)
    return out


def _sent_before_cut(call: Call) -> int | None:
    """Bytes of a cut answer the client should get: what the stand-in sent before the cut, as
    relaylog passes it on (None when not a cut answer)."""
    if call.cut is None or call.reply is None:
        return None
    if call.reply.events is None:
        return call.cut  # the first bytes of the body as sent, compressed or not
    return len(_direct_part(call, call.cut))


def _direct_part(call: Call, kept: int) -> bytes:
    """The client's view of the first `kept` events the stand-in sent relaylog: where relaylog
    asked for usage, it withholds that chunk (and the `usage: null` it adds to every other one),
    so the events after it are the direct stream's from the same place on."""
    assert call.direct is not None and call.direct.events is not None
    if call.usage_at is None or kept <= call.usage_at:
        return b"".join(call.direct.events[:kept])
    return b"".join(call.direct.events[: kept - 1])


def _usage_source(call: Call, expected: Expect) -> str:
    if expected.input_tokens is None:
        return "absent"
    return "provider_injected" if call.injected else "provider"


# -- AWS: rollups against the records -------------------------------------------------------------

# Rollup numbers compared with sums over the records (rollup.NUMBERS minus the latency sums and
# histograms, whose rounding is the aggregator's own business).
ROLLUP_NUMBERS = ("requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                  "reasoning_tokens", "usage_absent", "cost_usd", "cost_unknown", "ttft_count")  # fmt: skip
_PICO = Decimal("1e-12")


def expected_rollups(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(pk, sk) → the numbers, summed here independently of relaylog's aggregator, for the whole
    day and each hour, over all records and by provider, model, user and property."""
    sums: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        numbers = _numbers(r)
        periods = [("d", r["dt"]), ("h", f"{r['dt']}T{r['hour']}")]
        dims = [("all", ""), ("provider", r["provider"]), ("model", r["model"])]
        dims += [("user", r["user_id"])] if r["user_id"] else []
        dims += [("property", f"{k.lower()}={v}") for k, v in (r["properties"] or {}).items()]
        for grain, period in periods:
            for dim, value in dims:
                key = (layout.rollup_pk(grain, period), layout.rollup_sk(dim, value))
                into = sums.setdefault(key, dict.fromkeys(ROLLUP_NUMBERS, 0))
                for name, amount in numbers.items():
                    into[name] += amount
    return sums


def _numbers(r: dict[str, Any]) -> dict[str, Any]:
    status = r["status"]
    usage_absent = r["input_tokens"] is None
    cost = r["cost_usd"]
    return {
        "requests": 1,
        "errors": int(status == 0 or status >= 400 or r["error_type"] is not None),
        **{name: r[name] or 0 for name in ROLLUP_NUMBERS if name.endswith("_tokens")},
        "usage_absent": int(usage_absent),
        # Each record's cost to the picodollar, from the decimal of its float (what JSON carried).
        "cost_usd": Decimal(repr(cost)).quantize(_PICO) if cost is not None else Decimal(0),
        "cost_unknown": int(cost is None and not usage_absent),
        "ttft_count": int(r["ttft_ms"] is not None),
    }


def compare_rollups(
    expected: dict[tuple[str, str], dict[str, Any]], actual: dict[tuple[str, str], dict[str, Any]]
) -> list[str]:
    out = []
    for key in sorted(set(expected) | set(actual)):
        want, got = expected.get(key), actual.get(key)
        if want is None or got is None:
            out.append(f"{key}: {'no rollup item' if got is None else 'an item no record explains'}")
            continue
        for name in ROLLUP_NUMBERS:
            value = got.get(name, 0)  # the aggregator leaves zero additions out
            if Decimal(value) != Decimal(want[name]):
                out.append(f"{key} {name}: records sum to {want[name]}, rollup has {value}")
    return out


def read_objects(objects: Iterable[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """Records from delivered S3 objects (gzip or plain JSON lines)."""
    found = []
    for _key, data in objects:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        found += [orjson.loads(line) for line in data.splitlines() if line.strip()]
    return found


# -- the table ------------------------------------------------------------------------------------


def table(reports: Sequence[Report], known: Iterable[tuple[str, str, str]] = ()) -> str:
    known = list(known)
    rows = [
        ["target", "calls", "records", "missing", "duplicates", "unknown", "mismatches", "known", "rollups", "s", ""]
    ]
    for r in reports:
        unexpected = [m for m in r.mismatches if not is_known(r.target, m, known)]
        rollups = (
            "-" if not r.rollups_checked else f"{r.rollups_checked - len(r.rollup_mismatches)}/{r.rollups_checked}"
        )
        rows.append([r.target, str(r.calls), str(r.records), str(len(r.missing)), str(len(r.duplicates)),
                     str(len(r.unknown)), str(len(unexpected)), str(len(r.mismatches) - len(unexpected)),
                     rollups, f"{r.seconds:.1f}", "PASS" if r.ok(known) else "FAIL"])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]  # fmt: skip
    for r in reports:
        mix = ", ".join(f"{k} {v}" for k, v in sorted(r.by_kind.items()))
        lines.append(f"{r.target}: {mix}")
        grouped = Counter((m.kind, m.what, is_known(r.target, m, known)) for m in r.mismatches)
        for (kind, what, is_k), n in sorted(grouped.items()):
            example = next(m for m in r.mismatches if m.kind == kind and m.what == what)
            label = "known failure" if is_k else "MISMATCH"
            lines.append(f"  {label}: {n} x {example}")
        for name, ids in (("missing", r.missing), ("duplicate", r.duplicates), ("unknown", r.unknown)):
            if ids:
                lines.append(f"  {name}: {len(ids)}, e.g. {ids[:3]}")
        lines += [f"  rollup: {line}" for line in r.rollup_mismatches[:10]]
    return "\n".join(lines)


def elapsed(since: float) -> float:
    return time.perf_counter() - since


# -- AWS under moto -------------------------------------------------------------------------------


class AwsTarget:
    """The deployed shape under moto: a Function URL (the emulator) in front of `runtimes`
    instances of relaylog's runtime loop (concurrent Lambda environments), each with the proxy
    function's own app (Firehose sink, keys in DynamoDB); then the aggregator over what Firehose
    and the spool delivered. Use inside `mock_aws()` with the stack's environment set."""

    def __init__(self, stack: Stack, runtimes: int) -> None:
        self.stack = stack
        self.emulator = LambdaEmulator(timeout_s=120)
        self.count = runtimes
        self.runtimes: list[InProcessRuntime] = []

    def __enter__(self) -> AwsTarget:
        self.emulator.__enter__()
        self.runtimes = [InProcessRuntime(self.emulator, create_app()).__enter__() for _ in range(self.count)]
        return self

    def __exit__(self, *exc: object) -> None:
        for runtime in self.runtimes:
            runtime.stop()
        self.emulator.__exit__(*exc)

    @property
    def url(self) -> str:
        return self.emulator.url

    def settle(self, timeout_s: float = 60) -> None:
        """Wait until every runtime asks for work again after the last invocation: a runtime asks
        only once its call is over and its records are sent."""
        self.emulator.wait_polled(len(self.emulator.outcomes) + self.count, timeout_s)

    def records(self) -> list[dict[str, Any]]:
        s3 = self.stack.client("s3")
        keys = self.stack.objects(layout.RAW_PREFIX) + self.stack.objects(layout.SPOOL_PREFIX)
        return read_objects((k, s3.get_object(Bucket=self.stack.bucket, Key=k)["Body"].read()) for k in keys)

    def aggregate(self) -> int:
        """Run the aggregator over every queued object notification, as Lambda's SQS trigger would:
        ten messages a batch, the ones it did not report as failed deleted."""
        module = load_aggregator()
        sqs = self.stack.client("sqs")
        batches = 0
        while True:
            event = self.stack.sqs_event()
            if not event["Records"]:
                return batches
            failed = {f["itemIdentifier"] for f in invoke(module, event)["batchItemFailures"]}
            if failed:
                raise AssertionError(f"the aggregator failed {len(failed)} messages")
            done = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(event["Records"])]
            sqs.delete_message_batch(QueueUrl=self.stack.queue_url, Entries=done)
            batches += 1

    def rollups(self) -> dict[tuple[str, str], dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        deserialise = TypeDeserializer().deserialize
        pages = self.stack.client("dynamodb").get_paginator("scan").paginate(TableName=self.stack.table)
        found = {}
        for page in pages:
            for item in page["Items"]:
                row = {name: deserialise(value) for name, value in item.items()}
                if row["pk"].startswith(f"{layout.ROLLUP_PK}#"):
                    found[(row["pk"], row["sk"])] = row
        return found


def check_aws(report: Report, target: AwsTarget, records: Sequence[dict[str, Any]]) -> None:
    """Aggregate, then compare every rollup item with the sums over the records."""
    target.aggregate()
    expected = expected_rollups(records)
    dims = {sk.split("#", 1)[0] for _, sk in expected}
    actual = {key: row for key, row in target.rollups().items() if key[1].split("#", 1)[0] in dims}
    report.rollups_checked = len(set(expected) | set(actual))
    report.rollup_mismatches = compare_rollups(expected, actual)
    dead = target.stack.client("sqs").get_queue_attributes(
        QueueUrl=target.stack.dead_letter_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]["ApproximateNumberOfMessages"]
    if int(dead):
        report.rollup_mismatches.append(f"{dead} messages in the dead-letter queue")
    if target.stack.objects(layout.ERRORS_PREFIX):
        report.rollup_mismatches.append("Firehose wrote objects under errors/")


# -- running a soak -------------------------------------------------------------------------------

# Failures of relaylog this soak found and that are not fixed yet: (target, kind, what), printed
# as "known failure" instead of failing the run. Each is described in bench/README.md.
KNOWN: tuple[tuple[str, str, str], ...] = ()


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """os.environ with these values for the block (the proxy function reads its settings there)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def soak_local(calls: Sequence[Call], standin_url: str, data_dir: Path, concurrency: int, seed: int = 0) -> Report:
    """The calls through relaylog's local app (uvicorn, local sink); records read once it stopped,
    so everything its writer had is on disk."""
    began = time.perf_counter()
    with RunningProxy(data_dir, standin_url, read_timeout_s=READ_TIMEOUT_S) as proxy:
        seen = asyncio.run(run_calls(proxy.url, calls, concurrency, seed=seed))
    report = check("local", calls, seen, read_records(data_dir))
    report.seconds = elapsed(began)
    return report


def soak_aws(
    calls: Sequence[Call],
    standin_url: str,
    concurrency: int,
    runtimes: int,
    wave: int,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """The calls through the Function URL, relaylog's runtime loop, Firehose, S3, SQS and the
    aggregator, all under moto, in waves of `wave` calls, each on a fresh stack.

    Why waves: moto's TransactWriteItems deep-copies every table for its rollback, so each of the
    aggregator's transactions costs time in proportion to everything already in DynamoDB, and the
    aggregator makes one per delivered object (moto delivers one per PutRecordBatch, and relaylog
    sends one batch per call). A fresh stack keeps that bounded; every wave is checked in full."""
    began = time.perf_counter()
    total = Report("aws")
    fake_credentials()
    upstreams = {f"RELAYLOG_UPSTREAM_{name.upper()}": standin_url for name in PROVIDERS}
    for start in range(0, len(calls), wave):
        part = calls[start : start + wave]
        with mock_aws():
            stack = create_stack()
            with environment(**stack.env(), **upstreams, RELAYLOG_READ_TIMEOUT=str(READ_TIMEOUT_S)):
                with AwsTarget(stack, runtimes) as target:
                    seen = asyncio.run(run_calls(target.url, part, concurrency, seed=seed + start))
                    target.settle()
                records = target.records()
                report = check("aws", part, seen, records)
                check_aws(report, target, records)
        total.merge(report)
        if progress is not None:
            progress(f"aws: {total.calls}/{len(calls)} calls, {elapsed(began):.0f} s")
    total.seconds = elapsed(began)
    return total
