"""`python -m relaylog.standin --port N [--host 127.0.0.1] [--record] [--no-gzip] [--fault SPEC]`:
serve in the foreground. Prints `standin listening on http://HOST:PORT` once the socket is open."""

from __future__ import annotations

import argparse

from .server import StandIn


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m relaylog.standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument(
        "--record", action="store_true", help="keep received requests in memory (off by default: nothing can read them)"
    )
    parser.add_argument("--no-gzip", action="store_true", help="never compress responses")
    parser.add_argument("--fault", default=None, help="default x-standin-fault for requests without the header")
    args = parser.parse_args()
    StandIn(args.host, args.port, record=args.record, gzip=not args.no_gzip, fault=args.fault).serve_forever()


if __name__ == "__main__":
    main()
