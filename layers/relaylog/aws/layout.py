"""Where relaylog's data lives on AWS: S3 prefixes, DynamoDB item keys, environment names.

One module so the proxy, the aggregator, the CLI, the template and the tests agree on every name.

S3 (one bucket):
    raw/dt=YYYY-MM-DD/hour=HH/...         Firehose deliveries (GZIP, newline-delimited records)
    spool/dt=YYYY-MM-DD/hour=HH/...       records the proxy wrote itself while Firehose was down
    bodies/dt=YYYY-MM-DD/<id>.<kind>      bodies too large for a record (`*_body_ref`)
    curated/dt=YYYY-MM-DD/<name>.parquet  the aggregator's Parquet, what Athena queries
    errors/...                            Firehose delivery errors
    athena-results/                       the Athena workgroup's output
    cache/<key>/<slot>                    cached responses too large for a DynamoDB item (expired by a
                                          lifecycle rule after 366 days; the item's TTL governs use)

DynamoDB (one table, string keys `pk` and `sk`, TTL attribute `expires_at`):
    rollups       pk ROLLUP#h#2026-11-26T21 | ROLLUP#d#2026-11-26
                  sk all# | model#<m> | provider#<p> | user#<u> | session#<s> | key#<id>
                     | property#<name>=<value>   (a header name cannot contain '=')
    object marks  pk OBJECT#<bucket>/<key>#<version id or ETag>, sk chunk#<n>: that chunk of rollup
                  updates is applied
    keys          pk KEY, sk <sha256 of the key>
    request index pk REQS#<dt>#<shard>, sk <created_at>#<request_id>: one item per record, written by
                  the aggregator with TTL (RELAYLOG_INDEX_DAYS), its shard a hash of the
                  request_id modulo the day's shard count (pk REQS#<dt> on a day of one shard,
                  as every day was before shards): the record's summary columns (no
                  bodies), `template` (prompt template hash, see relaylog.prompts) and `source`,
                  `line`: the S3 object and 0-based line that hold the full record. Sparse GSIs:
                  by_id (request_id), by_session (session_id, sk), by_prompt (prompt_id, sk),
                  by_user (user_id, sk).
    index shards  pk SHARDS, sk <dt>: `shards` (Number), the day's shard count, put on condition by
                  the first aggregator to index that day and never changed (no TTL): readers find
                  every shard of a day, and a record always gets the same item, whatever the
                  setting (RELAYLOG_INDEX_SHARDS) is now. No item: one shard.
    prompt texts  pk PROMPT#<prompt_id>, sk T#<template hash>: the template text, written once
    scores        pk SCORE#<request_id>, sk scores: `scores` map name -> number or bool, `feedback_comment`
    cache         pk CACHE#<cache key>, sk slot#<n>: `entry` (Binary, the encoded response) or `object`
                  (its S3 key under cache/), `until` (epoch seconds, float) and TTL
    rate counters pk RATE#<counter>, sk n: `n` (Number, requests or cents used in the window) and TTL
"""

from __future__ import annotations

import zlib

RAW_PREFIX = "raw/"
SPOOL_PREFIX = "spool/"
BODIES_PREFIX = "bodies/"
CURATED_PREFIX = "curated/"
ERRORS_PREFIX = "errors/"
ATHENA_RESULTS_PREFIX = "athena-results/"
CACHE_PREFIX = "cache/"

# Environment variables the template sets on the functions.
ENV_BUCKET = "RELAYLOG_BUCKET"
ENV_TABLE = "RELAYLOG_TABLE"
ENV_FIREHOSE_STREAM = "RELAYLOG_FIREHOSE_STREAM"
ENV_HOURLY_TTL_DAYS = "RELAYLOG_HOURLY_ROLLUP_DAYS"
ENV_INDEX_DAYS = "RELAYLOG_INDEX_DAYS"
ENV_INDEX_SHARDS = "RELAYLOG_INDEX_SHARDS"

ROLLUP_PK = "ROLLUP"
OBJECT_PK = "OBJECT"
KEY_PK = "KEY"
REQUESTS_PK = "REQS"
SHARDS_PK = "SHARDS"
PROMPT_PK = "PROMPT"
SCORE_PK = "SCORE"
CACHE_PK = "CACHE"
RATE_PK = "RATE"
RATE_SK = "n"
# Global secondary indexes of the request index: name -> (partition attribute, sort attribute).
INDEXES = {
    "by_id": ("request_id", None),
    "by_session": ("session_id", "sk"),
    "by_prompt": ("prompt_id", "sk"),
    "by_user": ("user_id", "sk"),
}
DEFAULT_INDEX_DAYS = 30
# Shards of a day's request index for days that have none yet. DynamoDB writes one partition at
# most 1,000 write units a second; an index item is one unit (under 1 KB), so 32 shards take
# 10,000 records a second at about a third of that (README, "At 10,000 calls a second").
DEFAULT_INDEX_SHARDS = 32
MAX_INDEX_SHARDS = 1000
TTL_ATTRIBUTE = "expires_at"


def partition_path(prefix: str, dt: str, hour: str | None = None) -> str:
    path = f"{prefix}dt={dt}/"
    return path + f"hour={hour}/" if hour is not None else path


def rollup_pk(grain: str, period: str) -> str:
    """grain 'h' with period '2026-11-26T21', or 'd' with period '2026-11-26'."""
    return f"{ROLLUP_PK}#{grain}#{period}"


def rollup_sk(dimension: str, value: str) -> str:
    return f"{dimension}#{value}"


def object_pk(bucket: str, key: str, version: str) -> str:
    """`version` (the object's version id or ETag) tells a new object under the same key from this one."""
    return f"{OBJECT_PK}#{bucket}/{key}#{version}"


def requests_pk(dt: str, shard: int | None = None) -> str:
    """A day's index partition: shard `shard` of it, or the day's only one (None)."""
    return f"{REQUESTS_PK}#{dt}" if shard is None else f"{REQUESTS_PK}#{dt}#{shard}"


def request_partition(dt: str, request_id: str, shards: int) -> str:
    """The partition of a request's index item on a day of `shards` shards. crc32, not hash(): the
    same in every process, so every copy of a record gets the same item (aggregate/claims.py)."""
    if shards <= 1:
        return requests_pk(dt)
    return requests_pk(dt, zlib.crc32(request_id.encode("utf-8", "surrogatepass")) % shards)


def day_partitions(dt: str, shards: int) -> list[str]:
    """Every index partition of a day of `shards` shards."""
    return [requests_pk(dt)] if shards <= 1 else [requests_pk(dt, shard) for shard in range(shards)]


def requests_sk(created_at: str, request_id: str) -> str:
    """Sorts by time within a day; the id keeps two calls in the same microsecond apart."""
    return f"{created_at}#{request_id}"


def prompt_pk(prompt_id: str) -> str:
    return f"{PROMPT_PK}#{prompt_id}"


def score_pk(request_id: str) -> str:
    return f"{SCORE_PK}#{request_id}"


def cache_pk(key: str) -> str:
    return f"{CACHE_PK}#{key}"


def cache_sk(slot: int) -> str:
    return f"slot#{slot}"


def cache_object(key: str, slot: int) -> str:
    """The S3 key of a cached response too large for its item."""
    return f"{CACHE_PREFIX}{key}/{slot}"


def rate_pk(counter: str) -> str:
    return f"{RATE_PK}#{counter}"
