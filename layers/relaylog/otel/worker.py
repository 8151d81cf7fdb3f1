"""`python -m relaylog.otel.worker`: the exporter process a relay starts (relaylog.otel.pipe).

Reads one line of settings, then record lines until the relay closes the pipe; exports them with
SpanShipper; at the end sends what was sent, dropped and failed back as one JSON line. Its
warnings go to the relay's own stderr.
"""

from __future__ import annotations

import dataclasses
import logging
import sys

import orjson

from ..config import OtelSettings


def _settings(raw: dict[str, object]) -> OtelSettings:
    fields = dict(raw)
    # JSON has no tuples: the pairs come back as lists.
    for name in ("headers", "resource"):
        fields[name] = tuple(tuple(pair) for pair in fields[name])  # type: ignore[attr-defined]
    return OtelSettings(**fields)  # type: ignore[arg-type]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:  %(name)s: %(message)s", stream=sys.stderr)
    source = sys.stdin.buffer
    config = orjson.loads(source.readline())
    from .export import SpanShipper

    shipper = SpanShipper(_settings(config["settings"]), config["overrides"])
    unreadable = 0
    for line in source:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            unreadable += 1
            continue
        shipper.offer((record,))
    shipper.close()
    stats = dataclasses.asdict(shipper.stats)
    stats["failed"] += unreadable
    try:
        sys.stdout.buffer.write(orjson.dumps(stats) + b"\n")
        sys.stdout.flush()
    except OSError:
        pass  # the relay is gone (killed): nobody is left to read the counts
    return 0


if __name__ == "__main__":
    sys.exit(main())
