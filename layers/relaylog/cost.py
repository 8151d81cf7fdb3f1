"""Cost of a call in USD, from the genai-prices package.

genai-prices' `calc_price` costs 65-115 µs per call here (model lookup, price-set validation,
usage inference, Decimal arithmetic). relaylog prices thousands of records per second, and real
traffic rarely repeats a usage exactly, so caching results alone does not help much. This module:

- resolves (provider, model) once, in a bounded LRU. It calls genai-prices' own lookup functions
  but not `DataSnapshot.find_provider_model`, whose internal caches are unbounded and keyed by the
  model string, which clients choose freely;
- picks the price set in force at the request time on every call (`ModelInfo.get_prices`: cheap,
  and not cacheable by date alone because some prices change by time of day);
- turns each price set into a `_Plan` once: the priced units in genai-prices' order, how they nest
  (cache reads inside input, audio inside input, ...) and which unreported units genai-prices
  would refuse to infer. Pricing one usage is then a few integer subtractions plus genai-prices'
  own `calc_unit_price` per unit, the same Decimal arithmetic in the same order. Each plan is
  checked against genai-prices' `ModelPrice.calc_price` on probe usages before use; a plan that
  disagrees (say, after a genai-prices upgrade changed the rules) is not used and the library
  prices every call;
- caches results per (price set, provider, usage) in a bounded LRU.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import combinations
from typing import Any

import genai_prices
from genai_prices import data_snapshot
from genai_prices import types as gp
from genai_prices.data_units import unit_data
from genai_prices.units import UnitDef, UnitRegistry
from genai_prices.validation import validate_priced_units

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
    """A small thread-safe LRU (price() may be called from worker threads)."""

    __slots__ = ("_data", "_lock", "_max")

    def __init__(self, maxsize: int) -> None:
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._max = maxsize

    def get(self, key: Hashable) -> Any:
        with self._lock:
            value = self._data.get(key, _MISSING)
            if value is not _MISSING:
                self._data.move_to_end(key)
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
_plans = _LRU(1024)  # id(ModelPrice) -> (ModelPrice, _Plan | None)
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
        return _price(usage, model, provider.prices_id, at or datetime.now(tz=UTC))
    except Exception as exc:
        # Inconsistent usage (e.g. more cached than input tokens) or bad price data. The model
        # name and exception type only: no request content, no credentials.
        log.debug("cannot price model %r: %s", model[:80], type(exc).__name__)
        return None, UNKNOWN_MODEL


def _price(usage: Usage, model: str, prices_id: str, at: datetime) -> tuple[float | None, str]:
    snapshot = _current_snapshot()
    resolved = _models.get((prices_id, model))
    if resolved is _MISSING:
        resolved = _resolve(snapshot, prices_id, model)
        _models.put((prices_id, model), resolved)
    if resolved is None:
        return None, UNKNOWN_MODEL
    gp_provider, info = resolved

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
            genai_prices.Usage(**values), gp_provider, genai_request_timestamp=at
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


# ---------------------------------------------------------------------------------------------
# Plans: genai-prices' ModelPrice.calc_price, with the per-price-set work done once.

_REGISTRY = UnitRegistry(unit_data)
_REPORTABLE = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_reasoning_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "cache_audio_read_tokens",
    "cache_write_1h_tokens",
)
_PLANNED = frozenset(_REPORTABLE)
# Usages a new plan must price exactly like genai-prices (or fail like it) before it is used.
_PROBES: tuple[dict[str, int], ...] = (
    {"input_tokens": 1_000, "output_tokens": 10},
    {"input_tokens": 0, "output_tokens": 0},
    {"input_tokens": 300_123, "output_tokens": 2_345, "cache_read_tokens": 100_000},
    {
        "input_tokens": 57_001,
        "output_tokens": 9_007,
        "cache_read_tokens": 20_011,
        "cache_write_tokens": 7_003,
        "output_reasoning_tokens": 4_001,
        "input_audio_tokens": 3_001,
        "output_audio_tokens": 1_009,
    },
    {
        "input_tokens": 9_000,
        "output_tokens": 500,
        "cache_read_tokens": 9_000,
        "input_audio_tokens": 4_000,
        "cache_audio_read_tokens": 4_000,
    },
    {
        "input_tokens": 45_000,
        "output_tokens": 700,
        "cache_read_tokens": 10_000,
        "cache_write_tokens": 30_000,
        "cache_write_1h_tokens": 12_000,
    },
    {"input_tokens": 100, "output_tokens": 5, "cache_read_tokens": 200},  # invalid: must fail
)


def _is_below(ancestor: UnitDef, unit: UnitDef) -> bool:
    return ancestor is not unit and ancestor.dimensions.items() <= unit.dimensions.items()


@dataclass(frozen=True, slots=True)
class _Plan:
    # (usage key, price, per) in the order genai-prices adds unit prices up.
    units: tuple[tuple[str, Decimal | gp.TieredPrices, int], ...]
    # (usage key, priced descendants' keys), most specific first: leaf counts by subtraction.
    leaves: tuple[tuple[str, tuple[str, ...]], ...]
    # Priced keys we may not report: (key, reportable descendants, reportable pairs that join to
    # it). genai-prices infers 0 for them unless one of those is reported non-zero, then it raises.
    inferred: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]], ...]
    tiered: bool

    def accepts(self, values: dict[str, Any]) -> bool:
        # Plain non-negative ints of the units plans are checked on; anything else goes to the
        # library.
        return all(k in _PLANNED and type(v) is int and v >= 0 for k, v in values.items())

    def total(self, values: dict[str, int]) -> Decimal:
        counts = dict(values)
        for key, below, pairs in self.inferred:
            if key in counts:
                continue
            if any(counts.get(k, 0) > 0 for k in below) or any(
                counts.get(a, 0) > 0 and counts.get(b, 0) > 0 for a, b in pairs
            ):
                raise ValueError(f"Missing usage for {key}")
        leaf: dict[str, int] = {"requests": 1}
        for key, below in self.leaves:
            n = counts.get(key, 0) - sum(leaf[k] for k in below)
            if n < 0:
                raise ValueError(f"Invalid usage data for {key}")
            leaf[key] = n
        total_input = counts.get("input_tokens", 0) if self.tiered else 0
        total = Decimal(0)
        for key, unit_price, per in self.units:
            total += gp.calc_unit_price(unit_price, leaf[key], total_input, per)
        return total


def _plan_for(model_price: gp.ModelPrice, info: gp.ModelInfo) -> _Plan | None:
    entry = _plans.get(id(model_price))
    if entry is not _MISSING and entry[0] is model_price:
        cached: _Plan | None = entry[1]
        return cached
    plan: _Plan | None
    try:
        plan = _build_plan(model_price)
        if plan is not None and not _agrees(plan, model_price):
            log.warning("relaylog cost: fast pricing disagrees with genai-prices for %s", info.id)
            plan = None
    except Exception:
        plan = None
    _plans.put(id(model_price), (model_price, plan))
    return plan


def _build_plan(model_price: gp.ModelPrice) -> _Plan | None:
    units_by_price_key = {unit.price_key: unit for unit in _REGISTRY.units.values()}
    priced: list[tuple[UnitDef, Decimal | gp.TieredPrices]] = []
    for price_key, value in vars(model_price).items():
        if price_key.startswith("_") or value is None:
            continue
        unit = units_by_price_key.get(price_key)
        if unit is None or not isinstance(value, Decimal | gp.TieredPrices):
            return None  # something this plan does not model: leave it to the library
        priced.append((unit, value))
    validate_priced_units(tuple(unit for unit, _ in priced), _REGISTRY)

    # Everything but "requests" is counted from the usage (a request counts once).
    counted = [unit for unit, _ in priced if unit.usage_key != "requests"]
    ordered = sorted(counted, key=lambda u: (-len(u.dimensions), u.usage_key))
    leaves = tuple(
        (unit.usage_key, tuple(d.usage_key for d in ordered if _is_below(unit, d)))
        for unit in ordered
    )
    reportable = [_REGISTRY.units[key] for key in _REPORTABLE]
    inferred = []
    for unit in counted:  # any of them may be unreported in a given usage
        below = tuple(r.usage_key for r in reportable if _is_below(unit, r))
        pairs = tuple(
            (a.usage_key, b.usage_key)
            for a, b in combinations(reportable, 2)
            if a.is_compatible_with(b)
            and not (_is_below(a, b) or _is_below(b, a))
            and dict(unit.dimensions) == {**a.dimensions, **b.dimensions}
        )
        inferred.append((unit.usage_key, below, pairs))
    return _Plan(
        units=tuple((unit.usage_key, value, unit.per) for unit, value in priced),
        leaves=leaves,
        inferred=tuple(inferred),
        tiered=any(isinstance(value, gp.TieredPrices) for _, value in priced),
    )


def _agrees(plan: _Plan, model_price: gp.ModelPrice) -> bool:
    for values in _PROBES:
        try:
            usage = genai_prices.Usage(**values)
            expected: Decimal | None = model_price.calc_price(usage)["total_price"]
        except ValueError:
            expected = None
        try:
            got: Decimal | None = plan.total(values)
        except ValueError:
            got = None
        if got != expected:
            return False
    return True
