"""What genai-prices itself charges for a record's usage, to check relaylog's faster pricing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import genai_prices

# Record usage columns -> genai-prices Usage fields.
_NAMES = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_tokens": "cache_read_tokens",
    "cache_write_tokens": "cache_write_tokens",
    "reasoning_tokens": "output_reasoning_tokens",
    "audio_input_tokens": "input_audio_tokens",
    "audio_output_tokens": "output_audio_tokens",
}


def genai_cost(usage: Mapping[str, Any], model: str, provider_id: str) -> float:
    """genai-prices' own price for the usage columns of `usage` (a record or part of one)."""
    values = {name: usage[column] for column, name in _NAMES.items() if usage.get(column) is not None}
    calc = genai_prices.calc_price(genai_prices.Usage(**values), model_ref=model, provider_id=provider_id)
    return float(calc.total_price)
