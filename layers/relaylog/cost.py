"""Cost of a call in USD, from the genai-prices package, at thousands of records per second.

genai-prices' own `calc_price` is exact but slow for that (see `price_plan.py` for the numbers),
and real traffic rarely repeats a usage exactly, so caching results alone does not help much.
This module:

- resolves (provider, model) once, in a bounded LRU. It calls genai-prices' own lookup functions
  but not `DataSnapshot.find_provider_model`, whose internal caches are unbounded and keyed by the
  model string, which clients choose freely;
- picks the price set in force at the request time on every call (`ModelInfo.get_prices`: cheap,
  and not cacheable by date alone because some prices change by time of day);
- prices the usage with that price set's plan (`price_plan.py`), compiled once per price set and
  checked against genai-prices before use, or with genai-prices itself where no plan applies;
- caches results per (price set, provider, usage) in a bounded LRU.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable
from datetime import UTC, datetime
from typing import Any

import genai_prices
from genai_prices import data_snapshot
from genai_prices import types as gp

from relaylog.price_plan import Plan, compile_plan
from relaylog.providers.registry import Provider
from relaylog.usage import Usage

__all__ = ["COST_SOURCE", "NO_USAGE", "UNKNOWN_MODEL", "load_prices", "price"]

log = logging.getLogger(__name__)

COST_SOURCE = f"genai-prices@{genai_prices.__version__}"
UNKNOWN_MODEL = "unknown_model"
NO_USAGE = "no_usage"

# Real model ids are short; a longer "model" is client noise not worth matching 2,000 patterns on.
_MAX_MODEL_LEN = 256
_MISSING = object()


class _LRU:
    """A small thread-safe LRU (price() may be called from worker threads): changes under a lock,
    lookups without."""

    __slots__ = ("_data", "_lock", "_max")

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._max = maxsize

    def get(self, key: Hashable) -> Any:
        # Without the lock: each OrderedDict method is one step under the GIL (the keys hash and
        # compare in C), and a key evicted between the two steps is simply not moved. Taking the
        # lock cost ~0.3 us per lookup, two lookups per record.
        data = self._data
        value = data.get(key, _MISSING)
        if value is not _MISSING:
            try:
                data.move_to_end(key)
            except KeyError:
                pass
        return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            if len(self._data) > self._max:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_models = _LRU(4096)  # (prices_id, model) -> (gp.Provider, gp.ModelInfo) | None
_plans = _LRU(1024)  # id(ModelPrice) -> (ModelPrice, Plan | None)
_results = _LRU(65536)  # (id(ModelPrice), provider id, Usage) -> (ModelPrice, cost)
_snapshot: data_snapshot.DataSnapshot | None = None


def price(
    usage: Usage | None, model: str | None, provider: Provider, *, at: datetime | None = None
) -> tuple[float | None, str]:
    """(cost_usd, cost_source) for one call; never raises.

    `at` is when the call was made (default now): prices that changed over time, or that differ
    by time of day, are taken for that moment. Provider "custom" (prices_id "") lets genai-prices
    infer the provider from the model name.
    """
    if usage is None or usage.input_tokens is None or usage.output_tokens is None:
        return None, NO_USAGE
    if not model or len(model) > _MAX_MODEL_LEN:
        return None, UNKNOWN_MODEL
    try:
        return _price(usage, model, provider.prices_id, at)
    except Exception as exc:
        # Inconsistent usage (e.g. more cached than input tokens) or bad price data. The model
        # name and exception type only: no request content, no credentials.
        log.debug("cannot price model %r: %s", model[:80], type(exc).__name__)
        return None, UNKNOWN_MODEL


def _price(usage: Usage, model: str, prices_id: str, at: datetime | None) -> tuple[float | None, str]:
    snapshot = _current_snapshot()
    resolved = _models.get((prices_id, model))
    if resolved is _MISSING:
        resolved = _resolve(snapshot, prices_id, model)
        _models.put((prices_id, model), resolved)
    if resolved is None:
        return None, UNKNOWN_MODEL
    gp_provider, info = resolved

    if isinstance(info.prices, gp.ModelPrice):
        # One price set at all times (most models): what get_prices returns without asking the
        # clock (datetime.now cost ~0.35 us per record).
        model_price = info.prices
    else:
        at = at or datetime.now(tz=UTC)
        model_price = info.get_prices(at)
    key = (id(model_price), gp_provider.id, usage)
    hit = _results.get(key)
    # Entries keep their price set: an id() can only be reused once that object is gone.
    if hit is not _MISSING and hit[0] is model_price:
        return hit[1], COST_SOURCE
    values = _genai_values(usage, model_price)
    plan = _plan_for(model_price, info)
    if plan is not None and plan.accepts(values):
        total = plan.total(values)
    else:
        calc = info.calc_price(
            genai_prices.Usage(**values), gp_provider, genai_request_timestamp=at or datetime.now(tz=UTC)
        )
        total = calc.total_price
    cost = round(float(total), 10)
    _results.put(key, (model_price, cost))
    return cost, COST_SOURCE


def load_prices() -> None:
    """Load genai-prices' data now (about a second of CPU) rather than during the first record."""
    _current_snapshot()


def _current_snapshot() -> data_snapshot.DataSnapshot:
    """genai-prices' price data; when it is replaced (UpdatePrices), everything cached is stale."""
    global _snapshot
    snapshot = data_snapshot.get_snapshot()
    if snapshot is not _snapshot:
        _models.clear()
        _plans.clear()
        _results.clear()
        _snapshot = snapshot
    return snapshot


def _resolve(
    snapshot: data_snapshot.DataSnapshot, prices_id: str, model: str
) -> tuple[gp.Provider, gp.ModelInfo] | None:
    """The same lookup as `DataSnapshot.find_provider_model`, without its unbounded caches."""
    ref = model.lower()
    gp_provider: gp.Provider | None = None
    if prices_id:
        gp_provider = data_snapshot.find_provider_by_id(snapshot.providers, prices_id)
    else:
        for candidate in snapshot.providers:
            if candidate.model_match is not None and candidate.model_match.is_match(ref):
                gp_provider = candidate
                break
    if gp_provider is None:
        return None
    info = gp_provider.find_model(ref, all_providers=snapshot.providers)
    return None if info is None else (gp_provider, info)


def _genai_values(usage: Usage, model_price: gp.ModelPrice) -> dict[str, int]:
    """Our Usage in genai-prices' usage keys (reported values only).

    Both conventions agree: input includes cache reads and writes (and input audio), output
    includes reasoning (and output audio), so the fields map one to one.
    """
    values = {
        key: value
        for key, value in (
            ("input_tokens", usage.input_tokens),
            ("output_tokens", usage.output_tokens),
            ("cache_read_tokens", usage.cache_read_tokens),
            ("cache_write_tokens", usage.cache_write_tokens),
            ("output_reasoning_tokens", usage.reasoning_tokens),
            ("input_audio_tokens", usage.audio_input_tokens),
            ("output_audio_tokens", usage.audio_output_tokens),
            ("cache_write_1h_tokens", usage.cache_write_1h_tokens),
        )
        if value is not None
    }
    cached, audio = values.get("cache_read_tokens", 0), values.get("input_audio_tokens", 0)
    if cached and audio and getattr(model_price, "cache_audio_read_mtok", None) is not None:
        # Models that price cached audio (Gemini Flash) need to know how much of the cache read
        # was audio, which the record does not keep, and genai-prices refuses to guess. It is
        # exact when the bounds meet (all input cached, or all input audio); otherwise
        # genai-prices raises and the cost stays unknown rather than made up.
        low = max(0, cached + audio - values["input_tokens"])
        high = min(cached, audio)
        if low == high:
            values["cache_audio_read_tokens"] = low
    return values


def _plan_for(model_price: gp.ModelPrice, info: gp.ModelInfo) -> Plan | None:
    entry = _plans.get(id(model_price))
    # Entries keep their price set: an id() can only be reused once that object is gone.
    if entry is not _MISSING and entry[0] is model_price:
        cached: Plan | None = entry[1]
        return cached
    plan = compile_plan(model_price, info.id)
    _plans.put(id(model_price), (model_price, plan))
    return plan
