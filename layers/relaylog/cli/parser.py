"""The command line: each command, its options and their types (a bad value is one line, exit 2)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from relaylog import __version__
from relaylog.cli import keys, read, run, sql
from relaylog.cli import show as show_command
from relaylog.cli.errors import UsageError
from relaylog.config import DATA_DIR_ENV, KEY_ENV, CommandSettings
from relaylog.query.filters import GROUP_DIMENSIONS, PROPERTY_PREFIX
from relaylog.query.params import BadRequest, parse_group_by
from relaylog.store.since import parse_since
from relaylog.verify.stages import parse_timeout

# What `stats --by` groups by: what the query API's `by` takes.
STATS_BY = "|".join([*GROUP_DIMENSIONS, PROPERTY_PREFIX + "NAME"])


class _Parser(argparse.ArgumentParser):
    # argparse would print the whole usage block and sys.exit(2); we want one line and a return code.
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _arg_type(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _int_in(low: int, high: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
            raise ValueError(f"expected {what}, got {text!r}")
        return int(text)

    return parse


_positive_int = _int_in(1, sys.maxsize, "a positive integer")
_port_or_0 = _int_in(0, 65535, "a port number 1-65535, or 0 for any free port")


def _version(text: str) -> int:
    number = text.lower().removeprefix("v")
    if not (number.isascii() and number.isdigit() and int(number) >= 1):
        raise ValueError(f"expected a version number like 1 or v2, got {text!r}")
    return int(number)


def _http_url(text: str) -> str:
    if not text.lower().startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return text


def _group_by(text: str) -> str:
    """`stats --by`: what the query API's `by` takes, from the same definition (query.filters)."""
    try:
        by = parse_group_by(text)
    except BadRequest as exc:
        raise ValueError(str(exc).removeprefix("by must be ")) from None
    if by is None:
        raise ValueError(f"expected one of {STATS_BY}, got {text!r}")
    return by


def build_parser(settings: CommandSettings) -> argparse.ArgumentParser:
    data = _Parser(add_help=False)
    data.add_argument(
        "--data-dir",
        type=Path,
        default=None,  # filled in by main(), which must tell "not given" apart for --stack
        metavar="DIR",
        help=f"local data directory (default: {settings.data_dir}, set by ${DATA_DIR_ENV})",
    )
    reader = _Parser(add_help=False, parents=[data])
    reader.add_argument("--json", action="store_true", help="machine-readable JSON output")
    deployed = _Parser(add_help=False)
    deployed.add_argument(
        "--stack", metavar="NAME", help="the deployed AWS stack (CloudFormation name) instead of --data-dir"
    )
    since = _Parser(add_help=False)
    since.add_argument(
        "--since",
        type=_arg_type(parse_since),
        metavar="WHEN",
        help="only requests from this time on: 30m, 1h, 7d, or an ISO date/time (UTC unless it has an offset)",
    )

    parser = _Parser(
        prog="relaylog",
        description="Self-hosted, Helicone-compatible LLM observability proxy.",
        epilog="Every command but serve takes --json for machine output; all but verify take --data-dir DIR.",
    )
    parser.add_argument("--version", action="version", version=f"relaylog {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", parents=[data], help="run the proxy, dashboard and query API")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument(
        "--port", type=_arg_type(_port_or_0), default=8787, help="port to listen on (default: 8787; 0: any free port)"
    )
    serve.add_argument("--workers", type=_arg_type(_positive_int), default=1, help="worker processes (default: 1)")
    serve.set_defaults(run=run.serve)

    demo = commands.add_parser(
        "demo", help="serve with a built-in fake provider and a mix of calls: a full dashboard, no provider key"
    )
    demo.add_argument(
        "--data-dir",
        dest="demo_dir",
        type=Path,
        metavar="DIR",
        help="keep the demo's records here (default: a temporary directory, removed when the demo stops)",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    demo.add_argument("--port", type=_arg_type(_port_or_0), default=8787, help="port (default: 8787; 0: any free)")
    demo.set_defaults(run=run.demo)

    requests = commands.add_parser("requests", parents=[reader, since, deployed], help="list recent requests")
    requests.add_argument("--limit", type=_arg_type(_positive_int), default=50, help="at most this many (default: 50)")
    requests.add_argument("--model", help="only this model (as requested)")
    requests.add_argument("--provider", help="only this provider, e.g. openai")
    requests.add_argument("--user", help="only this user id")
    requests.add_argument("--session", help="only this session id")
    requests.set_defaults(run=read.requests)

    show = commands.add_parser(
        "show", parents=[reader, deployed], help="one request in full: fields, scores, prompt and answer"
    )
    show.add_argument("id", help="request id (the Helicone-Id header), or a unique prefix of it")
    show.add_argument("--raw", action="store_true", help="the bodies as relayed (SSE and all), not put back together")
    show.set_defaults(run=show_command.show)

    stats = commands.add_parser(
        "stats", parents=[reader, since, deployed], help="counts, errors, tokens, cost, latency"
    )
    stats.add_argument(
        "--by",
        type=_arg_type(_group_by),
        metavar=STATS_BY,
        help="one row per value of this field",
    )
    stats.set_defaults(run=read.stats)

    query = commands.add_parser(
        "query",
        parents=[reader, deployed],
        help="run read-only SQL on `requests` (DuckDB locally, Athena with --stack)",
    )
    query.add_argument(
        "sql",
        metavar="SQL",
        help='read-only SQL, e.g. "SELECT model, count(*) FROM requests GROUP BY 1", or a saved query: '
        + ", ".join(sorted(sql.saved_queries())),
    )
    query.set_defaults(run=sql.query)

    prompts = commands.add_parser(
        "prompts", parents=[reader, deployed], help="the versions of a prompt (Helicone-Prompt-Id), or a diff"
    )
    prompts.add_argument("prompt_id", metavar="ID", help="the Helicone-Prompt-Id value")
    prompts.add_argument(
        "--diff",
        nargs=2,
        type=_arg_type(_version),
        metavar=("V1", "V2"),
        help="line diff between two versions, e.g. --diff 1 2",
    )
    prompts.set_defaults(run=read.prompts)

    key_parser = commands.add_parser("keys", help="manage relaylog API keys")
    key_commands = key_parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = key_commands.add_parser("create", parents=[reader, deployed], help="create a key (shown once)")
    create.add_argument("--name", help="a label to recognise the key by")
    create.add_argument(
        "--limit",
        type=_arg_type(keys.limit_policy),
        metavar="POLICY",
        help="a rate limit for every call made with the key, in Helicone-RateLimit-Policy form: "
        '"quota;w=seconds[;u=request|cents][;s=user|PROPERTY]", e.g. "1000;w=3600;u=cents"',
    )
    create.set_defaults(run=keys.create)
    key_list = key_commands.add_parser("list", parents=[reader, deployed], help="list keys (never the secrets)")
    key_list.set_defaults(run=keys.list_keys)
    revoke = key_commands.add_parser("revoke", parents=[reader, deployed], help="revoke a key by id")
    revoke.add_argument("key_id", metavar="ID", help="key id, e.g. key_ab12cd34")
    revoke.set_defaults(run=keys.revoke)

    check = commands.add_parser(
        "verify", parents=[deployed], help="prove the pipeline end to end with relaylog's echo route (no provider key)"
    )
    check.add_argument("--url", type=_arg_type(_http_url), help="a relaylog serve, e.g. http://127.0.0.1:8787")
    check.add_argument(
        "--key", default=settings.key, help=f"a relaylog key, if keys exist (default: ${KEY_ENV}); never printed"
    )
    check.add_argument("--athena", action="store_true", help="also find the call with Athena (billed per data scanned)")
    check.add_argument(
        "--timeout",
        action="append",
        type=_arg_type(parse_timeout),
        metavar="STAGE=SECONDS",
        help="how long a stage may take, e.g. delivery=300 (default: Firehose's buffering interval + 120 s for "
        "delivery, 120 s for aggregator and athena, 30 s or less for the others)",
    )
    check.add_argument("--json", action="store_true", help="machine-readable JSON output")
    check.set_defaults(run=run.verify)
    return parser
