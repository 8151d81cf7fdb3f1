"""Helicone-Fallbacks: an ordered list of targets, each tried when the one before it failed.

    [{"target-url": "https://api.openai.com", "headers": {"authorization": "Bearer ..."},
      "onCodes": [429, {"from": 500, "to": 599}], "bodyKeyOverride": {"model": "gpt-4o-mini"}}, ...]

As in Helicone's gateway the list is the whole plan: entry 0 is called first and the request's
own path (after its provider prefix) is appended to each target-url. `onCodes` of an entry says
which of its answers move on to the next entry; a connection failure or timeout always does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

MAX_FALLBACKS = 10
# Used when an entry has no onCodes: the answers that say "try elsewhere".
DEFAULT_ON_CODES: tuple[tuple[int, int], ...] = ((429, 429), (500, 599))
# What aiohttp refuses to write in a header value (it raises): refused here, when it can be named.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# orjson writes at most 254 levels; a body override deeper than this is not a real one.
_MAX_OVERRIDE_DEPTH = 32
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class Fallback:
    target_url: str
    # Lower-cased names; each replaces the client's header of the same name for this target.
    headers: tuple[tuple[str, str], ...] = ()
    on_codes: tuple[tuple[int, int], ...] = DEFAULT_ON_CODES
    body_override: dict[str, Any] | None = field(default=None, hash=False, compare=False)

    def falls_through(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.on_codes)


def read_fallbacks(text: str) -> tuple[Fallback, ...]:
    try:
        entries = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("Helicone-Fallbacks is not valid JSON") from None
    if not isinstance(entries, list) or not entries:
        raise ValueError("Helicone-Fallbacks must be a non-empty JSON array")
    if len(entries) > MAX_FALLBACKS:
        raise ValueError(f"Helicone-Fallbacks may list at most {MAX_FALLBACKS} targets")
    return tuple(_entry(i, entry) for i, entry in enumerate(entries))


def _entry(index: int, entry: object) -> Fallback:
    where = f"Helicone-Fallbacks[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be an object")
    url = entry.get("target-url", entry.get("targetUrl"))
    if not isinstance(url, str) or not url:
        raise ValueError(f'{where} needs a "target-url" string')
    headers = entry.get("headers", {})
    if not isinstance(headers, dict):
        raise ValueError(f"{where}.headers must be an object of strings")
    pairs = []
    for name, value in headers.items():
        if not isinstance(value, str) or not name or not set(name) <= _TOKEN:
            raise ValueError(f"{where}.headers has an invalid header {str(name)[:40]!r}")
        if _CONTROL.search(value):
            raise ValueError(f"{where}.headers[{name!r}] contains a line break or control character")
        if name.lower().startswith("helicone-") or name.lower() in ("host", "content-length", "transfer-encoding"):
            raise ValueError(f"{where}.headers may not set {name!r}")
        pairs.append((name.lower(), value))
    override = entry.get("bodyKeyOverride")
    if override is not None and not isinstance(override, dict):
        raise ValueError(f"{where}.bodyKeyOverride must be an object")
    if override is not None and _depth(override) > _MAX_OVERRIDE_DEPTH:
        raise ValueError(f"{where}.bodyKeyOverride is nested more than {_MAX_OVERRIDE_DEPTH} levels deep")
    codes = entry.get("onCodes")
    return Fallback(url, tuple(pairs), _codes(where, codes) if codes is not None else DEFAULT_ON_CODES, override)


def _codes(where: str, codes: object) -> tuple[tuple[int, int], ...]:
    if not isinstance(codes, list):
        raise ValueError(f"{where}.onCodes must be an array")
    ranges = []
    for code in codes:
        if isinstance(code, int) and not isinstance(code, bool):
            low = high = code
        elif isinstance(code, dict) and isinstance(code.get("from"), int) and isinstance(code.get("to"), int):
            low, high = code["from"], code["to"]
        else:
            raise ValueError(f'{where}.onCodes entries are status numbers or {{"from": N, "to": M}}')
        if not 100 <= low <= high <= 599:
            raise ValueError(f"{where}.onCodes has an impossible status range {low}-{high}")
        ranges.append((low, high))
    return tuple(ranges)


def _depth(value: object) -> int:
    """Nesting depth of a decoded JSON value, without recursion (orjson reads up to 1024 levels)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def override_body(body: bytes, override: dict[str, Any] | None) -> bytes:
    """The body with `override`'s keys merged in (objects merged key by key, anything else replaced).
    ValueError when the body is too deeply nested to write back (orjson writes 254 levels, reads 1024)."""
    if not override:
        return body
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(parsed, dict):
        return body
    try:
        return orjson.dumps(_merge(parsed, override))
    except orjson.JSONEncodeError:
        raise ValueError("the request body is nested too deeply to apply a bodyKeyOverride to") from None


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for name, value in changes.items():
        current = merged.get(name)
        merged[name] = _merge(current, value) if isinstance(current, dict) and isinstance(value, dict) else value
    return merged
