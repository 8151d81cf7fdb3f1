"""What the aggregator's DynamoDB writes cost per record: write units, worked out from AWS's documented
rules over the requests it makes (on moto, no AWS account), and the client CPU its request index
writes take (botocore against a local endpoint that answers at once).

    .venv/bin/python bench/writes.py [records per object] [objects] [--units-only]

Then the client CPU of the index writes, and the wall-clock time of one object's rollup chunks
written one at a time and several at once, against a local endpoint that answers after a delay.

Synthetic records as bench/rollup.py makes them (12 models, 2,000 users, 5,000 sessions, 0-3
properties), cut into objects that process_object reads from moto's S3 one after another; then one
more object holding copies of the first tenth of the records (a resent PutRecordBatch).

Write units, from the DynamoDB developer guide:
- a standard write costs one unit per KB (1,024 bytes) of the item, rounded up; an update, of the
  larger of the item before and after; a conditional write the condition refuses costs the same
  as if written (read-write-operations.html, "Capacity unit consumption for write operations");
- a transactional write costs two units per KB (transaction-apis.html, "Capacity management for
  transactions");
- each global secondary index the item enters or changes in costs one unit per KB of its index
  entry: the table keys, the index keys and the projected attributes (GSI.html, "Provisioned
  throughput considerations for global secondary indexes");
- an item's size is the sum of its attribute names and values: strings in UTF-8 bytes, numbers one
  byte per two significant digits plus one, booleans and nulls one byte, maps and lists three
  bytes plus their elements, each one byte more (CapacityUnitCalculations.html).
The item sizes before and after each write are read from moto's table.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from botocore.exceptions import ClientError  # noqa: E402
from moto import mock_aws  # noqa: E402
from relaylog.aggregate.process import process_object  # noqa: E402
from relaylog.aws import layout  # noqa: E402

from bench.rollup import synthetic  # noqa: E402
from tests.support.aws import create_stack, fake_credentials  # noqa: E402

KB = 1024
KINDS = {layout.ROLLUP_PK: "rollup items", layout.OBJECT_PK: "object markers",
         layout.REQUESTS_PK: "request index", layout.PROMPT_PK: "prompt texts"}  # fmt: skip


def value_size(value: Mapping[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(data.encode("utf-8", "surrogatepass"))
    if kind == "N":
        digits = Decimal(data).normalize().as_tuple().digits
        return math.ceil(len(digits) / 2) + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "B":
        return len(data)
    if kind == "M":
        return 3 + sum(len(name.encode()) + value_size(v) + 1 for name, v in data.items())
    if kind == "L":
        return 3 + sum(value_size(v) + 1 for v in data)
    raise ValueError(f"no size rule for {kind}")


def size(item: Mapping[str, Any] | None) -> int:
    return 0 if item is None else sum(len(name.encode()) + value_size(value) for name, value in item.items())


def units(nbytes: int) -> int:
    return math.ceil(nbytes / KB)


class Metered:
    """A DynamoDB client that adds up the write units of the aggregator's writes, by kind of item."""

    def __init__(self, real: Any, table: str) -> None:
        self.real, self.table = real, table
        self.units: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()  # claims are put from several threads
        described = real.describe_table(TableName=table)["Table"]
        # index → (its key attributes, ALL or KEYS_ONLY)
        self.indexes = {
            gsi["IndexName"]: ([k["AttributeName"] for k in gsi["KeySchema"]], gsi["Projection"]["ProjectionType"])
            for gsi in described.get("GlobalSecondaryIndexes", [])
        }

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def _item(self, key: Mapping[str, Any]) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.real.get_item(TableName=self.table, Key=key, ConsistentRead=True).get(
            "Item"
        )
        return found

    def _entries(self, item: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
        """The item's entry in each index it is in."""
        entries = {}
        for name, (keys, projection) in self.indexes.items():
            if item is None or not all(k in item for k in keys):
                continue
            kept = item if projection == "ALL" else {k: item[k] for k in ("pk", "sk", *keys)}
            entries[name] = dict(kept)
        return entries

    def _index_units(self, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> int:
        old, new = self._entries(before), self._entries(after)
        total = 0
        for name in old.keys() | new.keys():
            if old.get(name) == new.get(name):
                continue
            keys = self.indexes[name][0]
            moved = name in old and name in new and any(old[name][k] != new[name][k] for k in keys)
            total += (units(size(old[name])) if moved else 0) + units(max(size(old.get(name)), size(new.get(name))))
        return total

    def _kind(self, key: Mapping[str, Any]) -> str:
        return KINDS[key["pk"]["S"].split("#", 1)[0]]

    def _write(self, item: Mapping[str, Any], transactional: bool) -> None:
        key = {"pk": item["pk"], "sk": item["sk"]}
        before = self._item(key)
        kind = self._kind(key)
        self.units[kind] += (2 if transactional else 1) * units(max(size(before), size(item)))
        self.units[f"{kind} (GSIs)"] += self._index_units(before, item)

    def put_item(self, **kwargs: Any) -> Any:
        item = kwargs["Item"]
        before = self._item(_key(item))
        try:
            answer = self.real.put_item(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                with self.lock:
                    self.calls["PutItem"] += 1
                    self.units["refused puts"] += units(max(size(before), size(item)))
            raise
        kind, index_units = self._kind(item), self._index_units(before, item)
        with self.lock:
            self.calls["PutItem"] += 1
            self.units[kind] += units(max(size(before), size(item)))
            self.units[f"{kind} (GSIs)"] += index_units
        return answer

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> Any:  # noqa: N803
        self.calls["BatchWriteItem"] += 1
        for request in RequestItems[self.table]:
            self._write(request["PutRequest"]["Item"], transactional=False)
        return self.real.batch_write_item(RequestItems=RequestItems)

    def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> Any:  # noqa: N803
        self.calls["TransactWriteItems"] += 1
        keys = [
            action["Update"]["Key"] if "Update" in action else _key(action["Put"]["Item"]) for action in TransactItems
        ]
        befores = [self._item(key) for key in keys]
        answer = self.real.transact_write_items(TransactItems=TransactItems)
        for key, before in zip(keys, befores, strict=True):
            self.units[self._kind(key)] += 2 * units(max(size(before), size(self._item(key))))
        return answer


def _key(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"pk": item["pk"], "sk": item["sk"]}


def write_units(per_object: int, objects: int) -> None:
    fake_credentials()
    records = synthetic(per_object * objects)
    batches = [records[i : i + per_object] for i in range(0, len(records), per_object)]
    copies = records[: len(records) // 10]
    with mock_aws():
        stack = create_stack("relaylog-bench")
        s3 = stack.client("s3")
        metered = Metered(stack.client("dynamodb"), stack.table)
        rows = []
        for label, members in (("objects", batches), ("one object of copies", [copies])):
            metered.units.clear()
            metered.calls.clear()
            for number, batch in enumerate(members):
                folder = layout.partition_path(layout.RAW_PREFIX, batch[0]["dt"], batch[0]["hour"])
                key = f"{folder}{label[:4]}-{number}.gz"
                stack.put_raw_object(key, batch)
                process_object(s3, metered, stack.table, stack.bucket, key)
            rows.append((label, sum(map(len, members)), dict(metered.units), dict(metered.calls)))
    print(f"write units per record ({objects} objects of {per_object:,} records, then {len(copies):,} copies)")
    kinds = sorted({kind for _, _, found, _ in rows for kind in found})
    print("{:>22}".format("") + "".join(f"{label:>24}" for label, *_ in rows))
    for kind in kinds:
        print(f"{kind:>22}" + "".join(f"{found.get(kind, 0) / n:>24.3f}" for _, n, found, _ in rows))
    print(f"{'total':>22}" + "".join(f"{sum(found.values()) / n:>24.3f}" for _, n, found, _ in rows))
    for call in sorted({c for *_, calls in rows for c in calls}):
        print(f"{call + ' calls':>22}" + "".join(f"{calls.get(call, 0) / n:>24.3f}" for _, n, _, calls in rows))


# -- client CPU per request index item ------------------------------------------------------------

_STUB = """
import http.server, sys, time
DELAY = float(sys.argv[1])
class Answer(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(DELAY)
        body = b'{"UnprocessedItems":{}}' if "BatchWriteItem" in self.headers["X-Amz-Target"] else b"{}"
        head = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/x-amz-json-1.0\\r\\nContent-Length: %d\\r\\n\\r\\n"
        self.wfile.write(head % len(body) + body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
print(server.server_port, flush=True)
server.serve_forever()
"""


def _stub(delay: float) -> tuple[subprocess.Popen[str], int]:
    """A DynamoDB endpoint in another process that answers every call after `delay` seconds."""
    stub = subprocess.Popen([sys.executable, "-c", _STUB, str(delay)], stdout=subprocess.PIPE, text=True)
    return stub, int(stub.stdout.readline()) if stub.stdout else 0


def _client(port: int, checked: bool) -> Any:
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"mode": "standard", "max_attempts": 2}, parameter_validation=checked),
    )


def client_cpu(n: int) -> None:
    """Process CPU per index item: BatchWriteItem of 25 (the index before claims) against one
    conditional PutItem each (claims.claim), with botocore's parameter check and without it (the
    aggregator's client), the answers coming at once from another process."""
    from relaylog.aggregate.claims import claim
    from relaylog.aggregate.index import Source, index_item, write_index

    stub, port = _stub(0.0)
    try:
        checked, unchecked = _client(port, True), _client(port, False)
        source = Source("raw/dt=2026-11-26/hour=08/bench.gz", "etag", 30)
        records = synthetic(n)
        items = [item for i, r in enumerate(records) if (item := index_item(r, source, i, None, 32)) is not None]
        print(f"\nclient CPU per request index item ({len(items):,} items, 8 writer threads, best of 3)")
        for label, work in (
            ("BatchWriteItem, 25 an item", lambda: write_index(checked, "t", items)),
            ("PutItem on condition", lambda: claim(checked, "t", source, len(items), enumerate(items))),
            ("the same, unchecked", lambda: claim(unchecked, "t", source, len(items), enumerate(items))),
        ):
            best = min(_cpu(work) for _ in range(3))
            print(f"{label:>28} {best / len(items) * 1e6:>8.0f} µs   {len(items) / best:>8,.0f} items/s per CPU")
    finally:
        stub.terminate()
        stub.wait()


def chunk_writes(n: int, delay: float) -> None:
    """One object's rollup chunks (dynamo.apply_once) against an endpoint that answers each call
    after `delay` seconds, as DynamoDB does after its round trip: one chunk at a time, and 8."""
    from relaylog.aggregate.dynamo import apply_once
    from relaylog.aggregate.rollup import rollup

    stub, port = _stub(delay)
    try:
        client = _client(port, False)
        deltas = rollup(synthetic(n))
        chunks = -(-len(deltas) // 99)
        print(f"\nrollup chunks of one object of {n:,} records ({len(deltas):,} updates, {chunks} transactions,"
              f" answers after {delay * 1000:.0f} ms; best of 3)")  # fmt: skip
        print(f"{'':>16}{'wall s':>10}{'records/s':>12}{'CPU µs/update':>15}")
        for writers in (1, 8):
            runs = []
            for _ in range(3):
                wall, cpu = time.perf_counter(), time.process_time()
                apply_once(client, "t", f"OBJECT#bench-{writers}", deltas, writers=writers)
                runs.append((time.perf_counter() - wall, time.process_time() - cpu))
            wall_s, cpu_s = min(runs)
            label = f"{writers} at once" if writers > 1 else "one at a time"
            print(f"{label:>16}{wall_s:>10.2f}{n / wall_s:>12,.0f}{cpu_s / len(deltas) * 1e6:>15.0f}")
    finally:
        stub.terminate()
        stub.wait()


def _cpu(work: Any) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def main() -> None:
    numbers = [int(arg) for arg in sys.argv[1:] if not arg.startswith("--")]
    per_object, objects = [*numbers, 1_000, 3][0], [*numbers[1:], 3][0]
    write_units(per_object, objects)
    if "--units-only" not in sys.argv:  # e.g. run on a checkout from before claims.py
        client_cpu(2_000)
        chunk_writes(20_000, 0.010)


if __name__ == "__main__":
    main()
