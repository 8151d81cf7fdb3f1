"""Settings, read once at start-up from the environment (the CLI sets the same variables)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .providers.registry import PROVIDERS

MAX_REQUEST_BYTES = 64 * 1024 * 1024
# On Lambda a request arrives as one Function URL event of at most 6 MB, Lambda's MB being 1,024 KB
# (docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html); the Function URL refuses a
# larger one before relaylog runs. The event's context and headers take at least ~1 KB of that (968
# bytes for a bare POST in the tests' emulator), so no larger body can arrive: the default there.
# Binary bodies arrive base64-encoded (4/3 the size) and JSON bodies with their quotes escaped, so
# theirs is lower still, and only the Function URL can tell: it answers 413 and relaylog sees nothing.
FUNCTION_URL_PAYLOAD_BYTES = 6 * 1024 * 1024
FUNCTION_URL_ENVELOPE_BYTES = 1024
LAMBDA_MAX_REQUEST_BYTES = FUNCTION_URL_PAYLOAD_BYTES - FUNCTION_URL_ENVELOPE_BYTES
BODY_INLINE_MAX = 256 * 1024
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0
# A request's headers, then its whole body, must arrive within these (slowloris). The body's
# allowance is generous: 64 MB of base64 images over a slow uplink still fits.
HEADER_TIMEOUT_S = 30.0
BODY_TIMEOUT_S = 120.0
# Request head (request line and headers) limits, enforced by relaylog.http_guard under uvicorn.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_COUNT = 200


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


def _default_allowlist() -> tuple[str, ...]:
    # Every known provider's own host is a fair Helicone-Target-Url; nothing else unless configured.
    hosts = [p.origin.split("://", 1)[1] for p in PROVIDERS.values()]
    return tuple(h.replace("{resource}", "*") for h in hosts)


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path("relaylog-data")
    # Provider name -> origin replacing the provider's own (RELAYLOG_UPSTREAM_<PROVIDER>).
    upstream_overrides: dict[str, str] = field(default_factory=dict)
    # Hosts (`host`, `host:port`, `*.domain`, `1.2.3.4[:port]`, `[::1][:port]`) that
    # Helicone-Target-Url and Helicone-Fallbacks may point at. A name is connected to only at public
    # addresses; an IP address (loopback and private ones too) only when listed itself.
    target_allowlist: tuple[str, ...] = field(default_factory=_default_allowlist)
    # Providers asked for stream usage when the client did not ask; None = the registry's choice.
    stream_usage_providers: frozenset[str] | None = None
    max_request_bytes: int = MAX_REQUEST_BYTES
    # Bodies larger than this go to a file referenced by *_body_ref instead of into the record.
    body_inline_max: int = BODY_INLINE_MAX
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    # Longest silence tolerated between two chunks from the provider; streams may last much longer.
    read_timeout_s: float = READ_TIMEOUT_S
    header_timeout_s: float = HEADER_TIMEOUT_S
    # From the request's arrival (its headers complete) to the last byte of its body.
    body_timeout_s: float = BODY_TIMEOUT_S
    max_header_bytes: int = MAX_HEADER_BYTES
    max_header_count: int = MAX_HEADER_COUNT

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        # Lambda sets AWS_LAMBDA_RUNTIME_API for every runtime (the streaming loop connects to it).
        on_lambda = bool(env.get("AWS_LAMBDA_RUNTIME_API"))
        overrides = {
            name: env[f"RELAYLOG_UPSTREAM_{name.upper()}"].rstrip("/")
            for name in PROVIDERS
            if env.get(f"RELAYLOG_UPSTREAM_{name.upper()}")
        }
        allow = env.get("RELAYLOG_TARGET_ALLOWLIST")
        stream_usage = env.get("RELAYLOG_STREAM_USAGE_PROVIDERS")
        return cls(
            data_dir=Path(env.get("RELAYLOG_DATA_DIR", "relaylog-data")),
            upstream_overrides=overrides,
            target_allowlist=(
                tuple(h.strip().lower() for h in allow.split(",") if h.strip())
                if allow is not None
                else _default_allowlist()
            ),
            stream_usage_providers=(
                frozenset(p.strip() for p in stream_usage.split(",") if p.strip())
                if stream_usage is not None
                else None
            ),
            max_request_bytes=_env_int(
                "RELAYLOG_MAX_REQUEST_BYTES", LAMBDA_MAX_REQUEST_BYTES if on_lambda else MAX_REQUEST_BYTES
            ),
            body_inline_max=_env_int("RELAYLOG_BODY_INLINE_MAX", BODY_INLINE_MAX),
            connect_timeout_s=_env_float("RELAYLOG_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S),
            read_timeout_s=_env_float("RELAYLOG_READ_TIMEOUT", READ_TIMEOUT_S),
            header_timeout_s=_env_float("RELAYLOG_HEADER_TIMEOUT", HEADER_TIMEOUT_S),
            body_timeout_s=_env_float("RELAYLOG_BODY_TIMEOUT", BODY_TIMEOUT_S),
            max_header_bytes=_env_int("RELAYLOG_MAX_HEADER_BYTES", MAX_HEADER_BYTES),
            max_header_count=_env_int("RELAYLOG_MAX_HEADER_COUNT", MAX_HEADER_COUNT),
        )

    def injects_stream_usage(self, provider: str) -> bool:
        if self.stream_usage_providers is not None:
            return provider in self.stream_usage_providers
        known = PROVIDERS.get(provider)
        return known is not None and known.stream_usage
