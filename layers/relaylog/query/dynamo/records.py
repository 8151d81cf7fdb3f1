"""Full records from S3: the line of the object an index item points at, bodies kept apart, and
the previews of a page of requests (records never change, so previews are kept once made)."""

from __future__ import annotations

import gzip
import io
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from botocore.exceptions import ClientError

from relaylog.aws import layout
from relaylog.query.backend import NotFound
from relaylog.query.dynamo.items import record
from relaylog.query.dynamo.table import parallel
from relaylog.query.preview import previews
from relaylog.record import BODY_FIELDS

# What the query function puts in an answer: a Function URL's buffered answer is at most 6 MB, and
# JSON escaping can grow a body, so a larger one is linked (a presigned S3 URL) instead.
INLINE_BODY_MAX = 2 * 2**20
BODY_URL_SECONDS = 900
# Previews kept by request id (a few hundred bytes each): what a dashboard pages through in a while.
MAX_CACHED_PREVIEWS = 20_000
_GONE = frozenset({"NoSuchKey", "AccessDenied", "404", "403"})
_NO_PREVIEWS: dict[str, str | None] = dict.fromkeys(("request_preview", "response_preview"))


class Records:
    """`inline_body_max`: the largest body put in a record as text (larger ones get a `*_body_url`);
    None: every body, whatever its size."""

    def __init__(self, s3: Any, bucket: str, inline_body_max: int | None = INLINE_BODY_MAX) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.inline_body_max = inline_body_max
        self._previews: dict[str, dict[str, str | None]] = {}  # oldest first
        self._lock = threading.Lock()

    def read_object(self, key: str) -> bytes | None:
        """An S3 object's bytes; None when it is gone (S3 says AccessDenied to a reader that may not list)."""
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in _GONE:
                return None
            raise
        data: bytes = answer["Body"].read()
        return data

    def lines(self, source: str, wanted: Iterable[int]) -> dict[int, Any] | None:
        """The decoded JSON of these 0-based lines of an S3 object of records (read once, up to the
        last line wanted); None when the object is gone."""
        data = self.read_object(source)
        if data is None:
            return None
        lines = gzip.GzipFile(fileobj=io.BytesIO(data)) if data[:2] == b"\x1f\x8b" else io.BytesIO(data)
        wanted = set(wanted)
        found: dict[int, Any] = {}
        for number, text in enumerate(lines):
            if number in wanted:
                found[number] = orjson.loads(text)
                if len(found) == len(wanted):
                    break
        return found

    def full_record(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """The record an index item points at: line `line` of the S3 object `source`, bodies included."""
        found = record(_raw_record(item, self.lines(item["source"], [int(item["line"])])))
        for body in BODY_FIELDS:
            found[f"{body}_url"] = None
            ref = found[f"{body}_ref"]
            if found[body] is not None or not (isinstance(ref, str) and ref.startswith(layout.BODIES_PREFIX)):
                continue
            if self.inline_body_max is not None and self._size(ref) > self.inline_body_max:
                found[f"{body}_url"] = self.s3.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": ref}, ExpiresIn=BODY_URL_SECONDS
                )
                continue
            data = self.read_object(ref)
            found[body] = data.decode("utf-8", "replace") if data is not None else None
        return found

    def _size(self, key: str) -> int:
        try:
            size: int = self.s3.head_object(Bucket=self.bucket, Key=key)["ContentLength"]
        except ClientError:
            return 0  # gone or unreadable: read_object says which, as for any body
        return size

    def previews_of(self, items: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str | None]]:
        """Previews by request id. The index holds no bodies, so the records are read from S3, each
        object once, and kept: records never change, and the dashboard asks for its first page every
        two seconds. A record gone from S3 has no previews."""
        found: dict[str, dict[str, str | None]] = {}
        by_source: dict[str, list[Mapping[str, Any]]] = {}
        with self._lock:
            for item in items:
                cached = self._previews.get(item["request_id"])
                if cached is not None:
                    found[item["request_id"]] = cached
                else:
                    by_source.setdefault(item["source"], []).append(item)
        sources = list(by_source)
        read = parallel(lambda source: self.lines(source, (int(i["line"]) for i in by_source[source])), sources)
        made: dict[str, dict[str, str | None]] = {}
        for source, lines in zip(sources, read, strict=True):
            for item in by_source[source]:
                try:
                    made[item["request_id"]] = previews(_raw_record(item, lines))
                except NotFound:
                    found[item["request_id"]] = dict(_NO_PREVIEWS)
        with self._lock:
            self._previews.update(made)
            while len(self._previews) > MAX_CACHED_PREVIEWS:
                del self._previews[next(iter(self._previews))]
        return {**found, **made}


def _raw_record(item: Mapping[str, Any], lines: Mapping[int, Any] | None) -> dict[str, Any]:
    """The record of an index item among the lines read from its object; NotFound when it is not there."""
    request_id = item["request_id"]
    if lines is None:
        raise NotFound(f"the record of request {request_id!r} is no longer in S3 ({item['source']})")
    raw = lines.get(int(item["line"]))
    if not isinstance(raw, dict) or raw.get("request_id") != request_id:
        raise NotFound(f"the record of request {request_id!r} is not where the index says ({item['source']})")
    return raw
