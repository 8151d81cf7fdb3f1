"""`relaylog verify`: the stages for `--url` (a `relaylog serve`) and for `--stack` (AWS), and the report.

Exit code 0 when every stage passed, 1 when one failed (the report names it and what to check).
"""

from __future__ import annotations

import functools
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from . import web
from .stages import STAGES, TIMEOUTS_S, Result, Stage, StageName, Trail, run

_LABELS = {"ok": "ok", "failed": "FAILED", "skipped": "skipped", "not_run": "not run"}
_ANNOUNCED_S = 60.0
_ATHENA_SKIPPED = "not run without --athena: an Athena query is billed by the data it scans (10 MB at least)"


@dataclass(frozen=True, slots=True)
class Options:
    url: str | None = None
    stack: str | None = None
    key: str | None = None  # a relaylog key: sent in headers, never shown
    athena: bool = False
    timeouts: dict[StageName, float] = field(default_factory=dict)  # those given on the command line
    json: bool = False


def verify(options: Options, out: IO[str] | None = None, err: IO[str] | None = None, client: Any = None) -> int:
    """`client(service)` makes the AWS clients (tests hand in their own); only --stack needs them."""
    out, err = out or sys.stdout, err or sys.stderr
    trail = Trail(str(uuid.uuid4()))
    if options.stack:
        target = {"stack": options.stack}
        plan, defaults = _stack_plan(options, trail, client)
    else:
        assert options.url is not None
        target = {"url": options.url}
        plan, defaults = _local_plan(options, trail), {}
    timeouts = {**TIMEOUTS_S, **defaults, **options.timeouts}
    if not options.json:
        where = f"stack {options.stack}" if options.stack else options.url
        print(
            f"relaylog verify: {where}, request {trail.request_id}, relaylog key {'given' if options.key else 'none'}",
            file=out,
            flush=True,
        )

    def report(result: Result) -> None:
        if not options.json:
            _print_result(result, out)

    began = time.monotonic()
    results = run(plan, timeouts, report, announce=None if options.json else functools.partial(_announce, err))
    seconds = time.monotonic() - began
    failed = next((r.stage for r in results if r.status == "failed"), None)
    if options.json:
        verdict = {
            "verified": failed is None,
            "target": target,
            "request_id": trail.request_id,
            "seconds": round(seconds, 3),
            "failed_stage": failed,
            "stages": [r.as_json() for r in results],
        }
        out.write(orjson.dumps(verdict, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif failed is None:
        print(f"verified: every stage passed in {seconds:.1f} s", file=out)
    if failed is not None:
        print(f"relaylog: error: verify failed at stage {failed}", file=err)
        return 1
    return 0


def _local_plan(options: Options, trail: Trail) -> list[tuple[StageName, Stage | str]]:
    """`relaylog serve`: its proxy, then the record through its query API, then its dashboard."""
    assert options.url is not None
    base = options.url.rstrip("/")
    return [
        ("proxy", functools.partial(web.proxy, trail, base, options.key, None)),
        ("query_api", functools.partial(web.query_api, trail, f"{base}/api/v1/", options.key, None)),
        ("dashboard", functools.partial(web.dashboard, f"{base}/dashboard/", None)),
    ]


def _stack_plan(
    options: Options, trail: Trail, client: Callable[[str], Any] | None
) -> tuple[list[tuple[StageName, Stage | str]], dict[StageName, float]]:
    # Imported here: only --stack needs botocore (the `aws` extra).
    from relaylog.aws.clients import make_client

    from . import aws

    assert options.stack is not None
    make = client or make_client
    view = aws.StackView.load(options.stack, make)
    plan: list[tuple[StageName, Stage | str]] = [
        ("proxy", functools.partial(web.proxy, trail, view.proxy_url, options.key, view.logs(aws.PROXY_FUNCTION))),
        ("delivery", functools.partial(aws.Delivery(view, make), trail)),
        ("aggregator", functools.partial(aws.Aggregation(view, make), trail)),
        (
            "query_api",
            functools.partial(web.query_api, trail, view.api_url, options.key, view.logs(aws.QUERY_FUNCTION)),
        ),
        ("dashboard", functools.partial(web.dashboard, view.dashboard_url, view.logs(aws.QUERY_FUNCTION))),
        ("athena", functools.partial(aws.athena, view, trail, client=make) if options.athena else _ATHENA_SKIPPED),
    ]
    return plan, {"delivery": view.delivery_timeout_s()}


def _announce(err: IO[str], stage: StageName, timeout_s: float) -> None:
    if timeout_s >= _ANNOUNCED_S:  # a stage that may keep the user waiting says so first
        print(f"  ... {stage}: waiting up to {timeout_s:.0f} s", file=err, flush=True)


def _print_result(result: Result, out: IO[str]) -> None:
    seconds = "" if result.seconds is None else f"{result.seconds:.2f} s"
    width = max(len(s) for s in STAGES)
    line = f"{_LABELS[result.status]:<7}  {result.stage:<{width}}  {seconds:>9}  {result.detail}".rstrip()
    print(line, file=out, flush=True)
    for check in result.checks:
        print(f"{'':<7}  {'':<{width}}  {'':>9}  check: {check}", file=out, flush=True)
