"""Settings, read once at start-up from the environment (the CLI sets the same variables)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from .aws.layout import DEFAULT_INDEX_DAYS, ENV_HOURLY_TTL_DAYS, ENV_INDEX_DAYS
from .keys.file import RELOAD_INTERVAL_S
from .providers.registry import PROVIDERS
from .rollups import DEFAULT_HOURLY_TTL_DAYS

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
# Response bytes kept for the record (beyond, a body is stored truncated and said so in parse_error).
# A limit of its own: responses are not bounded by what a Function URL accepts as a request.
MAX_CAPTURE_BYTES = 64 * 1024 * 1024
BODY_INLINE_MAX = 256 * 1024
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0
# A request's headers, then its whole body, must arrive within these (slowloris). The body's
# allowance is generous: 64 MB of base64 images over a slow uplink still fits.
HEADER_TIMEOUT_S = 30.0
BODY_TIMEOUT_S = 120.0
# Request head (request line and headers) limits, enforced by relaylog.http_server under uvicorn.
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
    # A host named by the path ("{resource}") is allowed as a wildcard where the allow-list can say
    # it (`*.openai.azure.com`); Bedrock's regional hosts cannot be, and are listed by the operator.
    hosts = [p.origin.split("://", 1)[1] for p in PROVIDERS.values()]
    return tuple(h.replace("{resource}", "*") for h in hosts if "{resource}" not in h[1:])


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
    max_capture_bytes: int = MAX_CAPTURE_BYTES
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
    # How often a running server looks at keys.json for keys created or revoked by another process.
    key_reload_s: float = RELOAD_INTERVAL_S
    # Spans to an OpenTelemetry collector; None (the default) unless an OTLP endpoint is set.
    otel: OtelSettings | None = None

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
                frozenset(p.strip() for p in stream_usage.split(",") if p.strip()) if stream_usage is not None else None
            ),
            max_request_bytes=_env_int(
                "RELAYLOG_MAX_REQUEST_BYTES", LAMBDA_MAX_REQUEST_BYTES if on_lambda else MAX_REQUEST_BYTES
            ),
            max_capture_bytes=_env_int("RELAYLOG_MAX_CAPTURE_BYTES", MAX_CAPTURE_BYTES),
            body_inline_max=_env_int("RELAYLOG_BODY_INLINE_MAX", BODY_INLINE_MAX),
            connect_timeout_s=_env_float("RELAYLOG_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S),
            read_timeout_s=_env_float("RELAYLOG_READ_TIMEOUT", READ_TIMEOUT_S),
            header_timeout_s=_env_float("RELAYLOG_HEADER_TIMEOUT", HEADER_TIMEOUT_S),
            body_timeout_s=_env_float("RELAYLOG_BODY_TIMEOUT", BODY_TIMEOUT_S),
            max_header_bytes=_env_int("RELAYLOG_MAX_HEADER_BYTES", MAX_HEADER_BYTES),
            max_header_count=_env_int("RELAYLOG_MAX_HEADER_COUNT", MAX_HEADER_COUNT),
            otel=otel_from_env(env),
        )

    def injects_stream_usage(self, provider: str) -> bool:
        if self.stream_usage_providers is not None:
            return provider in self.stream_usage_providers
        known = PROVIDERS.get(provider)
        return known is not None and known.stream_usage


# -- the `relaylog` command and the query back end on AWS ---------------------------------------

DATA_DIR_ENV = "RELAYLOG_DATA_DIR"
KEY_ENV = "RELAYLOG_KEY"
DEFAULT_DATA_DIR = Path("relaylog-data")


@dataclass(frozen=True, slots=True)
class CommandSettings:
    """What the `relaylog` command takes from the environment when its options do not say."""

    data_dir: Path = DEFAULT_DATA_DIR
    key: str | None = None  # the relaylog key `relaylog verify` sends; never shown

    @classmethod
    def from_env(cls) -> CommandSettings:
        env = os.environ
        return cls(data_dir=Path(env.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR), key=env.get(KEY_ENV) or None)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long the stack keeps what the query back end reads: the request index and the hourly
    rollups (the template's IndexRetentionDays and HourlyRollupDays, set on its functions)."""

    index_days: int = DEFAULT_INDEX_DAYS
    hourly_rollup_days: int = DEFAULT_HOURLY_TTL_DAYS

    @classmethod
    def from_env(cls) -> Retention:
        return cls(
            index_days=_env_int(ENV_INDEX_DAYS, DEFAULT_INDEX_DAYS),
            hourly_rollup_days=_env_int(ENV_HOURLY_TTL_DAYS, DEFAULT_HOURLY_TTL_DAYS),
        )


# -- OpenTelemetry export (relaylog.otel) ----------------------------------------------------------
# The standard OTel SDK variables (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/
# and https://opentelemetry.io/docs/specs/otel/protocol/exporter/), read here and nowhere else.

OtlpProtocol = Literal["http/protobuf", "grpc"]
OtlpCompression = Literal["gzip", "none"]
_PROTOCOLS: tuple[OtlpProtocol, ...] = ("http/protobuf", "grpc")
_COMPRESSIONS: tuple[OtlpCompression, ...] = ("gzip", "none")
# OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT values that put content on spans (the GenAI
# instrumentations' switch; relaylog records content on span attributes, never as log events).
_CAPTURE_ON = frozenset({"true", "1", "span_only", "span_and_event"})
_CAPTURE_OFF = frozenset({"", "false", "0", "no_content", "event_only"})


@dataclass(frozen=True, slots=True)
class OtelSettings:
    # http/protobuf: the URL spans are POSTed to (…/v1/traces); grpc: the collector's URL.
    endpoint: str
    protocol: OtlpProtocol = "http/protobuf"
    # Sent with every export (API keys of hosted backends): never logged.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    timeout_s: float = 10.0
    compression: OtlpCompression = "none"
    # gRPC without TLS; None lets the endpoint's scheme decide (http:// is plain text).
    insecure: bool | None = None
    service_name: str = "relaylog"
    resource: tuple[tuple[str, str], ...] = ()
    # Prompt and completion text as gen_ai.input.messages / gen_ai.output.messages (opt-in).
    capture_content: bool = False
    # Longest string attribute value; longer ones are cut (None: no limit, the spec's default).
    max_value_chars: int | None = None
    # Spans waiting for export; more are dropped (counted), the relay never waits.
    queue_size: int = 2048
    batch_size: int = 512
    # Longest a span waits for its batch to fill before being sent anyway.
    schedule_delay_s: float = 5.0
    # parentbased_always_on: a caller's unsampled trace stays unsampled; always_on: every call.
    follow_parent_sampling: bool = True


def otel_from_env(env: Mapping[str, str]) -> OtelSettings | None:
    """Span export settings, or None when no OTLP endpoint is set (or the SDK is disabled)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter == "none":
        return None
    if exporter != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter!r}: relaylog exports spans only over OTLP (otlp, none)")
    protocol = _signal(env, "PROTOCOL") or "http/protobuf"
    if protocol not in _PROTOCOLS:
        raise ValueError(f"OTLP protocol {protocol!r} is not supported: use one of {', '.join(_PROTOCOLS)}")
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if not endpoint:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if not base:
            return None
        # The signal path is appended to the generic endpoint for HTTP only; gRPC takes it as it is.
        endpoint = f"{base.rstrip('/')}/v1/traces" if protocol == "http/protobuf" else base
    compression = _signal(env, "COMPRESSION") or "none"
    if compression not in _COMPRESSIONS:
        raise ValueError(f"OTLP compression {compression!r} is not supported: use gzip or none")
    insecure = _signal(env, "INSECURE")
    sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if sampler not in ("parentbased_always_on", "always_on"):
        raise ValueError(f"OTEL_TRACES_SAMPLER={sampler!r}: relaylog supports parentbased_always_on, always_on")
    capture = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower()
    if capture not in _CAPTURE_ON | _CAPTURE_OFF:
        raise ValueError(f"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT={capture!r}: use true or false")
    resource = _key_values(env, "OTEL_RESOURCE_ATTRIBUTES")
    # OTEL_SERVICE_NAME wins over a service.name in OTEL_RESOURCE_ATTRIBUTES.
    service = env.get("OTEL_SERVICE_NAME", "").strip() or dict(resource).get("service.name") or "relaylog"
    limit = env.get("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT") or env.get("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")
    # Generic headers first, the traces-only ones override them name by name.
    headers = dict(_key_values(env, "OTEL_EXPORTER_OTLP_HEADERS"))
    headers.update(_key_values(env, "OTEL_EXPORTER_OTLP_TRACES_HEADERS"))
    return OtelSettings(
        endpoint=endpoint,
        protocol=protocol,
        headers=tuple(headers.items()),
        # The spec gives OTLP timeouts in milliseconds.
        timeout_s=float(_signal(env, "TIMEOUT") or 10_000) / 1000.0,
        compression=compression,
        insecure=None if not insecure else insecure == "true",
        service_name=service,
        resource=tuple((k, v) for k, v in resource if k != "service.name"),
        capture_content=capture in _CAPTURE_ON,
        max_value_chars=int(limit) if limit else None,
        queue_size=int(env.get("OTEL_BSP_MAX_QUEUE_SIZE") or 2048),
        batch_size=int(env.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or 512),
        schedule_delay_s=float(env.get("OTEL_BSP_SCHEDULE_DELAY") or 5000) / 1000.0,
        follow_parent_sampling=sampler == "parentbased_always_on",
    )


def _signal(env: Mapping[str, str], name: str) -> str:
    """OTEL_EXPORTER_OTLP_TRACES_<name>, else OTEL_EXPORTER_OTLP_<name>, lower-cased."""
    value = env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}") or ""
    return value.strip().lower()


def _key_values(env: Mapping[str, str], name: str) -> list[tuple[str, str]]:
    """`k1=v1,k2=v2` with percent-encoded values (the W3C Baggage format the spec uses)."""
    pairs: list[tuple[str, str]] = []
    for number, item in enumerate(env.get(name, "").split(","), start=1):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # The entry itself is not quoted: header values are often API keys.
            raise ValueError(f"{name}: entry {number} is not key=value")
        pairs.append((unquote(key.strip()), unquote(value.strip())))
    return pairs
