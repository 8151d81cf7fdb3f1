"""relaylog: a self-hosted, Helicone-compatible LLM observability proxy."""

__version__ = "0.1.0"
