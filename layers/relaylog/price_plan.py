"""Price plans: genai-prices' `ModelPrice.calc_price` compiled once per price set.

Why relaylog reimplements part of genai-prices, measured (`bench/cost.py`, distinct usages of
gpt-4o, claude-sonnet-4-5 and gemini-2.5-flash, on the 2-core VM this was written on while other
work kept it busy): `ModelPrice.calc_price` takes 150-260 µs per call, a plan 10-15 µs, and
relaylog's whole `price()` for a usage it has not seen 18-30 µs: 12-20 times less. relaylog
relays a call for about 300 µs of CPU (README, Performance), so the library's pricing alone would
add a third or more to what every call costs.
Profiled, the library's time goes to work that depends on the price set and on which usage keys
are reported, never on the counts: validating the priced units against each other, inferring
unreported units (pairs of units compared for compatibility on every call) and working out how
the units nest. genai-prices offers no way to do that once and keep it, so relaylog does.

A plan holds what `calc_price` works out again on every call: the priced units in genai-prices'
order, how they nest (cache reads inside input, audio inside input, ...) and which unreported
units genai-prices would refuse to infer. Pricing one usage is then a few integer subtractions
plus genai-prices' own `calc_unit_price` per unit: the same Decimal arithmetic, in the same order.
What a plan does not model is left to the library, and a plan that prices any probe usage
differently from `ModelPrice.calc_price` (say, after a genai-prices upgrade changed the rules) is
never used: tests/test_cost.py checks every model genai-prices knows against the library.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from itertools import combinations
from typing import Any

import genai_prices
from genai_prices import types as gp
from genai_prices.data_units import unit_data
from genai_prices.units import UnitDef, UnitRegistry
from genai_prices.validation import validate_priced_units

__all__ = ["Plan", "compile_plan"]

log = logging.getLogger(__name__)

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
class Plan:
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
        """The price of one usage (genai-prices' usage keys); ValueError where calc_price raises."""
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


def compile_plan(model_price: gp.ModelPrice, name: str) -> Plan | None:
    """The plan for one price set of the model `name`, or None (the library prices it then): when
    the price set has something a plan does not model, or the plan disagrees with genai-prices on
    a probe usage. Never raises."""
    try:
        plan = _build(model_price)
        if plan is not None and not _agrees(plan, model_price):
            log.warning("relaylog cost: fast pricing disagrees with genai-prices for %s", name)
            return None
    except Exception:
        return None
    return plan


def _build(model_price: gp.ModelPrice) -> Plan | None:
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
    leaves = tuple((unit.usage_key, tuple(d.usage_key for d in ordered if _is_below(unit, d))) for unit in ordered)
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
    return Plan(
        units=tuple((unit.usage_key, value, unit.per) for unit, value in priced),
        leaves=leaves,
        inferred=tuple(inferred),
        tiered=any(isinstance(value, gp.TieredPrices) for _, value in priced),
    )


def _agrees(plan: Plan, model_price: gp.ModelPrice) -> bool:
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
