"""Per-call faults, asked for with the `x-standin-fault` request header (it passes through the
proxy untouched) or with `StandIn(fault=...)` for every call that has no such header.

Grammar: items separated by `;` or `,`, each `name` or `name=value`, combinable::

    status=N          answer with the provider's own error body for HTTP status N (400, 401, 403,
                      404, 413, 429, 500, 502, 503, 504, 529 ...) instead of the normal reply
    retry-after=S     add `retry-after: S` to the answer (any status)
    retry-after-ms=M  add `retry-after-ms: M` (the OpenAI SDKs honour it)
    delay-ms=M        wait M ms before sending the status line and headers
    chunk-delay-ms=M  wait M ms between the HTTP chunks (events) of a streamed body
    end-delay-ms=M    wait M ms before ending the body: a stream's final zero-length chunk comes
                      M ms after its last event (`[DONE]`, `message_stop`, ...), a non-streamed
                      body's last byte M ms after the rest. Over a real network the end of a body
                      often arrives in a read of its own: clients that stop at the terminal event
                      (the OpenAI SDK at `[DONE]`) hang up before it
    drop-after=N      send the headers and N body chunks (streams: N SSE events; non-streamed
                      bodies: the first N bytes), then close the TCP connection (FIN) without
                      ending the body: the client sees a body cut short mid-stream
    stall-after=N     like drop-after, but keep the connection open and send nothing more
                      (until the client gives up or the stand-in stops); a non-streamed body of
                      at most N bytes is whole, and the connection serves the next request
    reset             after reading the request (and any delay-ms), close the connection with a
                      TCP RST before sending a single byte
    truncate          end a stream cleanly at the HTTP level (final zero-length chunk) but leave
                      out its closing events: OpenAI chat's finish/usage chunks and `[DONE]`,
                      Anthropic's `message_delta`/`message_stop`, Responses' `response.completed`,
                      Gemini's last chunk (and the closing `]` of a JSON-array stream)
    truncate=N        the same, keeping exactly the first N events
    times=N           apply the fault only to the first N requests that carry this exact fault
                      value (the whole header, byte for byte, counted per stand-in instance);
                      later ones are answered as if there were no fault: "fail twice, then work"
    id=TEXT           a free label with no effect of its own: it makes the value unique, so each
                      test gets its own `times` count, e.g. `status=503;times=2;id=<uuid4>`

Example: `x-standin-fault: status=429;retry-after=2` or `delay-ms=300, chunk-delay-ms=20`.
An unknown name is answered with HTTP 400 and a `standin_error` body so typos never pass silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

_N = TypeVar("_N", int, float)


class FaultSyntaxError(ValueError):
    pass


@dataclass(slots=True)
class Fault:
    status: int | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None
    delay_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    end_delay_ms: float = 0.0
    drop_after: int | None = None
    stall_after: int | None = None
    reset: bool = False
    truncate: bool = False
    truncate_keep: int | None = None
    times: int | None = None  # None: every request; the counting is App's, per fault value
    label: str | None = None

    @property
    def needs_async(self) -> bool:
        """Whether the reply has to be sent by a task (waits, cut-offs) rather than in one write."""
        return bool(
            self.delay_ms
            or self.chunk_delay_ms
            or self.end_delay_ms
            or self.reset
            or self.drop_after is not None
            or self.stall_after is not None
        )


_INT_FIELDS = {"status": "status", "drop-after": "drop_after", "stall-after": "stall_after", "times": "times"}
_MS_FIELDS = {"delay-ms": "delay_ms", "chunk-delay-ms": "chunk_delay_ms", "end-delay-ms": "end_delay_ms"}


def parse_fault(spec: str | None) -> Fault | None:
    """Parse an `x-standin-fault` value; None or blank means no fault."""
    if spec is None or not spec.strip():
        return None
    fault = Fault()
    for raw in spec.replace(",", ";").split(";"):
        item = raw.strip()
        if not item:
            continue
        name, has_value, value = item.partition("=")
        name, value = name.strip().lower(), value.strip()
        try:
            if name in _INT_FIELDS:
                setattr(fault, _INT_FIELDS[name], _non_negative(int(value)))
            elif name in _MS_FIELDS:
                setattr(fault, _MS_FIELDS[name], _non_negative(float(value)))
            elif name == "retry-after":
                fault.retry_after = _required(value)
            elif name == "retry-after-ms":
                fault.retry_after_ms = _required(value)
            elif name == "id":
                fault.label = _required(value)
            elif name == "reset" and not has_value:
                fault.reset = True
            elif name == "truncate":
                fault.truncate = True
                fault.truncate_keep = _non_negative(int(value)) if has_value else None
            else:
                raise FaultSyntaxError(f"unknown fault {item!r}")
        except ValueError as exc:
            if isinstance(exc, FaultSyntaxError):
                raise
            raise FaultSyntaxError(f"bad value in fault {item!r}") from exc
    if fault.status is not None and not 100 <= fault.status <= 599:
        raise FaultSyntaxError(f"status out of range in {spec!r}")
    return fault


def _non_negative(value: _N) -> _N:
    if value < 0:
        raise ValueError("negative")
    return value


def _required(value: str) -> str:
    if not value:
        raise ValueError("empty")
    return value
