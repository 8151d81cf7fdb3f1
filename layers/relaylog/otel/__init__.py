"""Every call as an OpenTelemetry GenAI span, exported over OTLP off the hot path.

Importing this package costs nothing: the OpenTelemetry SDK is imported only by `export`, and
only once an endpoint is configured (the `otel` extra).
"""
