"""Soak with faults: thousands of mixed calls through relaylog, locally and on the Lambda runtime
with the Firehose sink under moto, while the provider stand-in fails at random and clients leave
at random; then one true record per call, and on AWS rollups equal to the sums over the records.

    .venv/bin/python bench/soak.py                 # 3,000 local + 1,000 AWS calls, ~5 minutes
    .venv/bin/python bench/soak.py --aws-calls 0   # local only, under a minute
    .venv/bin/python bench/soak.py --help

Everything runs in this process on 127.0.0.1 (stand-in, relaylog, Runtime API emulator, moto) and
is seeded: the same --seed plans the same calls with the same request ids and faults. Prints one
table (calls, records, missing, duplicates, unknown records, mismatches, known failures, rollup
items that agree) and exits 1 when anything but a known failure is wrong. What each check means
is in bench/README.md ("Soak with faults"); the logic is tests/support/soak.py, which
tests/test_soak.py runs shorter in `make test`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Lambda-side logs and EMF metrics would print a line per call and per object: only errors here.
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

from relaylog.standin import StandIn  # noqa: E402

from tests.support.soak import KINDS, KNOWN, Report, plan_calls, soak_aws, soak_local, table  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls through the local app (default 3000)")
    parser.add_argument("--aws-calls", type=int, default=1000, help="calls through Lambda + Firehose (default 1000)")
    parser.add_argument("--wave", type=int, default=100, help="AWS calls per fresh moto stack (default 100)")
    parser.add_argument("--concurrency", type=int, default=32, help="clients at once, locally (default 32)")
    parser.add_argument("--runtimes", type=int, default=4, help="concurrent Lambda environments (default 4)")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--image-share", type=float, default=0.04, help="share of calls with a 200-600 KB image")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    # relaylog logs each provider cut and uvicorn each response it had to abort: hundreds of
    # expected lines (uvicorn resets its loggers' levels at start, hence disable). The table says
    # what went wrong.
    logging.disable(logging.ERROR)
    mix = ", ".join(f"{kind} {weight}" for kind, weight in KINDS.items())
    print(f"seed {opts.seed}; fault mix (weights): {mix}", flush=True)
    reports: list[Report] = []
    with StandIn(record=False) as standin, tempfile.TemporaryDirectory(prefix="relaylog-soak-") as work:
        if opts.calls:
            calls = plan_calls(opts.seed, opts.calls, image_share=opts.image_share)
            reports.append(soak_local(calls, standin.url, Path(work) / "data", opts.concurrency, opts.seed))
            print(f"local: {opts.calls} calls in {reports[-1].seconds:.1f} s", flush=True)
        if opts.aws_calls:
            calls = plan_calls(opts.seed + 1, opts.aws_calls, image_share=opts.image_share)
            concurrency = min(opts.concurrency, 2 * opts.runtimes)
            # Powertools prints EMF lines every 100 metric values even when metrics are disabled.
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                reports.append(
                    soak_aws(calls, standin.url, concurrency, opts.runtimes, opts.wave, opts.seed, _progress)
                )
            print(f"aws: {opts.aws_calls} calls in {reports[-1].seconds:.1f} s", flush=True)
    print()
    print(table(reports, KNOWN))
    return 0 if all(r.ok(KNOWN) for r in reports) else 1


def _progress(line: str) -> None:
    print(line, file=sys.__stdout__, flush=True)


if __name__ == "__main__":
    sys.exit(main())
