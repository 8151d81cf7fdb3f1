"""Helicone-RateLimit-Policy: "quota;w=seconds[;u=request|cents][;s=user|<property>]".

Windows are fixed and aligned to multiples of w since the epoch, so every process and every
Lambda instance agrees on which counter a call belongs to without talking to each other; the
counter itself lives in a CounterStore whose `take` is atomic (SQLite locally, a DynamoDB
conditional update on AWS). Requests are counted before the call; cents are checked before it
and deducted afterwards with the call's real cost.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Literal

from .counters import CounterStore

Unit = Literal["request", "cents"]
MAX_WINDOW_S = 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class RatePolicy:
    quota: float
    window_s: int
    unit: Unit = "request"
    # None: one counter for the caller; "user": one per Helicone-User-Id; else a property name.
    segment: str | None = None

    @property
    def text(self) -> str:
        parts = [f"{self.quota:g}", f"w={self.window_s}", f"u={self.unit}"]
        if self.segment is not None:
            parts.append(f"s={self.segment}")
        return ";".join(parts)


def parse_policy(text: str) -> RatePolicy:
    """Parse a policy string; ValueError names the part that is wrong."""
    parts = [part.strip() for part in text.split(";")]
    if not parts[0]:
        raise ValueError('Helicone-RateLimit-Policy needs a quota first, e.g. "100;w=60"')
    try:
        quota = float(parts[0])
    except ValueError:
        raise ValueError(f"Helicone-RateLimit-Policy quota {parts[0][:40]!r} is not a number") from None
    if not math.isfinite(quota) or quota <= 0:
        raise ValueError("Helicone-RateLimit-Policy quota must be greater than 0")
    options: dict[str, str] = {}
    for part in parts[1:]:
        if not part:
            continue
        name, equals, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not equals or not value:
            raise ValueError(f"Helicone-RateLimit-Policy part {part[:40]!r} is not name=value")
        if name not in ("w", "u", "s"):
            raise ValueError(f"Helicone-RateLimit-Policy has an unknown parameter {name[:20]!r} (known: w, u, s)")
        if name in options:
            raise ValueError(f"Helicone-RateLimit-Policy gives {name!r} twice")
        options[name] = value
    if "w" not in options:
        raise ValueError('Helicone-RateLimit-Policy needs a window, e.g. "w=60" for 60 seconds')
    window = options["w"]
    if not window.isdigit() or not 1 <= int(window) <= MAX_WINDOW_S:
        raise ValueError(
            f"Helicone-RateLimit-Policy window w={window[:20]} must be whole seconds from 1 to {MAX_WINDOW_S}"
        )
    unit = options.get("u", "request").lower()
    if unit not in ("request", "cents"):
        raise ValueError(f"Helicone-RateLimit-Policy unit u={unit[:20]} must be 'request' or 'cents'")
    if unit == "request" and quota != int(quota):
        raise ValueError("Helicone-RateLimit-Policy quota must be a whole number of requests")
    segment = options.get("s")
    return RatePolicy(quota, int(window), "cents" if unit == "cents" else "request", segment)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: RatePolicy
    remaining: float
    reset_s: int
    # The counter a cents policy deducts the call's cost from afterwards (None for requests).
    counter: str | None = None
    expires_at: float = 0.0

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"helicone-ratelimit-limit", f"{self.policy.quota:g}".encode()),
            (b"helicone-ratelimit-remaining", f"{max(self.remaining, 0):g}".encode()),
            (b"helicone-ratelimit-policy", self.policy.text.encode()),
            (b"helicone-ratelimit-reset", str(self.reset_s).encode()),
        ]


class RateLimiter:
    def __init__(self, store: CounterStore) -> None:
        self.store = store

    async def check(self, policy: RatePolicy, scope: str, segment_value: str | None) -> Decision:
        now = time.time()
        start = math.floor(now / policy.window_s) * policy.window_s
        end = start + policy.window_s
        name = hashlib.sha256(f"{scope}\0{policy.text}\0{segment_value or ''}".encode("utf-8", "surrogatepass"))
        counter = f"{name.hexdigest()[:40]}:{start}"
        expires_at = end + 60.0  # kept a little past the window so late deductions still land
        amount = 1.0 if policy.unit == "request" else 0.0
        allowed, used = await self.store.take(counter, amount, policy.quota, expires_at)
        return Decision(
            allowed=allowed,
            policy=policy,
            remaining=policy.quota - used,
            reset_s=max(math.ceil(end - now), 1),
            counter=counter if policy.unit == "cents" else None,
            expires_at=expires_at,
        )

    def deduct(self, decision: Decision, cost_usd: float | None) -> None:
        if decision.counter is not None and decision.allowed and cost_usd:
            self.store.add(decision.counter, cost_usd * 100.0, decision.expires_at)


def segment_value(policy: RatePolicy, user: str | None, properties: dict[str, str]) -> str | None:
    """The value a segmented policy counts under; calls without it share one counter."""
    if policy.segment is None:
        return None
    if policy.segment.lower() == "user":
        return user
    wanted = policy.segment.lower()
    return next((value for name, value in properties.items() if name.lower() == wanted), None)
