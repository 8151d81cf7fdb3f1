"""`relaylog query SQL`: read-only SQL over the `requests` view, on DuckDB over the data dir
(relaylog.store.sandbox) or on the stack's Athena workgroup; a bare name runs one of the saved
queries (relaylog/queries/, which the template also saves as Athena named queries) on either."""

from __future__ import annotations

import argparse
from decimal import Decimal
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from relaylog.cli import output, sources
from relaylog.cli.errors import CommandError
from relaylog.store import EXAMPLE_SQL


def saved_queries() -> dict[str, Traversable]:
    """Name -> file of the saved queries (the template ships them to Athena as named queries)."""
    files = resources.files("relaylog.queries").iterdir()
    return {p.name.removesuffix(".sql"): p for p in files if p.name.endswith(".sql")}


def _sql(text: str) -> str:
    """The SQL to run: a bare name is never SQL, it names a saved query (the same file either way)."""
    name = text.strip()
    if not name.isidentifier():
        return text
    saved = saved_queries()
    if name not in saved:
        raise CommandError(f"no saved query {name!r}; saved queries: {', '.join(sorted(saved))}")
    return saved[name].read_text()


def query(args: argparse.Namespace) -> int:
    sql = _sql(args.sql)
    result = _athena(args, sql) if args.stack else sources.local_store(args).query(sql)
    if args.json:
        output.print_json([dict(zip(result.columns, row, strict=True)) for row in result.rows])
        return 0
    if not result.columns:
        return 0
    if not result.rows:
        print("(no rows)")
        return 0
    numeric = frozenset(i for i, v in enumerate(result.rows[0]) if isinstance(v, (int, float, Decimal)))
    cells = [[output.cell(v, c) for v, c in zip(row, result.columns, strict=True)] for row in result.rows]
    print(output.table(result.columns, cells, right=numeric))
    return 0


def _athena(args: argparse.Namespace, sql: str) -> Any:
    from relaylog.aws.athena import run_query

    if not sql.strip():  # Athena's answer to nothing is an AWS error: say it plainly, as locally
        raise CommandError(f'no SQL to run (the query is empty); e.g. "{EXAMPLE_SQL}"')
    database, workgroup = sources.stack_output(args, "DatabaseName", "AthenaWorkGroup")
    return run_query(sql, database, workgroup)
