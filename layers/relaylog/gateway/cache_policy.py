"""Helicone-Cache-* headers: whether, for how long and under which key a response is cached."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import orjson

DEFAULT_TTL_S = 7 * 24 * 3600
MAX_TTL_S = 365 * 24 * 3600
MAX_BUCKET_SIZE = 20
_MAX_AGE = re.compile(r"(?:^|[,\s])(?:s-maxage|max-age)\s*=\s*(\d+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    ttl_s: int = DEFAULT_TTL_S
    bucket_size: int = 1
    seed: str | None = None
    ignore_keys: tuple[str, ...] = ()
    # Replay a cached stream with the gaps between chunks it had when first received.
    original_timing: bool = False


def read_cache(raw: dict[str, str], upstream_headers: list[tuple[str, str]]) -> CachePolicy:
    cache_control = next((value for name, value in upstream_headers if name == "cache-control"), None)
    return CachePolicy(
        ttl_s=_ttl(cache_control),
        bucket_size=_bucket_size(raw.get("cache-bucket-max-size")),
        seed=raw.get("cache-seed") or None,
        ignore_keys=_ignore_keys(raw.get("cache-ignore-keys")),
        original_timing=_timing(raw.get("cache-stream-timing")),
    )


def _ttl(cache_control: str | None) -> int:
    if cache_control is None:
        return DEFAULT_TTL_S
    found = _MAX_AGE.search(cache_control)
    if found is None:
        return DEFAULT_TTL_S
    # Helicone caps the age rather than refusing it; so does relaylog.
    return min(int(found.group(1)), MAX_TTL_S)


def _bucket_size(value: str | None) -> int:
    if value is None:
        return 1
    text = value.strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_BUCKET_SIZE:
        raise ValueError(f"Helicone-Cache-Bucket-Max-Size must be a whole number from 1 to {MAX_BUCKET_SIZE}")
    return int(text)


def _ignore_keys(value: str | None) -> tuple[str, ...]:
    """A JSON array of names or a comma-separated list."""
    if value is None or not value.strip():
        return ()
    text = value.strip()
    if text.startswith("["):
        try:
            names = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ValueError("Helicone-Cache-Ignore-Keys is not a valid JSON array") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("Helicone-Cache-Ignore-Keys must be an array of strings")
        return tuple(names)
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _timing(value: str | None) -> bool:
    if value is None:
        return False
    text = value.strip().lower()
    if text not in ("original", "none", "fast"):
        raise ValueError("Helicone-Cache-Stream-Timing must be 'original' or 'none'")
    return text == "original"


def cache_key(
    policy: CachePolicy,
    *,
    tenant: str,
    provider: str,
    method: str,
    url: str,
    accept_encoding: str | None,
    body: bytes,
) -> str:
    """The hash entries are stored under. `tenant` keeps callers with different keys apart."""
    digest = hashlib.sha256()
    for part in (tenant, provider, method, url, accept_encoding or "", policy.seed or ""):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    digest.update(_keyed_body(body, policy.ignore_keys))
    return digest.hexdigest()


def _keyed_body(body: bytes, ignore: tuple[str, ...]) -> bytes:
    if not ignore:
        return body
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body  # not JSON: nothing to leave out
    if not isinstance(parsed, dict):
        return body
    kept = {name: value for name, value in parsed.items() if name not in ignore}
    try:
        return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (it reads deeper)
        return body
