"""relaylog's provider stand-in: a fake OpenAI, Anthropic, Gemini and Amazon Bedrock on a real
loopback socket.

It follows each provider's wire format (JSON layout and key order, SSE framing and event names,
usage fields, error bodies, headers) and is deterministic: fixed ids and timestamps derived from
the request's content, so the same request always gets the same bytes, directly or through the
proxy.

    with StandIn() as s:                      # background thread, 127.0.0.1, free port
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-test")
        ...
        s.requests[-1].json()                 # what the provider received

`python -m relaylog.standin --port 9100` serves in the foreground (for benchmarks).

Scenarios (header `x-standin-scenario: NAME`, or model `standin-NAME`, else implied):
    text            a fixed short answer (the default for any model)
    long            a 40-sentence answer (about 500 stream events)
    tool            one tool call (the first tool offered, else get_weather); implied when tools
                    are offered. After a tool result the answer is always text.
    parallel-tools  two tool calls
    refusal         OpenAI `refusal`, Anthropic stop_reason "refusal", Gemini SAFETY block
    reasoning       reasoning tokens / thinking block; implied by reasoning models
                    (OpenAI o1/o3/o4/gpt-5, Gemini 2.5/3) and Anthropic `thinking`
    cached          cached prompt tokens (OpenAI/Gemini: 2048 of the prompt; Anthropic: 2048
                    cache reads + 512 cache writes on top of the uncached input)
    stream-error    streams fail after three text deltas with the provider's in-stream error;
                    non-streamed calls get 500 (OpenAI), 529 (Anthropic) or 503 (Gemini)
A `response_format` / `text.format` / `responseSchema` JSON schema is answered with JSON that fits
it; `max_tokens`-style limits shorter than the answer cut it (finish reason length/max_tokens).

Faults: header `x-standin-fault` (grammar in `relaylog.standin.faults`). API keys are never checked
except the key `bad-key`, which gets the provider's invalid-key error. Bedrock (`/model/{id}/...`,
see `relaylog.standin.bedrock_api`) checks SigV4 signatures against its fake identities in
`relaylog.standin.bedrock_auth`, and refuses unsigned calls, as AWS does.
"""

from .faults import Fault, parse_fault
from .server import StandIn
from .wire import SCENARIOS, Reply, Request

__all__ = ["SCENARIOS", "Fault", "Reply", "Request", "StandIn", "parse_fault"]
