"""Helicone-Retry-*: how often and how patiently a failed provider call is tried again."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time

# Helicone's defaults.
DEFAULT_NUM = 5
DEFAULT_FACTOR = 2.0
DEFAULT_MIN_TIMEOUT_MS = 1000
DEFAULT_MAX_TIMEOUT_MS = 10000
MAX_NUM = 20


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    num: int = DEFAULT_NUM
    factor: float = DEFAULT_FACTOR
    min_timeout_ms: int = DEFAULT_MIN_TIMEOUT_MS
    max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS

    def delay_s(self, retry: int, retry_after_s: float | None) -> float | None:
        """Seconds to wait before retry number `retry` (0 for the first), or None to stop trying.

        Exponential backoff with "equal jitter" (half fixed, half random) keeps waits spread out
        without ever dropping to zero. A provider's retry-after is a floor; one longer than
        max-timeout means giving up, so the client gets the provider's answer now.
        """
        base = min(self.max_timeout_ms, self.min_timeout_ms * self.factor**retry) / 1000.0
        wait = base / 2 + random.uniform(0, base / 2)
        if retry_after_s is not None:
            if retry_after_s * 1000.0 > self.max_timeout_ms:
                return None
            wait = max(wait, retry_after_s)
        return wait


def retryable(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


def read_retry(raw: dict[str, str]) -> RetryPolicy:
    num = _number(raw, "retry-num", DEFAULT_NUM, 0, MAX_NUM, whole=True)
    factor = _number(raw, "retry-factor", DEFAULT_FACTOR, 1.0, 10.0)
    low = _number(raw, "retry-min-timeout", DEFAULT_MIN_TIMEOUT_MS, 0, 600_000, whole=True)
    high = _number(raw, "retry-max-timeout", DEFAULT_MAX_TIMEOUT_MS, 0, 600_000, whole=True)
    if high < low:
        raise ValueError("Helicone-Retry-Max-Timeout is smaller than Helicone-Retry-Min-Timeout")
    return RetryPolicy(int(num), float(factor), int(low), int(high))


def _number(raw: dict[str, str], name: str, default: float, low: float, high: float, *, whole: bool = False) -> float:
    text = raw.get(name)
    if text is None or not text.strip():
        return default
    header = "Helicone-" + "-".join(part.capitalize() for part in name.split("-"))
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise ValueError(f"{header} must be a {'whole ' if whole else ''}number, got {text[:40]!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{header} must be between {low:g} and {high:g}")
    return value


def retry_after_s(header: Callable[[bytes], str | None]) -> float | None:
    """The provider's requested wait: `retry-after-ms` (OpenAI), else `retry-after` (seconds or a
    date). `header` gives a response header's first value by its lower-case name."""
    millis = header(b"retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = header(b"retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time(), 0.0)
    except (TypeError, ValueError):
        return None
