"""Where `relaylog query` runs SQL it did not write: read-only, and blind outside the record files.

Only SELECT (with WITH, DESCRIBE, SUMMARIZE, VALUES...) and EXPLAIN statements run, so nothing is
written (COPY, EXPORT, CREATE, INSERT... are refused before they reach DuckDB). They run in a
database of their own whose file access is DuckDB's own sandbox, as "Securing DuckDB" describes
it (https://duckdb.org/docs/2.0/operations_manual/securing_duckdb/overview.html): the record files
of the `requests` view are its `allowed_paths`, `enable_external_access = false` closes every
other path (read_csv of /etc/passwd, ATTACH, INSTALL, glob), extensions neither install nor load
automatically, and `lock_configuration = true` refuses the SET or RESET that would undo it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from relaylog.store import EXAMPLE_SQL, StoreError
from relaylog.store.columnar import sql_list

_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def read_only_statements(sql: str) -> list[duckdb.Statement]:
    """The statements of `sql`; StoreError if there are none or one could change anything."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise StoreError(str(exc)) from None
    if not statements:
        raise StoreError(f'no SQL to run (the query is empty or only comments); e.g. "{EXAMPLE_SQL}"')
    for statement in statements:
        if statement.type not in _READ_ONLY:
            kind = statement.type.name
            raise StoreError(f"queries are read-only: SELECT and EXPLAIN run, {kind} statements do not")
    return statements


def sandboxed(files: Sequence[Path]) -> duckdb.DuckDBPyConnection:
    """A new in-memory database that can read these files and nothing else, its settings locked."""
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    # Record times are UTC; show TIMESTAMPTZ values in UTC whatever the machine's zone.
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB refuses allowed_paths in connect()'s config ("before the database is started"): SET.
    con.execute(f"SET allowed_paths = {sql_list(files)}")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con
