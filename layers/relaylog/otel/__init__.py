"""Every call as an OpenTelemetry GenAI span, exported over OTLP off the hot path.

Importing this package costs nothing, and the relay process never imports the OpenTelemetry SDK:
locally, spans are built and sent by an exporter process (`pipe`, `worker`); `export` is what that
process (and, on AWS, the aggregator) runs.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..config import Settings
    from .pipe import SpanPipe


# Looked up as installed distributions: finding a module's spec would import its parent packages.
_NEEDED = ("opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http", "opentelemetry-exporter-otlp-proto-grpc")


def span_shipper(settings: Settings) -> SpanPipe | None:
    """The exporter process `settings` ask for, started; None when no OTLP endpoint is configured."""
    if settings.otel is None:
        return None
    # Checked here, so a missing extra stops the start with a clear line instead of an exporter
    # process that dies at once.
    missing = [name for name in _NEEDED if not _installed(name)]
    if missing:
        raise RuntimeError(
            f"an OTLP endpoint is set but {', '.join(missing)} is not installed: pip install 'relaylog[otel]'"
        )
    from .pipe import SpanPipe

    return SpanPipe(settings.otel, settings.upstream_overrides)


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def shown(url: str) -> str:
    """A collector URL as it may be printed: without any user or password it carries."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
