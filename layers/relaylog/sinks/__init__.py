"""Where finished exchanges go to become records."""

from __future__ import annotations

from typing import Protocol

from ..observe import Exchange
from ..record import Record


class Sink(Protocol):
    def submit(self, exchange: Exchange) -> Record | None:
        """Take a finished exchange and return its record (None if it could not be built);
        must not block the response path."""

    def flush(self, timeout_s: float) -> None:
        """Send what was submitted so far, giving up after `timeout_s`; what is left stays queued.

        A Lambda runtime calls this after each response and before asking for the next
        invocation, because a frozen environment would otherwise hold unsent records.
        """

    def close(self) -> None:
        """Write out everything submitted so far (at shutdown)."""
