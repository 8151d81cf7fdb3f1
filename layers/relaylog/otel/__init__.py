"""Every call as an OpenTelemetry GenAI span, exported over OTLP off the hot path.

Importing this package costs nothing: the OpenTelemetry SDK is imported only by `export`, and
only once an endpoint is configured (the `otel` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings
    from .export import SpanShipper


def span_shipper(settings: Settings) -> SpanShipper | None:
    """The span exporter `settings` ask for, started; None when no OTLP endpoint is configured."""
    if settings.otel is None:
        return None
    try:
        from .export import SpanShipper
    except ImportError as error:
        raise RuntimeError(
            f"an OTLP endpoint is set but the OpenTelemetry packages are missing ({error.name}):"
            " pip install 'relaylog[otel]'"
        ) from error
    return SpanShipper(settings.otel, settings.upstream_overrides)
