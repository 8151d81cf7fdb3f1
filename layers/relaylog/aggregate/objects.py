"""Reading a delivered object: gzip or plain (told by its bytes, not its name), one record a line."""

from __future__ import annotations

import gzip
import logging
import zlib
from typing import Any

import orjson

log = logging.getLogger("relaylog.aggregate")

GZIP_MAGIC = b"\x1f\x8b"


class ObjectError(ValueError):
    """The object cannot be read at all (not one record can be trusted)."""


def decode(data: bytes, name: str) -> tuple[list[dict[str, Any]], int]:
    """The records in an object and how many lines were skipped as unreadable."""
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ObjectError(f"{name}: corrupt gzip: {exc}") from exc
    records: list[dict[str, Any]] = []
    bad = 0
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not all(k in record for k in ("request_id", "dt", "hour")):
            bad += 1
            # The position only: a line may hold prompts, which never go to logs.
            log.warning("%s line %d is not a record; skipped", name, number)
            continue
        records.append(record)
    return records, bad
