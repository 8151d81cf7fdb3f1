"""`--since` values: a span back from now (`30m`, `1h`, `7d`) or an ISO 8601 date or date-time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_SPAN = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """The UTC instant `text` names; a date or time without an offset is taken as UTC.

    Raises ValueError with a message fit for the user.
    """
    value = text.strip()
    span = _SPAN.fullmatch(value.lower())
    try:
        if span:
            delta = timedelta(**{_UNITS[span[2]]: int(span[1])})
            return (now or datetime.now(UTC)) - delta
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError):
        raise ValueError(
            f"expected a span like 30m, 1h, 7d or an ISO date/time like 2026-11-26 or"
            f" 2026-11-26T21:00:00Z, got {text!r}"
        ) from None
    # Record times are UTC, so a bare date or time means UTC too.
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
