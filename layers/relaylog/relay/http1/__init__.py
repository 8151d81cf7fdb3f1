"""A lean HTTP/1.1 client for the relay's calls to providers (httptools + the running event loop)."""

from .addresses import ForbiddenAddress, public
from .connection import Response, UpstreamDisconnected, Whole
from .pool import Client, Resolver, default_tls, system_resolver

__all__ = [
    "Client",
    "ForbiddenAddress",
    "Resolver",
    "Response",
    "UpstreamDisconnected",
    "Whole",
    "default_tls",
    "public",
    "system_resolver",
]
