"""The `relaylog` command: run the proxy, read the records, manage relaylog keys, verify a deployment.

Exit codes: 0 ok, 1 the command failed, 2 bad usage. Errors are one line on stderr, except that
a bad SQL query also gets DuckDB's pointer to where it went wrong.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from relaylog import __version__
from relaylog.keys import normalise_limit
from relaylog.keys.file import KeyFileError, KeyStore
from relaylog.store import StoreError
from relaylog.store.since import parse_since
from relaylog.store.stats import Metrics, Stats, group_key
from relaylog.verify.stages import KEY_ENV, parse_timeout

if TYPE_CHECKING:
    from relaylog.query.backend import Backend
    from relaylog.store.local import LocalStore

DEFAULT_DATA_DIR = "./relaylog-data"
DATA_DIR_ENV = "RELAYLOG_DATA_DIR"


class UsageError(Exception):
    """Bad command line: exit code 2."""


class CommandError(Exception):
    """The command could not do its job: exit code 1."""


class _Parser(argparse.ArgumentParser):
    # argparse would print the whole usage block and sys.exit(2); we want one line and a return code.
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


class _StderrWarnings(logging.Handler):
    """Store warnings (skipped lines, unreadable bodies) as `relaylog: warning: ...` lines."""

    def emit(self, record: logging.LogRecord) -> None:
        # sys.stderr looked up per message, so redirected or captured stderr is honoured.
        print(f"relaylog: {record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def _show_warnings_on_stderr() -> None:
    logger = logging.getLogger("relaylog")
    if not any(isinstance(h, _StderrWarnings) for h in logger.handlers):
        handler = _StderrWarnings()
        handler.setLevel(logging.WARNING)
        logger.addHandler(handler)


# -- argument types ------------------------------------------------------------------------------


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
_port = _int_in(1, 65535, "a port number 1-65535")


def _version(text: str) -> int:
    number = text.lower().removeprefix("v")
    if not (number.isascii() and number.isdigit() and int(number) >= 1):
        raise ValueError(f"expected a version number like 1 or v2, got {text!r}")
    return int(number)


def _limit(text: str) -> str:
    # The canonical form is what the key stores and what `keys list` shows back.
    return normalise_limit(text) or ""


def _http_url(text: str) -> str:
    if not text.lower().startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return text


def _group_by(text: str) -> str:
    group_key(text)  # validates, raising ValueError
    return text


# -- output helpers ------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    # What DuckDB can return that orjson does not serialise itself.
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def _print_json(value: Any) -> None:
    options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    sys.stdout.write(orjson.dumps(value, default=_json_default, option=options).decode() + "\n")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


def _time(created_at: str | None) -> str:
    if not created_at:
        return "-"
    try:
        return datetime.fromisoformat(created_at).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return created_at


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _cost(value: float | None) -> str:
    return "-" if value is None else f"${value:.6f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}ms" if value < 1000 else f"{value / 1000:.2f}s"


def _errors(m: Mapping[str, Any]) -> str:
    return f"{m['errors']:,}" if m["error_rate"] is None else f"{m['errors']:,} ({m['error_rate']:.1%})"


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return format(value, ".10g")
    if isinstance(value, (dict, list)):
        return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()
    return str(value)


def _field(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _body(text: str | None) -> str:
    if text is None:
        return "(not stored)"
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text  # SSE streams and non-JSON bodies as they were relayed


# -- commands ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    # Imported here so the read commands work without the server's dependencies loaded.
    from relaylog import server

    server.run(host=args.host, port=args.port, data_dir=args.data_dir, workers=args.workers)
    return 0


def _store(args: argparse.Namespace) -> LocalStore:
    # DuckDB is imported only by the commands that read records: `serve` never pays its 26 MB.
    from relaylog.store.local import LocalStore

    return LocalStore(args.data_dir)


def cmd_requests(args: argparse.Namespace) -> int:
    if args.stack:
        from relaylog.query import params

        found = params.Filters(
            since=args.since, model=args.model, provider=args.provider, user=args.user, session=args.session
        )
        rows = _backend(args).list_requests(params.ListParams(filters=found, limit=args.limit))["data"]
    else:
        from relaylog.store.local import Filters

        filters = Filters(
            since=args.since, model=args.model, provider=args.provider, user=args.user, session=args.session
        )
        rows = _store(args).list_requests(limit=args.limit, filters=filters)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        filtered = any(getattr(args, f) is not None for f in ("since", "model", "provider", "user", "session"))
        print("No requests match." if filtered else f"No requests recorded in {args.data_dir} yet.")
        return 0
    headers = ["TIME (UTC)", "ID", "PROVIDER", "MODEL", "STATUS", "IN", "OUT", "COST", "LATENCY", "USER"]
    table = [
        [
            _time(r["created_at"]),
            r["request_id"][:8],
            r["provider"] or "-",
            r["model"] or "-",
            "-" if r["status"] is None else str(r["status"]),
            _count(r["input_tokens"]),
            _count(r["output_tokens"]),
            _cost(r["cost_usd"]),
            _ms(r["latency_ms"]),
            r["user_id"] or "-",
        ]
        for r in rows
    ]
    print(_table(headers, table, right=frozenset({4, 5, 6, 7, 8})))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    if not args.id:
        raise UsageError("relaylog show: error: give a request id")
    if args.stack:
        from relaylog.query.backend import NotFound

        try:
            record: dict[str, Any] | None = _backend(args).get_request(args.id)
        except NotFound as exc:
            raise CommandError(f"{exc} in stack {args.stack}") from None
    else:
        record = _store(args).get_request(args.id)
    if record is None:
        raise CommandError(f"no request with id {args.id!r} in {args.data_dir}")
    if args.json:
        _print_json(record)
        return 0
    from relaylog.record import SUMMARY_FIELDS

    fields = [f for f in SUMMARY_FIELDS if f != "properties"]
    width = max(len(f) for f in fields)
    for name in fields:
        print(f"{name:<{width}}  {_field(record[name])}")
    for key, value in sorted((record["properties"] or {}).items()):
        print(f"{'property':<{width}}  {key} = {value}")
    for name in ("request_body", "response_body"):
        print(f"\n--- {name.replace('_', ' ')} ---")
        url = record.get(f"{name}_url")  # on AWS, a body too large to send along is a link
        print(_body(record[name]) if url is None else f"(too large to show here; download within 15 minutes: {url})")
    return 0


def _print_totals(m: Metrics) -> None:
    lines = [
        ("requests", f"{m['requests']:,}"),
        ("errors", _errors(m)),
        ("input tokens", _count(m["input_tokens"])),
        ("output tokens", _count(m["output_tokens"])),
        ("cache read tokens", _count(m["cache_read_tokens"])),
        ("cost", _cost(m["cost_usd"])),
        ("latency", f"p50 {_ms(m['latency_p50_ms'])}  p95 {_ms(m['latency_p95_ms'])}  p99 {_ms(m['latency_p99_ms'])}"),
        ("ttft", f"p50 {_ms(m['ttft_p50_ms'])}  p95 {_ms(m['ttft_p95_ms'])}  p99 {_ms(m['ttft_p99_ms'])}"),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")


def _print_groups(stats: Stats) -> None:
    headers = [str(stats["by"]).upper(), "REQUESTS", "ERRORS", "IN", "OUT", "CACHE READ", "COST",
               "LAT P50", "LAT P95", "LAT P99", "TTFT P50", "TTFT P95", "TTFT P99"]  # fmt: skip

    def row(key: str, m: Mapping[str, Any]) -> list[str]:
        return [
            key,
            f"{m['requests']:,}",
            _errors(m),
            _count(m["input_tokens"]),
            _count(m["output_tokens"]),
            _count(m["cache_read_tokens"]),
            _cost(m["cost_usd"]),
            *(_ms(m[f"{metric}_{q}_ms"]) for metric in ("latency", "ttft") for q in ("p50", "p95", "p99")),
        ]

    rows = [row("(none)" if g["key"] is None else str(g["key"]), g) for g in stats["groups"]]
    rows.append(row("TOTAL", stats["total"]))
    print(_table(headers, rows, right=frozenset(range(1, len(headers)))))


def _stack_stats(args: argparse.Namespace) -> Stats:
    """The same totals and groups from the stack's rollups: whole hours (or days past a week)."""
    from relaylog.query.params import Bucket, Filters, StatsParams, parse_group_by

    now = datetime.now(UTC)
    since = args.since or now - timedelta(days=30)
    bucket: Bucket = "hour" if now - since <= timedelta(days=7) else "day"
    answer = _backend(args).stats(StatsParams(Filters(since=since), bucket, parse_group_by(args.by), top=50))
    return Stats(by=args.by, since=answer["since"], total=answer["total"], groups=answer["groups"])


def cmd_stats(args: argparse.Namespace) -> int:
    stats = _stack_stats(args) if args.stack else _store(args).stats(by=args.by, since=args.since)
    if args.json:
        _print_json(stats)
        return 0
    total = stats["total"]
    if total["requests"] == 0:
        print("No requests in that period." if args.since else f"No requests recorded in {args.data_dir} yet.")
        return 0
    if args.by:
        _print_groups(stats)
    else:
        _print_totals(total)
    # Sums leave unknowns out rather than counting them as 0: say so.
    if total["usage_unknown"]:
        print(f"note: {total['usage_unknown']:,} request(s) without token usage are not in the token sums")
    if total["cost_unknown"]:
        print(
            f"note: {total['cost_unknown']:,} request(s) without a cost (unknown model or no usage) are not in the cost"
        )
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    result = _athena_query(args) if args.stack else _store(args).query(args.sql)
    if args.json:
        _print_json([dict(zip(result.columns, row, strict=True)) for row in result.rows])
        return 0
    if not result.columns:
        return 0
    if not result.rows:
        print("(no rows)")
        return 0
    numeric = frozenset(i for i, v in enumerate(result.rows[0]) if isinstance(v, (int, float, Decimal)))
    print(_table(result.columns, [[_cell(v) for v in row] for row in result.rows], right=numeric))
    return 0


def _athena_query(args: argparse.Namespace) -> Any:
    from importlib import resources

    from .aws.athena import run_query
    from .aws.stack import output, outputs

    sql = args.sql
    if sql.isidentifier():  # a bare name is never SQL: it names a saved query
        files = resources.files("relaylog.queries").iterdir()
        saved = {p.name.removesuffix(".sql"): p for p in files if p.name.endswith(".sql")}
        if sql not in saved:
            raise CommandError(f"no saved query {sql!r}; saved queries: {', '.join(sorted(saved))}")
        sql = saved[sql].read_text()
    found = outputs(args.stack)
    return run_query(sql, output(found, args.stack, "DatabaseName"), output(found, args.stack, "AthenaWorkGroup"))


def _keys(args: argparse.Namespace) -> Any:
    if not args.stack:
        return KeyStore.in_data_dir(args.data_dir)
    from .aws.stack import output, outputs
    from .keys.dynamo import DynamoKeyStore

    return DynamoKeyStore(output(outputs(args.stack), args.stack, "TableName"))


def cmd_keys_create(args: argparse.Namespace) -> int:
    secret, info = _keys(args).create(args.name, args.limit)
    if args.json:
        _print_json({"key": secret, **asdict(info)})
        return 0
    # Only the key on stdout, so `KEY=$(relaylog keys create)` works; the advice goes to stderr.
    print(secret)
    label = f"{info.key_id} ({info.name})" if info.name else info.key_id
    if info.limit:
        label += f" limited to {info.limit}"
    print(
        f"Created {label}. This is the only time the key is shown: store it now.\n"
        f"Clients send it as the header `Helicone-Auth: Bearer {info.prefix}...`",
        file=sys.stderr,
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _keys(args).list()
    if args.json:
        _print_json([asdict(k) for k in keys])
        return 0
    if not keys:
        print("No keys yet. Create one with: relaylog keys create --name NAME")
        return 0
    headers = ["ID", "NAME", "PREFIX", "CREATED (UTC)", "LIMIT", "STATUS"]
    rows = [
        [k.key_id, k.name or "-", k.prefix + "...", _time(k.created_at), k.limit or "-",
         "active" if k.active else f"revoked {_time(k.revoked_at)}"]
        for k in keys
    ]  # fmt: skip
    print(_table(headers, rows))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    store = _keys(args)
    if not store.revoke(args.key_id):
        if any(k.key_id == args.key_id for k in store.list()):
            raise CommandError(f"key {args.key_id} is already revoked")
        raise CommandError(f"no key {args.key_id!r} in {args.stack or store.path}")
    if args.json:
        _print_json({"key_id": args.key_id, "revoked": True})
    else:
        print(f"Revoked {args.key_id}.")
    return 0


def _backend(args: argparse.Namespace) -> Backend:
    """The query API's back end for this command: the local data dir, or the stack's DynamoDB and S3."""
    if not args.stack:
        from relaylog.query.local import LocalBackend

        return LocalBackend(_store(args))
    from .aws.stack import output, outputs
    from .query.dynamo import DynamoBackend

    found = outputs(args.stack)
    return DynamoBackend(output(found, args.stack, "TableName"), output(found, args.stack, "BucketName"))


def cmd_prompts(args: argparse.Namespace) -> int:
    from relaylog.query.backend import NotFound, version_diff

    try:
        versions = _backend(args).prompt_versions(args.prompt_id)
        if args.diff:
            diff = version_diff(versions, *args.diff)
    except NotFound as exc:
        raise CommandError(str(exc)) from None
    if args.diff:
        if args.json:
            _print_json(diff)
            return 0
        print(f"--- v{args.diff[0]}\n+++ v{args.diff[1]}")
        for line in diff["lines"]:
            print(f"{line['op']}{line['text']}")
        return 0
    if args.json:
        _print_json(versions)
        return 0
    headers = ["VERSION", "HASH", "REQUESTS", "COST", "P50", "FIRST SEEN (UTC)", "LAST SEEN (UTC)"]
    rows = [
        [f"v{v['version']}", v["hash"], _count(v["requests"]), _cost(v["cost_usd"]), _ms(v["latency_p50_ms"]),
         _time(v["first_seen"]), _time(v["last_seen"])]
        for v in versions
    ]  # fmt: skip
    print(_table(headers, rows, right=frozenset({2, 3, 4})))
    latest = versions[-1]
    print(f"\nv{latest['version']} (latest):\n{latest['template']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if bool(args.url) == bool(args.stack):
        raise UsageError("relaylog verify: error: give --url URL (a relaylog serve) or --stack NAME (AWS)")
    if args.athena and not args.stack:
        raise UsageError("relaylog verify: error: --athena needs --stack")
    from relaylog.verify.command import Options, verify

    key = args.key or os.environ.get(KEY_ENV) or None
    options = Options(args.url, args.stack, key, args.athena, dict(args.timeout or []), args.json)
    return verify(options)


# -- parser --------------------------------------------------------------------------------------


def _stack_error() -> type[Exception]:
    # Only --stack commands import botocore; the rest must not pay for it to name the error.
    module = sys.modules.get("relaylog.aws.stack")
    return module.StackError if module is not None else CommandError


def build_parser(default_data_dir: Path) -> argparse.ArgumentParser:
    data = _Parser(add_help=False)
    data.add_argument(
        "--data-dir",
        type=Path,
        default=None,  # filled in by main(), which must tell "not given" apart for --stack
        metavar="DIR",
        help=f"local data directory (default: {default_data_dir}, set by ${DATA_DIR_ENV})",
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
    serve.add_argument("--port", type=_arg_type(_port), default=8787, help="port to listen on (default: 8787)")
    serve.add_argument("--workers", type=_arg_type(_positive_int), default=1, help="worker processes (default: 1)")
    serve.set_defaults(run=cmd_serve)

    requests = commands.add_parser("requests", parents=[reader, since, deployed], help="list recent requests")
    requests.add_argument("--limit", type=_arg_type(_positive_int), default=50, help="at most this many (default: 50)")
    requests.add_argument("--model", help="only this model (as requested)")
    requests.add_argument("--provider", help="only this provider, e.g. openai")
    requests.add_argument("--user", help="only this user id")
    requests.add_argument("--session", help="only this session id")
    requests.set_defaults(run=cmd_requests)

    show = commands.add_parser("show", parents=[reader, deployed], help="one request in full, with its bodies")
    show.add_argument("id", help="request id (the Helicone-Id header), or a unique prefix of it")
    show.set_defaults(run=cmd_show)

    stats = commands.add_parser(
        "stats", parents=[reader, since, deployed], help="counts, errors, tokens, cost, latency"
    )
    stats.add_argument(
        "--by",
        type=_arg_type(_group_by),
        metavar="model|user|provider|session|property:NAME",
        help="one row per value of this field",
    )
    stats.set_defaults(run=cmd_stats)

    query = commands.add_parser(
        "query", parents=[reader, deployed], help="run SQL on `requests` (DuckDB locally, Athena with --stack)"
    )
    query.add_argument(
        "sql",
        metavar="SQL",
        help='e.g. "SELECT model, count(*) FROM requests GROUP BY 1", or with --stack a saved query: '
        "cost_by_day_model, cost_by_user, latency_p95_by_model, sessions, errors",
    )
    query.set_defaults(run=cmd_query)

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
    prompts.set_defaults(run=cmd_prompts)

    keys = commands.add_parser("keys", help="manage relaylog API keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = key_commands.add_parser("create", parents=[reader, deployed], help="create a key (shown once)")
    create.add_argument("--name", help="a label to recognise the key by")
    create.add_argument(
        "--limit",
        type=_arg_type(_limit),
        metavar="POLICY",
        help='a rate limit for every call made with the key, in Helicone-RateLimit-Policy form: '
        '"quota;w=seconds[;u=request|cents][;s=user|PROPERTY]", e.g. "1000;w=3600;u=cents"',
    )
    create.set_defaults(run=cmd_keys_create)
    key_list = key_commands.add_parser("list", parents=[reader, deployed], help="list keys (never the secrets)")
    key_list.set_defaults(run=cmd_keys_list)
    revoke = key_commands.add_parser("revoke", parents=[reader, deployed], help="revoke a key by id")
    revoke.add_argument("key_id", metavar="ID", help="key id, e.g. key_ab12cd34")
    revoke.set_defaults(run=cmd_keys_revoke)

    check = commands.add_parser(
        "verify", parents=[deployed], help="prove the pipeline end to end with relaylog's echo route (no provider key)"
    )
    check.add_argument("--url", type=_arg_type(_http_url), help="a relaylog serve, e.g. http://127.0.0.1:8787")
    check.add_argument("--key", help=f"a relaylog key, if keys exist (default: ${KEY_ENV}); never printed")
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
    check.set_defaults(run=cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    default_data_dir = Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
    parser = build_parser(default_data_dir)
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version
            return int(exc.code or 0)
        if args.command != "serve":
            _show_warnings_on_stderr()
        if getattr(args, "stack", None) and getattr(args, "data_dir", None) is not None:
            raise UsageError("relaylog: error: --stack and --data-dir name two different stores; give one")
        if getattr(args, "data_dir", None) is None:
            args.data_dir = default_data_dir
        return int(args.run(args))
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (CommandError, StoreError, KeyFileError, _stack_error()) as exc:
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
