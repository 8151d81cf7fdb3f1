"""`relaylog serve` (the proxy, dashboard and query API), `relaylog demo` (serve with a fake provider
and a mix of calls) and `relaylog verify` (a running one, or a deployed stack, checked end to end)."""

from __future__ import annotations

import argparse

from relaylog.cli.errors import CommandError, UsageError


def serve(args: argparse.Namespace) -> int:
    # Imported here so the read commands work without the server's dependencies loaded.
    from relaylog import server

    try:
        server.run(host=args.host, port=args.port, data_dir=args.data_dir, workers=args.workers)
    except server.StartError as exc:
        raise CommandError(str(exc)) from None
    return 0


def demo(args: argparse.Namespace) -> int:
    from relaylog.demo.runner import DemoError, Options
    from relaylog.demo.runner import run as run_demo

    try:
        return run_demo(Options(args.demo_dir, args.host, args.port))
    except DemoError as exc:
        raise CommandError(str(exc)) from None


def verify(args: argparse.Namespace) -> int:
    if bool(args.url) == bool(args.stack):
        raise UsageError("relaylog verify: error: give --url URL (a relaylog serve) or --stack NAME (AWS)")
    if args.athena and not args.stack:
        raise UsageError("relaylog verify: error: --athena needs --stack")
    from relaylog.verify.command import Options
    from relaylog.verify.command import verify as run

    options = Options(args.url, args.stack, args.key or None, args.athena, dict(args.timeout or []), args.json)
    return run(options)
