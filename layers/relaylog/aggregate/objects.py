"""Reading one delivered S3 object: gzip or plain (told by its first bytes, not its name), one record a line."""

from __future__ import annotations

import gzip
import logging
import re
import zlib
from collections.abc import Iterable, Set
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

log = logging.getLogger("relaylog.aggregate")

GZIP_MAGIC = b"\x1f\x8b"
LOGGED_BAD_LINES = 10  # per object; the total is logged once
# dt and hour place a record in S3 keys and DynamoDB items: their shape is checked, not trusted.
_DT = re.compile(r"\d{4}-\d{2}-\d{2}")
_HOUR = re.compile(r"[01]\d|2[0-3]")


class ObjectError(ValueError):
    """The object cannot be read at all (not one of its records can be trusted)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    # Tells this object from a later one written under the same key: the version id where the
    # bucket keeps versions, else the ETag.
    version: str


@dataclass(frozen=True, slots=True)
class Decoded:
    records: list[dict[str, Any]]
    bad_lines: int
    # Where each record sits: its 0-based index in the decompressed bytes split on b"\n" (kept
    # beside the records, not in them, so the rollup and the Parquet see the records unchanged).
    lines: list[int]


def fetch(s3: Any, bucket: str, key: str) -> Fetched:
    answer = s3.get_object(Bucket=bucket, Key=key)
    data = answer["Body"].read()
    version = answer.get("VersionId") or answer["ETag"].strip('"')
    return Fetched(data, version)


def decode(data: bytes, name: str, required: Set[str]) -> Decoded:
    """The records in an object's bytes: JSON objects holding at least the `required` fields, with
    `dt` and `hour` shaped like 2026-11-26 and 21.

    Any other line is skipped and logged by its number (`name` says which object); its content
    never reaches a log, as a record may hold prompts.
    """
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ObjectError(f"{name}: not readable as gzip ({type(exc).__name__})") from None
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    bad = 0
    for index, line in _numbered(data):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if isinstance(record, dict) and record.keys() >= required and _placed(record):
            records.append(record)
            lines.append(index)
        else:
            bad += 1
            if bad <= LOGGED_BAD_LINES:
                log.warning("skipped line %d of %s: not a relaylog record", index + 1, name)
    if bad > LOGGED_BAD_LINES:
        log.warning("skipped %d lines of %s in all", bad, name)
    return Decoded(records, bad, lines)


def _numbered(data: bytes) -> Iterable[tuple[int, bytes]]:
    """The lines `splitlines` gives, each with its index in `data.split(b"\n")`.

    Numbered by b"\n" alone, as a reader fetching one record by its index will split; a lone b"\r"
    still ends a line (as `splitlines` always did), its pieces sharing the b"\n" line's index.
    """
    if b"\r" not in data:  # the usual case, without a second pass over every line
        return enumerate(data.split(b"\n"))
    return [(index, piece) for index, segment in enumerate(data.split(b"\n")) for piece in segment.splitlines()]


def _placed(record: dict[str, Any]) -> bool:
    dt, hour = record.get("dt"), record.get("hour")
    if not (isinstance(dt, str) and isinstance(hour, str) and _DT.fullmatch(dt) and _HOUR.fullmatch(hour)):
        return False
    try:
        date.fromisoformat(dt)
    except ValueError:
        return False
    return True
