"""Where finished exchanges go to become records."""

from __future__ import annotations

from typing import Protocol

from ..exchange import Exchange


class Sink(Protocol):
    def submit(self, exchange: Exchange) -> None:
        """Take a finished exchange; must not block the response path."""

    def close(self) -> None:
        """Write out everything submitted so far."""
