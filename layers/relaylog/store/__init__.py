"""Reading records back: DuckDB over the local data dir."""


class StoreError(Exception):
    """A query failed; the message is meant for the user (for SQL, DuckDB's own message)."""
