"""`relaylog requests`, `stats` and `prompts`: the records, read through the query back end the API
uses (relaylog.query.backend), from the data dir or the stack, printed as tables or JSON (`show`
is show.py).

JSON rows hold the record's own columns (the API's extras, such as scores and previews, are left
out), the same from either source.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from relaylog.cli import output, sources
from relaylog.cli.errors import CommandError
from relaylog.query.backend import NotFound, version_diff
from relaylog.query.cells import Metrics
from relaylog.query.filters import Filters
from relaylog.query.params import ListParams, StatsParams, decode_cursor
from relaylog.record import SUMMARY_FIELDS

LIST_FILTERS = ("since", "model", "provider", "user", "session")


def requests(args: argparse.Namespace) -> int:
    filters = Filters(**{name: getattr(args, name) for name in LIST_FILTERS})
    backend = sources.backend(args)
    params = ListParams(filters=filters, limit=args.limit, previews=False)
    rows: list[dict[str, Any]] = []
    while True:  # on AWS a page can come back part full, with a cursor to carry on from
        page = backend.list_requests(params)
        rows += page["data"]
        if page["next_cursor"] is None or len(rows) >= args.limit:
            break
        cursor = decode_cursor(page["next_cursor"], params.sort, params.order)
        params = replace(params, cursor=cursor, limit=args.limit - len(rows))
    rows = [{name: row[name] for name in SUMMARY_FIELDS} for row in rows[: args.limit]]
    if args.json:
        output.print_json(rows)
        return 0
    if not rows:
        filtered = any(getattr(args, name) is not None for name in LIST_FILTERS)
        print("No requests match." if filtered else f"No requests recorded in {sources.where(args)} yet.")
        return 0
    # ERROR beside STATUS: a stream cut mid-answer is a 200 with an error_type.
    headers = ["TIME (UTC)", "ID", "PROVIDER", "MODEL", "STATUS", "ERROR", "IN", "OUT", "COST", "LATENCY", "USER"]
    table = [
        [
            output.time(r["created_at"]),
            r["request_id"][:8],
            r["provider"] or "-",
            r["model"] or "-",
            "-" if r["status"] is None else str(r["status"]),
            r["error_type"] or "-",
            output.count(r["input_tokens"]),
            output.count(r["output_tokens"]),
            output.cost(r["cost_usd"]),
            output.ms(r["latency_ms"]),
            r["user_id"] or "-",
        ]
        for r in rows
    ]
    print(output.table(headers, table, right=frozenset({4, 6, 7, 8, 9})))
    return 0


def stats(args: argparse.Namespace) -> int:
    backend = sources.backend(args)
    # No time series: the totals and groups, with exact percentiles where the back end keeps every value.
    params = StatsParams(Filters(since=args.since), None, args.by, 0, backend.exact_percentiles)
    answer = backend.stats(params)
    if args.json:
        output.print_json(
            {"by": args.by, "since": answer["since"], "total": answer["total"], "groups": answer["groups"]}
        )
        return 0
    total: Metrics = answer["total"]
    if total["requests"] == 0:
        if args.since:
            print("No requests in that period.")
        elif answer["since"]:  # a stack's rollups are read from a day: say which
            print(f"No requests in {sources.where(args)} since {output.time(answer['since'])}.")
        else:
            print(f"No requests recorded in {sources.where(args)} yet.")
        return 0
    if args.by:
        _print_groups(args.by, answer["groups"], total)
    else:
        _print_totals(total)
    # Sums leave unknowns out rather than counting them as 0: say so.
    if total["usage_unknown"]:
        print(f"note: {total['usage_unknown']:,} request(s) without token usage are not in the token sums")
    if total["cost_unknown"]:
        print(
            f"note: {total['cost_unknown']:,} request(s) without a cost (unknown model or no usage) are not in the cost"
        )
    if not backend.exact_percentiles:
        print("note: percentiles are read from the rollups' histograms, within 9% of the exact values")
    return 0


def _quantiles(p50: float | None, p95: float | None, p99: float | None) -> str:
    return f"p50 {output.ms(p50)}  p95 {output.ms(p95)}  p99 {output.ms(p99)}"


def _print_totals(m: Metrics) -> None:
    lines = [
        ("requests", f"{m['requests']:,}"),
        ("errors", output.errors(m)),
        ("input tokens", output.count(m["input_tokens"])),
        ("output tokens", output.count(m["output_tokens"])),
        ("cache read tokens", output.count(m["cache_read_tokens"])),
        ("cost", output.cost(m["cost_usd"])),
        ("latency", _quantiles(m["latency_p50_ms"], m["latency_p95_ms"], m["latency_p99_ms"])),
        ("ttft", _quantiles(m["ttft_p50_ms"], m["ttft_p95_ms"], m["ttft_p99_ms"])),
    ]
    print(output.pairs(lines))


def _print_groups(by: str, groups: list[dict[str, Any]], total: Metrics) -> None:
    headers = [by.upper(), "REQUESTS", "ERRORS", "IN", "OUT", "CACHE READ", "COST",
               "LAT P50", "LAT P95", "LAT P99", "TTFT P50", "TTFT P95", "TTFT P99"]  # fmt: skip

    def row(key: str, m: Any) -> list[str]:
        return [
            key,
            f"{m['requests']:,}",
            output.errors(m),
            output.count(m["input_tokens"]),
            output.count(m["output_tokens"]),
            output.count(m["cache_read_tokens"]),
            output.cost(m["cost_usd"]),
            *(output.ms(m[f"{metric}_{q}_ms"]) for metric in ("latency", "ttft") for q in ("p50", "p95", "p99")),
        ]

    rows = [row("(none)" if g["key"] is None else str(g["key"]), g) for g in groups]
    rows.append(row("TOTAL", total))
    print(output.table(headers, rows, right=frozenset(range(1, len(headers)))))


def prompts(args: argparse.Namespace) -> int:
    try:
        versions = sources.backend(args).prompt_versions(args.prompt_id)
        if args.diff:
            diff = version_diff(versions, *args.diff)
    except NotFound as exc:
        raise CommandError(str(exc)) from None
    if args.diff:
        if args.json:
            output.print_json(diff)
            return 0
        print(f"--- v{args.diff[0]}\n+++ v{args.diff[1]}")
        for line in diff["lines"]:
            print(f"{line['op']}{line['text']}")
        return 0
    if args.json:
        output.print_json(versions)
        return 0
    headers = ["VERSION", "HASH", "REQUESTS", "COST", "P50", "FIRST SEEN (UTC)", "LAST SEEN (UTC)"]
    rows = [
        [f"v{v['version']}", v["hash"], output.count(v["requests"]), output.cost(v["cost_usd"]),
         output.ms(v["latency_p50_ms"]), output.time(v["first_seen"]), output.time(v["last_seen"])]
        for v in versions
    ]  # fmt: skip
    print(output.table(headers, rows, right=frozenset({2, 3, 4})))
    latest = versions[-1]
    print(f"\nv{latest['version']} (latest):\n{latest['template']}")
    return 0
