"""The HTTP clients every call shares (relay/http1: pooled keep-alive connections to each upstream).

Calls on the provider routes (the path prefix, or RELAYLOG_UPSTREAM_<PROVIDER>) use one client
with no checks added. Hosts a client chose (Helicone-Target-Url, Helicone-Fallbacks) go through a
second client that refuses any name resolving to an address that is not public: the check sits
where the connection is made, on the very addresses it is made to, so a DNS answer that changes
between a check and the connection (rebinding) has no gap to slip through.
"""

from __future__ import annotations

from ..config import Settings
from .http1 import Client, Resolver


class Upstream:
    """The app's two clients, made on first use on the loop that runs the relay."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._providers: Client | None = None
        # For hosts the client chose; most deployments never see one.
        self._targets: Client | None = None
        # The system resolver under the public-address check, unless a test replaces it.
        self.target_resolver: Resolver | None = None

    def client(self, guarded: bool) -> Client:
        """The client for a target: `guarded` when a client chose its host."""
        if guarded:
            if self._targets is None:
                self._targets = self._make(public_only=True, resolver=self.target_resolver)
            return self._targets
        if self._providers is None:
            self._providers = self._make()
        return self._providers

    def _make(self, *, public_only: bool = False, resolver: Resolver | None = None) -> Client:
        return Client(
            connect_timeout_s=self._settings.connect_timeout_s,
            read_timeout_s=self._settings.read_timeout_s,
            public_only=public_only,
            resolver=resolver,
        )

    async def close(self) -> None:
        """Close the pooled connections (new ones are made if a call comes after)."""
        for client in (self._providers, self._targets):
            if client is not None:
                await client.close()
        self._providers = self._targets = None
