"""Where a reading command reads: the local data dir (`--data-dir`), or the deployed stack
(`--stack NAME`), found by its CloudFormation outputs.

Heavy dependencies load only for the source used: DuckDB for the data dir (`serve` never pays its
26 MB), botocore for a stack.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from relaylog.cli.errors import CommandError

if TYPE_CHECKING:
    from relaylog.query.backend import Backend
    from relaylog.store.local import LocalStore


def where(args: argparse.Namespace) -> str:
    """The source, as messages name it."""
    return f"stack {args.stack}" if args.stack else str(args.data_dir)


def local_store(args: argparse.Namespace) -> LocalStore:
    from relaylog.store.local import LocalStore

    return LocalStore(args.data_dir)


def stack_output(args: argparse.Namespace, *names: str) -> list[str]:
    """These outputs of the stack (StackError when it has not got one)."""
    from relaylog.aws.stack import output, outputs

    found = outputs(args.stack)
    return [output(found, args.stack, name) for name in names]


def backend(args: argparse.Namespace) -> Backend:
    """The query back end: the same the query API uses, over the data dir or the stack."""
    if not args.stack:
        from relaylog.query.local import LocalBackend

        return LocalBackend(local_store(args))
    from relaylog.query.dynamo.backend import DynamoBackend

    table, bucket = stack_output(args, "TableName", "BucketName")
    # A terminal has no 6 MB answer limit as the query function has: every body is shown whole.
    return DynamoBackend(table, bucket, inline_body_max=None)


def stack_error() -> type[Exception]:
    """The error a stack that cannot be read raises, or CommandError when no stack was read."""
    # Only --stack commands import botocore; the rest must not pay for it to name the error.
    module = sys.modules.get("relaylog.aws.stack")
    return module.StackError if module is not None else CommandError
