"""`relaylog query SQL`: any SQL over the `requests` view, on DuckDB over the data dir, or on the
stack's Athena workgroup, where a bare name runs one of the saved queries (relaylog/queries/)."""

from __future__ import annotations

import argparse
from decimal import Decimal
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from relaylog.cli import output, sources
from relaylog.cli.errors import CommandError


def saved_queries() -> dict[str, Traversable]:
    """Name -> file of the saved queries (the template ships them to Athena as named queries)."""
    files = resources.files("relaylog.queries").iterdir()
    return {p.name.removesuffix(".sql"): p for p in files if p.name.endswith(".sql")}


def query(args: argparse.Namespace) -> int:
    result = _athena(args) if args.stack else sources.local_store(args).query(args.sql)
    if args.json:
        output.print_json([dict(zip(result.columns, row, strict=True)) for row in result.rows])
        return 0
    if not result.columns:
        return 0
    if not result.rows:
        print("(no rows)")
        return 0
    numeric = frozenset(i for i, v in enumerate(result.rows[0]) if isinstance(v, (int, float, Decimal)))
    print(output.table(result.columns, [[output.cell(v) for v in row] for row in result.rows], right=numeric))
    return 0


def _athena(args: argparse.Namespace) -> Any:
    from relaylog.aws.athena import run_query

    sql = args.sql
    if sql.isidentifier():  # a bare name is never SQL: it names a saved query
        saved = saved_queries()
        if sql not in saved:
            raise CommandError(f"no saved query {sql!r}; saved queries: {', '.join(sorted(saved))}")
        sql = saved[sql].read_text()
    database, workgroup = sources.stack_output(args, "DatabaseName", "AthenaWorkGroup")
    return run_query(sql, database, workgroup)
