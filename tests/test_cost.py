"""Cost from genai-prices. Expected values are worked out by hand from the per-MTok prices that
genai-prices lists (quoted next to each case), not by calling genai-prices."""

from __future__ import annotations

import importlib.metadata
import random
import warnings
from collections import OrderedDict
from collections.abc import Hashable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from genai_prices import data_snapshot
from genai_prices import types as gp
from relaylog import cost
from relaylog.cost import price
from relaylog.providers.registry import CUSTOM, PROVIDERS, Provider
from relaylog.usage import Usage

# The version pip installed, from the distribution's metadata: not the module's own idea of it.
SOURCE = f"genai-prices@{importlib.metadata.version('genai-prices')}"
OPENAI, ANTHROPIC, GEMINI = PROVIDERS["openai"], PROVIDERS["anthropic"], PROVIDERS["gemini"]
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_cost_source_names_the_installed_version() -> None:
    assert cost.COST_SOURCE == SOURCE


def test_registry_prices_ids_exist_in_genai_prices() -> None:
    providers = data_snapshot.get_snapshot().providers
    for provider in PROVIDERS.values():
        found = data_snapshot.find_provider_by_id(providers, provider.prices_id)
        assert found is not None and found.id == provider.prices_id, provider.name


def test_gpt_4o_with_cached_tokens() -> None:
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per MTok.
    # 1117 prompt tokens of which 1024 cached: 93 * 2.5 + 1024 * 1.25 + 46 * 10 = 1972.5 µ$
    usage = Usage(input_tokens=1117, output_tokens=46, cache_read_tokens=1024, reasoning_tokens=0)
    assert price(usage, "gpt-4o", OPENAI, at=NOW) == (0.0019725, SOURCE)
    assert price(usage, "gpt-4o-2024-08-06", OPENAI, at=NOW) == (0.0019725, SOURCE)


def test_claude_sonnet_4_5_cache_write_and_read() -> None:
    # claude-sonnet-4-5: $3 input, $3.75 cache write, $0.30 cache read, $15 output per MTok.
    # Anthropic's 100 + 2000 written + 5000 read = 7100 input:
    # 100 * 3 + 2000 * 3.75 + 5000 * 0.3 + 503 * 15 = 300 + 7500 + 1500 + 7545 = 16845 µ$
    usage = Usage(input_tokens=7100, output_tokens=503, cache_read_tokens=5000, cache_write_tokens=2000)
    assert price(usage, "claude-sonnet-4-5-20250929", ANTHROPIC, at=NOW) == (0.016845, SOURCE)


def test_claude_one_hour_cache_writes_cost_more() -> None:
    # claude-sonnet-4-5: $3.75 per MTok for 5-minute cache writes, $6 for 1-hour ones.
    # 1000 uncached + 1000 written (600 for an hour) + 500 read, 100 out:
    # 1000 * 3 + 400 * 3.75 + 600 * 6 + 500 * 0.3 + 100 * 15 = 9750 µ$ (8400 if all were 5-minute)
    usage = Usage(
        input_tokens=2500,
        output_tokens=100,
        cache_read_tokens=500,
        cache_write_tokens=1000,
        cache_write_1h_tokens=600,
    )
    assert price(usage, "claude-sonnet-4-5-20250929", ANTHROPIC, at=NOW) == (0.00975, SOURCE)


def test_claude_long_context_tier() -> None:
    # Above 200k input tokens every sonnet-4-5 price doubles (output x1.5): $6 in, $0.60 cache read,
    # $22.50 out. 10000 * 6 + 200000 * 0.6 + 100 * 22.5 = 60000 + 120000 + 2250 = 182250 µ$
    usage = Usage(input_tokens=210_000, output_tokens=100, cache_read_tokens=200_000)
    assert price(usage, "claude-sonnet-4-5", ANTHROPIC, at=NOW) == (0.18225, SOURCE)


def test_gemini_2_5_flash_with_thoughts_and_cache() -> None:
    # gemini-2.5-flash: $0.30 input, $0.03 cache read, $2.50 output (thoughts included) per MTok.
    # 180 * 0.3 + 1024 * 0.03 + (211 + 900) * 2.5 = 54 + 30.72 + 2777.5 = 2862.22 µ$
    usage = Usage(input_tokens=1204, output_tokens=1111, cache_read_tokens=1024, reasoning_tokens=900)
    assert price(usage, "gemini-2.5-flash", GEMINI, at=NOW) == (0.00286222, SOURCE)


def test_gemini_audio_input() -> None:
    # gemini-2.5-flash audio input is $1 per MTok: 150 * 0.3 + 600 * 1 + 20 * 2.5 = 695 µ$
    usage = Usage(input_tokens=750, output_tokens=20, audio_input_tokens=600)
    assert price(usage, "gemini-2.5-flash", GEMINI, at=NOW) == (0.000695, SOURCE)


def test_gemini_cached_audio_only_when_it_is_determined() -> None:
    # All input cached: the cached audio is all 600 audio tokens ($0.10), text cache 400 ($0.03):
    # 600 * 0.1 + 400 * 0.03 + 200 * 2.5 = 60 + 12 + 500 = 572 µ$
    usage = Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=1000, audio_input_tokens=600)
    assert price(usage, "gemini-2.5-flash", GEMINI, at=NOW) == (0.000572, SOURCE)
    # Part cached, part audio: how much of the cache was audio is unknown, so no made-up cost.
    usage = Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=300, audio_input_tokens=600)
    assert price(usage, "gemini-2.5-flash", GEMINI, at=NOW) == (None, "unknown_model")


def test_audio_input_and_output() -> None:
    # gpt-realtime: $4 text in, $32 audio in, $16 text out, $64 audio out per MTok.
    # 400 * 4 + 600 * 32 + 100 * 16 + 400 * 64 = 1600 + 19200 + 1600 + 25600 = 48000 µ$
    usage = Usage(input_tokens=1000, output_tokens=500, audio_input_tokens=600, audio_output_tokens=400)
    assert price(usage, "gpt-realtime", OPENAI, at=NOW) == (0.048, SOURCE)


def test_reasoning_priced_apart_only_where_listed() -> None:
    # o3 (since 2025-06-10): $2 in, $8 out; reasoning is ordinary output.
    plain = Usage(input_tokens=1000, output_tokens=1000)
    thinking = Usage(input_tokens=1000, output_tokens=1000, reasoning_tokens=900)
    assert price(plain, "o3", OPENAI, at=NOW) == price(thinking, "o3", OPENAI, at=NOW) == (0.01, SOURCE)
    # sonar-deep-research: $2 in, $8 out, $3 reasoning: 100 * 2 + 400 * 8 + 600 * 3 = 5200 µ$
    usage = Usage(input_tokens=100, output_tokens=1000, reasoning_tokens=600)
    assert price(usage, "sonar-deep-research", PROVIDERS["perplexity"], at=NOW) == (0.0052, SOURCE)


def test_price_at_request_date() -> None:
    # o3 cost $10 in / $40 out until 2025-06-09, then $2 / $8.
    usage = Usage(input_tokens=1000, output_tokens=1000)
    assert price(usage, "o3", OPENAI, at=datetime(2025, 6, 1, tzinfo=UTC)) == (0.05, SOURCE)
    assert price(usage, "o3", OPENAI, at=datetime(2025, 7, 1, tzinfo=UTC)) == (0.01, SOURCE)
    assert price(usage, "o3", OPENAI, at=datetime(2025, 6, 1, tzinfo=UTC)) == (0.05, SOURCE)


def test_price_by_time_of_day_is_not_cached_by_date() -> None:
    # deepseek-chat: $0.27 in / $1.10 out from 00:30 to 16:30 UTC, half that otherwise.
    usage = Usage(input_tokens=1000, output_tokens=1000, cache_read_tokens=0)
    day, night = datetime(2026, 1, 5, 2, tzinfo=UTC), datetime(2026, 1, 5, 20, tzinfo=UTC)
    deepseek = PROVIDERS["deepseek"]
    assert price(usage, "deepseek-chat", deepseek, at=day) == (0.00137, SOURCE)
    assert price(usage, "deepseek-chat", deepseek, at=night) == (0.000685, SOURCE)
    assert price(usage, "deepseek-chat", deepseek, at=day) == (0.00137, SOURCE)


def test_embeddings_have_no_output() -> None:
    # text-embedding-3-small: $0.02 per MTok.
    assert price(Usage(input_tokens=8000, output_tokens=0), "text-embedding-3-small", OPENAI, at=NOW) == (
        0.00016,
        SOURCE,
    )


def test_custom_provider_guesses_from_model() -> None:
    usage = Usage(input_tokens=1117, output_tokens=46, cache_read_tokens=1024)
    assert price(usage, "gpt-4o", CUSTOM, at=NOW) == (0.0019725, SOURCE)
    claude = Usage(input_tokens=7100, output_tokens=503, cache_read_tokens=5000, cache_write_tokens=2000)
    assert price(claude, "claude-sonnet-4-5", CUSTOM, at=NOW) == (0.016845, SOURCE)
    assert price(usage, "my-local-llama-3-8b", CUSTOM, at=NOW) == (None, "unknown_model")


def test_azure_falls_back_to_openai_models() -> None:
    cost_usd, source = price(Usage(input_tokens=1000, output_tokens=100), "gpt-4o", PROVIDERS["azure"], at=NOW)
    assert source == SOURCE and cost_usd is not None and cost_usd > 0


@pytest.mark.parametrize(
    ("usage", "model", "expected"),
    [
        (None, "gpt-4o", (None, "no_usage")),
        (Usage(), "gpt-4o", (None, "no_usage")),
        (Usage(input_tokens=10), "gpt-4o", (None, "no_usage")),
        (Usage(output_tokens=10), "gpt-4o", (None, "no_usage")),
        (Usage(10, 10), None, (None, "unknown_model")),
        (Usage(10, 10), "", (None, "unknown_model")),
        (Usage(10, 10), "gpt-99-ultra", (None, "unknown_model")),
        (Usage(10, 10), "gpt-4o" + "x" * 10_000, (None, "unknown_model")),
        # Inconsistent usage: more cached than input tokens.
        (Usage(100, 10, cache_read_tokens=500), "gpt-4o", (None, "unknown_model")),
        (Usage(-5, 10), "gpt-4o", (None, "unknown_model")),
        (Usage(True, 10), "gpt-4o", (None, "unknown_model")),  # type: ignore[arg-type]
    ],
)
def test_unpriceable(usage: Usage | None, model: str | None, expected: tuple[float | None, str]) -> None:
    assert price(usage, model, OPENAI, at=NOW) == expected


def test_unknown_provider_id() -> None:
    nowhere = Provider("nowhere", "https://example.invalid", "openai", False, "no-such-provider")
    assert price(Usage(10, 10), "gpt-4o", nowhere, at=NOW) == (None, "unknown_model")


def test_repeated_usage_hits_the_cache() -> None:
    usage = Usage(input_tokens=123_456, output_tokens=789)
    first = price(usage, "gpt-4o", OPENAI, at=NOW)
    assert price(usage, "gpt-4o", OPENAI, at=NOW) == first
    assert price(Usage(input_tokens=123_456, output_tokens=789), "gpt-4o", OPENAI, at=NOW) == first


def test_new_price_data_clears_caches() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert price(usage, "gpt-4o", OPENAI, at=NOW) == (12.5, SOURCE)  # $2.50 + $10
    tiny = data_snapshot.DataSnapshot(
        providers=[
            gp.Provider(
                id="openai",
                name="OpenAI",
                api_pattern=r"https://api\.openai\.com",
                models=[
                    gp.ModelInfo(
                        id="gpt-4o",
                        match=gp.ClauseEquals(equals="gpt-4o"),
                        prices=gp.ModelPrice(input_mtok=Decimal("1"), output_mtok=Decimal("2")),
                    )
                ],
            )
        ],
        from_auto_update=True,
    )
    data_snapshot.set_custom_snapshot(tiny)
    try:
        assert price(usage, "gpt-4o", OPENAI, at=NOW) == (3.0, SOURCE)
    finally:
        data_snapshot.set_custom_snapshot(None)
    assert price(usage, "gpt-4o", OPENAI, at=NOW) == (12.5, SOURCE)


def test_fast_path_is_used_for_common_models() -> None:
    for model, provider in (
        ("gpt-4o", OPENAI),
        ("claude-sonnet-4-5", ANTHROPIC),
        ("gemini-2.5-flash", GEMINI),
    ):
        price(Usage(input_tokens=10, output_tokens=1), model, provider, at=NOW)
        _, info = cost._models.get((provider.prices_id, model))
        assert cost._plan_for(info.get_prices(NOW), info) is not None, model


def _genai_values(usage: Usage) -> dict[str, int]:
    values = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "output_reasoning_tokens": usage.reasoning_tokens,
        "input_audio_tokens": usage.audio_input_tokens,
        "output_audio_tokens": usage.audio_output_tokens,
    }
    return {k: v for k, v in values.items() if v is not None}


@pytest.mark.slow
def test_same_results_as_calc_price_for_every_model() -> None:
    """The fast path against genai-prices' own calc_price, on every model it knows."""
    rng = random.Random(20261126)

    def part(limit: int) -> int | None:
        return rng.choice([None, 0, rng.randint(0, max(0, limit))])

    checked = 0
    warnings.simplefilter("ignore")
    for gp_provider in data_snapshot.get_snapshot().providers:
        provider = Provider(gp_provider.id, "", "openai", False, gp_provider.id)
        for model in gp_provider.models:
            for _ in range(3):
                inp = rng.choice([0, 7, 1000, 199_999, 200_001, rng.randint(0, 400_000)])
                out = rng.choice([0, 10, rng.randint(0, 50_000)])
                cached = part(inp)
                usage = Usage(inp, out, cached, part(inp - (cached or 0)), part(out), part(inp), part(out))
                try:
                    calc = genai_prices.calc_price(
                        genai_prices.Usage(**_genai_values(usage)),
                        model.id,
                        provider_id=gp_provider.id,
                        genai_request_timestamp=NOW,
                    )
                    expected: tuple[float | None, str] = (
                        round(float(calc.total_price), 10),
                        SOURCE,
                    )
                except (ValueError, LookupError):
                    expected = (None, "unknown_model")
                if expected[0] is None and usage.cache_read_tokens and usage.audio_input_tokens:
                    continue  # relaylog prices this case when the cached audio is determined
                assert price(usage, model.id, provider, at=NOW) == expected, (
                    gp_provider.id,
                    model.id,
                    usage,
                )
                checked += 1
    assert checked > 5000


def test_lru_lookup_survives_an_eviction_between_its_two_steps() -> None:
    # Lookups take no lock: another thread may evict the key between get and move_to_end. That
    # moment is made to happen here, every time, by a dict that loses the key as it is read.
    class Evicting(OrderedDict[Hashable, Any]):
        def get(self, key: Hashable, default: Any = None) -> Any:
            value = super().get(key, default)
            self.pop(key, None)  # what a concurrent put's popitem would do
            return value

    lru = cost._LRU(8)
    lru._data = Evicting()
    lru.put("model", "resolved")
    assert lru.get("model") == "resolved"
    assert lru.get("model") is cost._MISSING
