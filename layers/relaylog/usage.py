"""Token usage normalised to record schema v1.

`input_tokens` counts every input token the provider processed (cache reads and cache writes
included); `output_tokens` includes reasoning tokens. This is also genai-prices' convention, so a
`Usage` can be priced as it is.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

UsageSource = Literal["provider", "provider_injected", "absent"]


# NamedTuples, not frozen dataclasses: as immutable, but built in half the time (a frozen
# dataclass sets each field through object.__setattr__) and hashed in C (Usage is a price cache
# key). A record builds one or two of each: ~2 us of a small answer's record.
class Usage(NamedTuple):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    audio_input_tokens: int | None = None
    audio_output_tokens: int | None = None
    # The part of cache_write_tokens cached for an hour (Anthropic), billed above the 5-minute
    # rate. Read for pricing only: not a record column.
    cache_write_1h_tokens: int | None = None

    def as_fields(self) -> dict[str, int | None]:
        """The record's usage columns."""
        # Spelled out: dataclasses.asdict deep-copies and was a third of the cost of a record.
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "audio_input_tokens": self.audio_input_tokens,
            "audio_output_tokens": self.audio_output_tokens,
        }


EMPTY_FIELDS: dict[str, int | None] = Usage().as_fields()


class Observed(NamedTuple):
    """What a response parser learned from a response body."""

    usage: Usage | None = None
    response_model: str | None = None
    # Why the body could not be (fully) understood, for the record; None when it parsed cleanly.
    parse_error: str | None = None
    # The provider reported an error inside a response that began as a success (an error event).
    stream_error: bool = False


def stream_observed(usage: Usage | None, model: str | None, *, ended: bool, errored: bool, bad_event: bool) -> Observed:
    """What a stream parser learned. A stream that reached neither its end marker nor an error
    event was cut short; an unreadable event is worth saying even when the rest parsed."""
    if not (ended or errored):
        error: str | None = "truncated stream"
    elif bad_event:
        error = "invalid JSON in stream event"
    else:
        error = None
    return Observed(usage=usage, response_model=model, parse_error=error, stream_error=errored)
