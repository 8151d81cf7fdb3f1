"""What the relay saw of one call, told as it happens: relay -> observe -> record.

The relay reports each step through the methods below (the request read and parsed, an attempt
started and ended, the response started, a chunk sent, a failure with its typed error, the end);
`recording.build_record` turns the finished exchange into a record off the response path. It is
one slots dataclass per call, and its methods only write its fields: observing costs what the
attribute writes they replace did, on the relay's hot path.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING

from .config import MAX_CAPTURE_BYTES
from .headers import HeliconeMeta
from .providers.registry import Provider
from .record import CacheStatus, ErrorType

if TYPE_CHECKING:
    from .gateway.cache import CachedResponse
    from .gateway.ratelimit import Decision
    from .providers.parsing import RequestInfo
    from .relay.targets import Target

Header = tuple[bytes, bytes]

# Past the capture limit, about this much of the response's end is still kept: a stream reports
# its usage in its last events, which a record would otherwise lose with the bytes.
TAIL_BYTES = 64 * 1024


@dataclass(slots=True)
class Attempt:
    """One call to a provider made for this request."""

    # Helicone-Fallbacks entry called (None without fallbacks).
    target: int | None
    status: int  # 0 when no answer came
    error_type: ErrorType | None
    # Time until the provider's response headers (or the failure).
    ms: float
    # Backoff waited after this attempt before the next one.
    wait_ms: float = 0.0


@dataclass(slots=True)
class Exchange:
    request_id: str
    # Wall clock (epoch seconds) when the request reached relaylog.
    created_at: float
    # perf_counter() at the same moment; every duration below is measured from it.
    started: float
    method: str
    path: str
    meta: HeliconeMeta
    # Response bytes kept for the record (and a cache entry); the rest are counted, not kept.
    capture_limit: int = MAX_CAPTURE_BYTES
    provider: Provider | None = None
    endpoint: str | None = None
    model: str | None = None
    stream: bool = False
    user: str | None = None
    key_id: str | None = None
    request_body: bytes = b""
    request_content_type: str | None = None
    request_parse_error: str | None = None
    # Usage was asked for upstream and is removed from what the client receives.
    usage_injected: bool = False
    status: int = 0
    response_content_type: str | None = None
    response_content_encoding: str | None = None
    # Bytes as sent to the client, in order, up to `capture_limit`.
    response_chunks: list[bytes] = field(default_factory=list)
    response_bytes: int = 0
    # The last bytes sent past `capture_limit` (at least TAIL_BYTES of them once there are that
    # many, at most twice that), and their count; `response_chunks` holds those up to it.
    response_tail: deque[bytes] | None = None
    tail_bytes: int = 0
    # Provider bytes the client never saw (the usage chunk relaylog asked for); read for usage.
    withheld: list[bytes] = field(default_factory=list)
    ttft: float | None = None
    finished: float | None = None
    upstream_started: float | None = None
    upstream_finished: float | None = None
    error_type: ErrorType | None = None
    # The client hung up after the provider's terminal event reached it (the OpenAI SDK closes at
    # `[DONE]`): the response is complete, and what the provider still sends is read into
    # `withheld` for usage, never sent.
    client_done: bool = False
    # -- gateway (Helicone-Cache-*, -RateLimit-*, -Retry-*, -Fallbacks) ------------------------
    # Response headers relaylog adds (rate-limit state, cache status, fallback index); a tuple,
    # as most calls add none.
    extra_headers: tuple[Header, ...] = ()
    cache_status: CacheStatus | None = None
    # perf_counter() of each chunk sent, kept only while a response is being cached.
    chunk_times: list[float] | None = None
    # Headers sent to the client, kept only while a response is being cached.
    sent_headers: list[Header] | None = None
    attempts: list[Attempt] = field(default_factory=list)
    # Attempts are listed in the record when the client asked for retries or fallbacks.
    show_attempts: bool = False
    fallback_index: int | None = None
    # Cents rate limits the call passed, to be charged its cost afterwards.
    rate_decisions: tuple[Decision, ...] = ()

    # -- the request ---------------------------------------------------------------------------

    def routed(self, provider: Provider, endpoint: str) -> None:
        self.provider = provider
        self.endpoint = endpoint

    def authenticated(self, key_id: str) -> None:
        self.key_id = key_id

    def request_read(self, body: bytes, content_type: str | None) -> None:
        self.request_body = body
        self.request_content_type = content_type

    def request_parsed(self, info: RequestInfo) -> None:
        meta = self.meta
        self.model = meta.model_override or info.model
        self.stream = info.stream
        self.user = meta.user_id or info.user
        self.request_parse_error = info.parse_error if self.request_body else None

    def add_headers(self, *headers: Header) -> None:
        """Headers relaylog adds to its response, whoever answers."""
        self.extra_headers += headers

    def charge_later(self, decision: Decision) -> None:
        """A cents rate limit passed: the call's cost is deducted from it once known."""
        self.rate_decisions += (decision,)

    def list_attempts(self) -> None:
        """The client asked for retries or fallbacks: the record lists every attempt."""
        self.show_attempts = True

    def cache_looked_up(self, status: CacheStatus) -> None:
        self.cache_status = status
        if status == "MISS":
            # The answer may become a cache entry, which replays the chunks as they were timed.
            self.chunk_times = []

    # -- attempts ------------------------------------------------------------------------------

    def attempt_started(self, target: Target) -> float:
        """The record describes the target being called (in the end, the one that answered).
        Returns the attempt's start, which `attempt_ended` measures from."""
        route = target.route
        self.provider = route.provider
        self.endpoint = route.endpoint
        self.model = target.model
        self.usage_injected = target.usage_injected
        began = perf_counter()
        if self.upstream_started is None:
            self.upstream_started = began
        return began

    def usage_refused(self) -> None:
        """The provider refused the stream usage relaylog asked for: asked again as the client sent it."""
        self.usage_injected = False

    def attempt_ended(self, target: int | None, status: int, error: ErrorType | None, began: float) -> Attempt:
        attempt = Attempt(target, status, error, round((perf_counter() - began) * 1000.0, 3))
        self.attempts.append(attempt)
        return attempt

    def answered_by(self, fallback: int) -> None:
        """Which Helicone-Fallbacks entry answered."""
        self.fallback_index = fallback
        self.extra_headers += ((b"helicone-fallback-index", str(fallback).encode()),)

    def upstream_done(self) -> None:
        """The provider has been read to the end, or given up on (the first time counts)."""
        if self.upstream_finished is None:
            self.upstream_finished = perf_counter()

    # -- the response --------------------------------------------------------------------------

    def response_described(self, content_type: str | None, content_encoding: str | None) -> None:
        """What the body about to be relayed is (the provider's headers, or a cache entry's)."""
        self.response_content_type = content_type
        self.response_content_encoding = content_encoding

    def replaying(self, entry: CachedResponse) -> None:
        self.response_described(entry.content_type, entry.content_encoding)
        self.usage_injected = entry.usage_injected
        self.withheld = list(entry.withheld)  # the entry's own list stays as stored

    def relaylog_answered(self, status: int, error: ErrorType | None) -> None:
        """relaylog answers with its own JSON (a refusal, or the echo route), never the provider's."""
        self.status = status
        self.error_type = error
        # A provider answer dropped midway had its own content type and encoding.
        self.response_described("application/json", None)

    def response_started(self, status: int, headers: list[Header]) -> None:
        """The status line and headers are about to go to the client."""
        self.status = status
        if self.chunk_times is not None:
            self.sent_headers = headers
        if status >= 400:
            self.error_type = "upstream_error"

    def chunk_sent(self, data: bytes) -> bool:
        """Body bytes about to go to the client: timed, counted, kept within the capture limit.
        False when the client already left after the end: the bytes are kept for usage, not sent."""
        if self.client_done:
            self.withheld.append(data)
            return False
        now = perf_counter()
        if self.ttft is None:
            self.ttft = now
        if self.chunk_times is not None:
            self.chunk_times.append(now)
        self.response_bytes += len(data)
        if self.response_bytes <= self.capture_limit:
            self.response_chunks.append(data)
        else:
            self._past_limit(data)
        return True

    def _past_limit(self, data: bytes) -> None:
        """The start kept up to the limit exactly; what follows it goes to the kept end."""
        room = self.capture_limit - (self.response_bytes - len(data))
        if room > 0:
            self.response_chunks.append(data[:room])
            data = data[room:]
        tail = self.response_tail
        if tail is None:
            tail = self.response_tail = deque()
        if len(data) > TAIL_BYTES:
            data = data[-TAIL_BYTES:]
        tail.append(data)
        self.tail_bytes += len(data)
        while self.tail_bytes - len(tail[0]) >= TAIL_BYTES:
            self.tail_bytes -= len(tail.popleft())

    def last_chunk_sent(self, data: bytes) -> bool:
        """The end of the body (`data` may be empty); False when the client already left."""
        return self.chunk_sent(data) if data else not self.client_done

    def client_left_after_end(self) -> None:
        """The client hung up once the response was complete for it: its latency ends here, and
        what is read on from the provider is for the record only."""
        self.client_done = True
        self.finished = self.upstream_finished = perf_counter()

    # -- the end -------------------------------------------------------------------------------

    def failed(self, error: ErrorType) -> None:
        self.error_type = error

    def interrupted(self) -> None:
        """The server stopped the call: `cancelled`, unless it was complete or had failed already."""
        if not self.client_done and self.error_type is None:
            self.error_type = "cancelled"

    def finish(self) -> None:
        """The response is over for the client (the first time counts)."""
        if self.finished is None:
            self.finished = perf_counter()
