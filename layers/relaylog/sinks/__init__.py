"""Where finished exchanges go to become records."""

from __future__ import annotations

from typing import Protocol

from ..exchange import Exchange


class Sink(Protocol):
    def submit(self, exchange: Exchange) -> None:
        """Take a finished exchange; must not block the response path."""

    def flush(self, timeout_s: float) -> None:
        """Send what was submitted so far, giving up after `timeout_s`; what is left stays queued.

        A Lambda runtime calls this after each response and before asking for the next
        invocation, because a frozen environment would otherwise hold unsent records.
        """

    def close(self) -> None:
        """Write out everything submitted so far (at shutdown)."""
