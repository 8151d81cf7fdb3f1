"""The `relaylog` command: run the proxy, read the records, manage relaylog keys, verify a deployment.

Exit codes: 0 ok, 1 the command failed, 2 bad usage. Errors are one line on stderr, except that
a bad SQL query also gets DuckDB's pointer to where it went wrong.

    parser.py   the commands, their options and types
    read.py     requests, stats, prompts: through the query API's back end
    show.py     show: one request, its answer put back together (relaylog.query.answer)
    sql.py      query: SQL on DuckDB locally, on Athena with --stack
    keys.py     keys create, list, revoke
    run.py      serve, verify
    sources.py  --data-dir or --stack
    output.py   tables, numbers, JSON; warnings on stderr
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from relaylog.cli import output, sources
from relaylog.cli.errors import CommandError, UsageError
from relaylog.cli.parser import build_parser
from relaylog.config import CommandSettings
from relaylog.query.backend import NotFound, Unsupported
from relaylog.query.params import BadRequest
from relaylog.store import StoreError


def main(argv: Sequence[str] | None = None) -> int:
    settings = CommandSettings.from_env()
    parser = build_parser(settings)
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version
            return int(exc.code or 0)
        if args.command != "serve":
            output.show_warnings_on_stderr()
        if getattr(args, "stack", None) and getattr(args, "data_dir", None) is not None:
            raise UsageError("relaylog: error: --stack and --data-dir name two different stores; give one")
        if getattr(args, "data_dir", None) is None:
            args.data_dir = settings.data_dir
        return int(args.run(args))
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (CommandError, StoreError, NotFound, BadRequest, Unsupported, sources.stack_error()) as exc:
        print(f"relaylog: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`relaylog requests | head`): not a failure. Point stdout at
        # /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"relaylog: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
