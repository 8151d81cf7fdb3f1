"""Reading fields out of provider JSON that may be any shape: never trust, never raise."""

from __future__ import annotations

from typing import Any


def count(value: Any) -> int | None:
    """A token count as reported; anything else (bool, negative, text) is unknown."""
    if type(value) is int:
        return value if value >= 0 else None
    if type(value) is float and value.is_integer() and value >= 0:
        return int(value)
    return None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def text(obj: dict[str, Any], key: str) -> str | None:
    """A non-empty string field; empty means not reported (Azure sends `"model": ""`)."""
    value = obj.get(key)
    return value if isinstance(value, str) and value else None
