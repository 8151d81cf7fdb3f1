"""The request index: one DynamoDB item per record, plus one item per prompt template text (aws/layout.py).

An index item holds the record's summary columns (never its bodies), the hash of its prompt
template, and `source`, `source_version` and `line`: the S3 object (and its version id or ETag)
and the 0-based line (of the decompressed object split on b"\\n") that hold the full record. Its
GSI attributes (request_id, session_id, prompt_id, user_id) are left out when absent, so each
index holds only the items it is about.

A request's index item is also the marker that gives the request to one object: claims.py puts it
on condition. Prompt texts need no marker: each is a function of its own key, so plain puts in
BatchWriteItem calls, repeated on a redelivery, put back the same item.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, TypeGuard

from botocore.exceptions import ClientError

from ..aws import layout
from ..prompts import template_hash, template_of
from ..record import SUMMARY_FIELDS
from .retry import MAX_ATTEMPTS, RETRY_ERRORS, backoff, error_code

log = logging.getLogger("relaylog.aggregate")

BATCH_ITEMS = 25  # DynamoDB's limit per BatchWriteItem
# Calls made at once (batches here, claims in claims.py): an object of 100,000 records is 4,000
# batches or 100,000 claims, minutes one after another. Below botocore's 10 pooled connections.
WRITERS = 8
BODY_READERS = 8  # offloaded bodies read at once: each is one S3 round trip
# An offloaded body larger than this is not read for its template (Lambda takes requests of at
# most 6 MB, so only a body from elsewhere is this large).
MAX_BODY_BYTES = 16 * 2**20
# A template text longer than this gets no prompt text item: a DynamoDB item is at most 400 KB,
# and one that does not fit would fail its whole batch on every redelivery.
MAX_TEMPLATE_BYTES = 350_000
# A GSI partition key is at most 2,048 bytes and cannot be an empty string: a value that could not
# be indexed is left out of the item rather than failing the batch it is in.
MAX_INDEX_KEY_BYTES = 2048
MAX_SORT_KEY_BYTES = 1024


_GSI_KEYS = frozenset(partition for partition, _ in layout.INDEXES.values())
# What S3 answers for a body that is gone: AccessDenied rather than NoSuchKey to a caller that may
# not list the bucket, as the aggregator may not.
_GONE = frozenset({"NoSuchKey", "AccessDenied", "404", "403"})


class IndexWriteError(RuntimeError):
    """Items stayed unprocessed after every attempt: the message must come back and write them again."""


@dataclass(frozen=True, slots=True)
class Templates:
    hashes: list[str | None]  # per record: its template's hash, None without a prompt_id or template
    texts: dict[tuple[str, str], str]  # (prompt_id, hash) -> the template text, each version once


def _number(value: int | float) -> dict[str, str] | None:
    """A DynamoDB number in fixed point (never an exponent), or None for one DynamoDB cannot hold."""
    if isinstance(value, int):
        return {"N": str(value)} if abs(value) < 10**38 else None
    if not math.isfinite(value):
        return None
    # repr is the shortest decimal that reads back as the same float: no binary noise digits.
    exact = Decimal(repr(value))
    if exact and not -130 <= exact.adjusted() <= 125:
        return None
    return {"N": f"{exact:f}"}


def _attribute(value: Any) -> dict[str, Any] | None:
    """The low-level DynamoDB value of a record field, or None to leave the attribute out."""
    if value is None:
        return None
    if isinstance(value, bool):  # before int: a bool is an int too
        return {"BOOL": value}
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, Mapping):  # properties: a map of strings; empty names cannot be map keys
        strings = {str(k): {"S": v if isinstance(v, str) else str(v)} for k, v in value.items() if k and v is not None}
        return {"M": strings} if strings else None
    return None  # schema v1 has no other types


def _indexable(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value.encode("utf-8", "surrogatepass")) <= MAX_INDEX_KEY_BYTES


def expires_at(record: Mapping[str, Any], days: int) -> int:
    """Epoch seconds `days` after the record's created_at (its dt at midnight if created_at is unreadable)."""
    try:
        created = datetime.fromisoformat(record["created_at"])
    except (KeyError, TypeError, ValueError):
        created = datetime.fromisoformat(record["dt"])  # checked by objects.decode
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return int((created + timedelta(days=days)).timestamp())


@dataclass(frozen=True, slots=True)
class Source:
    """Where index items point: an S3 object, the version of it that was read, and how long items live."""

    key: str
    version: str  # version id, or ETag (objects.Fetched.version)
    expires_days: int  # after the record's created_at
    # Epoch seconds before which no item expires: an item is also a marker (claims.py), and must
    # outlive every redelivery of its object, whatever the record's age and RELAYLOG_INDEX_DAYS.
    kept_until: int = 0


def index_item(
    record: Mapping[str, Any], source: Source, line: int, template: str | None = None, shards: int = 1
) -> dict[str, Any] | None:
    """The request index item of `record` (low-level attribute values), found at `line` of `source`,
    `template` being its template's hash, on a day of `shards` shards; None when the record has no
    request_id and created_at to key it by."""
    request_id, created_at = record.get("request_id"), record.get("created_at")
    if not (_indexable(request_id) and isinstance(created_at, str) and created_at):
        return None
    sk = layout.requests_sk(created_at, request_id)
    if len(sk.encode("utf-8", "surrogatepass")) > MAX_SORT_KEY_BYTES:
        return None
    item: dict[str, Any] = {"pk": {"S": layout.request_partition(record["dt"], request_id, shards)}, "sk": {"S": sk}}
    for name in SUMMARY_FIELDS:
        value = record.get(name)
        if name in _GSI_KEYS and not _indexable(value):
            continue
        attribute = _attribute(value)
        if attribute is not None:
            item[name] = attribute
    if template is not None:
        item["template"] = {"S": template}
    item["source"] = {"S": source.key}
    item["source_version"] = {"S": source.version}
    item["line"] = {"N": str(line)}
    item[layout.TTL_ATTRIBUTE] = {"N": str(max(expires_at(record, source.expires_days), source.kept_until))}
    return item


def prompt_item(prompt_id: str, template: str) -> dict[str, Any]:
    """The text of one template version. No prompt_id attribute: it would put the item in by_prompt."""
    return {
        "pk": {"S": layout.prompt_pk(prompt_id)},
        "sk": {"S": f"T#{template_hash(template)}"},
        "template": {"S": template},
    }


def read_body(s3: Any, bucket: str, key: str) -> bytes | None:
    """An offloaded body's bytes; None when it is gone or too large (its template is then unknown)."""
    try:
        answer = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in _GONE:
            raise  # throttling, S3 down: the message comes back and tries again
        log.warning("request body %s not readable (%s): its prompt template is left out", key, code)
        return None
    body = answer["Body"]
    if answer.get("ContentLength", 0) > MAX_BODY_BYTES:
        body.close()
        return None
    data: bytes = body.read()
    return data


def _offloaded_template(s3: Any, bucket: str, key: str) -> str | None:
    data = read_body(s3, bucket, key)
    return template_of(data.decode("utf-8", "replace")) if data is not None else None


def templates(s3: Any, bucket: str, records: Sequence[Mapping[str, Any]]) -> Templates:
    """The template of each record that has a prompt_id, reading bodies offloaded to S3
    (`request_body_ref`, under bodies/ in `bucket`) a few at a time."""
    found = Templates([None] * len(records), {})

    def note(number: int, text: str | None) -> None:
        if text is None:
            return
        hashed = found.hashes[number] = template_hash(text)
        # Each version's text kept once: records' templates are as large as their bodies.
        found.texts.setdefault((records[number]["prompt_id"], hashed), text)

    offloaded: dict[str, list[int]] = {}
    for number, record in enumerate(records):
        if not _indexable(record.get("prompt_id")):
            continue
        body, ref = record.get("request_body"), record.get("request_body_ref")
        if isinstance(body, str):
            note(number, template_of(body))
        elif isinstance(ref, str) and ref.startswith(layout.BODIES_PREFIX):  # a record names no other object
            offloaded.setdefault(ref, []).append(number)
    if offloaded:
        with ThreadPoolExecutor(max_workers=min(BODY_READERS, len(offloaded))) as pool:
            read = pool.map(partial(_offloaded_template, s3, bucket), offloaded)
            for ref, text in zip(offloaded, read, strict=True):
                for number in offloaded[ref]:
                    note(number, text)
    return found


def prompt_items(texts: Mapping[tuple[str, str], str]) -> list[dict[str, Any]]:
    """One item per (prompt_id, template hash); a text too large for an item is left out."""
    items = []
    for (prompt_id, hashed), text in texts.items():
        if len(text.encode("utf-8", "surrogatepass")) <= MAX_TEMPLATE_BYTES:
            items.append(prompt_item(prompt_id, text))
        else:
            log.warning("template %s of prompt %s too large to store; indexed by hash only", hashed, prompt_id)
    return items


def request_items(
    records: Sequence[Mapping[str, Any]],
    lines: Sequence[int],
    source: Source,
    hashes: Sequence[str | None],
    shards: Callable[[str], int] = lambda dt: 1,
) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """(position in `records`, index item) for each record but repeats, made as they are consumed
    (all at once would double the memory the records take); the item is None for a record without
    a request_id/created_at to key it by. `shards`: a day's shard count (shards.DayShards.of).

    A request found twice in the object (a retried delivery) is yielded once, at its first line:
    its later lines are the same request, which the object's own claim would let it count again.
    """
    seen: set[tuple[str, str]] = set()
    skipped = 0
    for position, (record, line, hashed) in enumerate(zip(records, lines, hashes, strict=True)):
        item = index_item(record, source, line, hashed, shards(record["dt"]))
        if item is None:
            skipped += 1
            yield position, None
        elif (key := (item["pk"]["S"], item["sk"]["S"])) not in seen:
            seen.add(key)
            yield position, item
    if skipped:
        log.warning("%d records of %s have no request_id/created_at to index them by", skipped, source.key)


def _batches(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append({"PutRequest": {"Item": item}})
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_index(
    client: Any,
    table: str,
    items: Iterable[dict[str, Any]],
    *,
    sleep: Callable[[float], None] = time.sleep,
    writers: int = WRITERS,
    batch_items: int = BATCH_ITEMS,
) -> int:
    """Put `items` in BatchWriteItem calls, `writers` of them at once, retrying what DynamoDB leaves
    unprocessed; returns how many items. In no particular order when `writers` > 1.

    Raises IndexWriteError when items are still unprocessed after MAX_ATTEMPTS calls of one batch.
    """
    written = 0
    if writers <= 1:
        for batch in _batches(items, batch_items):
            written += _write_batch(client, table, batch, sleep)
        return written
    with ThreadPoolExecutor(max_workers=writers) as pool:
        running: set[Future[int]] = set()
        try:
            for batch in _batches(items, batch_items):
                if len(running) >= 2 * writers:  # a few batches ahead, not the whole object
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    written += sum(future.result() for future in done)  # the first failure is raised here
                running.add(pool.submit(_write_batch, client, table, batch, sleep))
            done, running = wait(running)
            written += sum(future.result() for future in done)
        finally:
            for future in running:  # after a failure: no batch that has not started
                future.cancel()
    return written


def _write_batch(client: Any, table: str, pending: list[dict[str, Any]], sleep: Callable[[float], None]) -> int:
    size = len(pending)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        reason = ""
        try:
            answer = client.batch_write_item(RequestItems={table: pending})
        except ClientError as exc:
            reason = error_code(exc)
            if reason not in RETRY_ERRORS or attempt == MAX_ATTEMPTS:
                raise
        else:
            pending = answer.get("UnprocessedItems", {}).get(table, [])
            if not pending:
                return size
            if attempt == MAX_ATTEMPTS:
                raise IndexWriteError(f"{len(pending)} index items unprocessed after {MAX_ATTEMPTS} attempts")
            reason = f"{len(pending)} unprocessed"
        delay = backoff(attempt)
        log.info("DynamoDB batch write retried after %s, in %.2f s", reason, delay)
        sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
