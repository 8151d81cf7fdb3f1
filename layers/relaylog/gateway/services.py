"""The stores the gateway features need, made once at start-up by the local server or the proxy function."""

from __future__ import annotations

from dataclasses import dataclass

from .cache import CacheStore
from .counters import CounterStore


@dataclass(frozen=True, slots=True)
class Services:
    cache: CacheStore
    counters: CounterStore
