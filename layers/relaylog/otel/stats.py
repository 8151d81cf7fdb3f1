"""What became of the records handed to span export."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ExportStats:
    exported: int = 0
    # Dropped in the exporter because its queue was full (the collector is slower than the traffic).
    queue_full: int = 0
    # Refused by the collector, not delivered within the timeout, or dropped in the pause after.
    failed: int = 0
    # Left out on purpose: the caller's trace is not sampled.
    unsampled: int = 0
    # Dropped on the relay's side: the pipe to the exporter process was full, or it had gone.
    pipe_full: int = 0
