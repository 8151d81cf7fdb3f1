"""Token usage normalised to record schema v1.

`input_tokens` counts every input token the provider processed (cache reads and cache writes
included); `output_tokens` includes reasoning tokens. This is also genai-prices' convention, so a
`Usage` can be priced as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

UsageSource = Literal["provider", "provider_injected", "absent"]


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    audio_input_tokens: int | None = None
    audio_output_tokens: int | None = None

    def as_fields(self) -> dict[str, int | None]:
        return asdict(self)


EMPTY_FIELDS: dict[str, int | None] = Usage().as_fields()


@dataclass(frozen=True, slots=True)
class Observed:
    """What a response parser learned from a response body."""

    usage: Usage | None = None
    response_model: str | None = None
    # Why the body could not be (fully) understood, for the record; None when it parsed cleanly.
    parse_error: str | None = None
    # The provider reported an error inside a response that began as a success (an error event).
    stream_error: bool = False
