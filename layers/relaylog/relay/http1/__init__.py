"""A lean HTTP/1.1 client for the relay's calls to providers (httptools + the running event loop)."""

from .connection import Response, UpstreamDisconnected, Whole
from .pool import Client, Resolver, default_tls, system_resolver

__all__ = ["Client", "Resolver", "Response", "UpstreamDisconnected", "Whole", "default_tls", "system_resolver"]
