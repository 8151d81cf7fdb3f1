"""The local data dir as storage: record files, their Parquet copies, bodies, scores, and DuckDB over
them. What the queries mean is relaylog.query's (query/local.py)."""


class StoreError(Exception):
    """A query failed; the message is meant for the user (for SQL, DuckDB's own message)."""


# The query the messages about SQL give as an example.
EXAMPLE_SQL = "SELECT model, count(*) FROM requests GROUP BY 1"
