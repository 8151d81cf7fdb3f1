"""OpenTelemetry export off the hot path: relaylog with span export off, to a collector that is
down, to one that never answers, and to a live receiver, under the same load, in one run.

    python bench/otel.py                  # about 5 minutes; --help for options
    python bench/otel.py --seconds 3 --rounds 1

It starts `python -m relaylog.standin` and one `relaylog serve` per setting (records to a temporary
data dir, the OTLP variables set in its environment), and drives non-streamed and streamed chat
completions at 16 connections. Settings are measured in turn, `--rounds` times, and each cell is
the median over rounds. "live" sends to tests.support.otlp's receiver running in this process, so
its decoding competes for the same cores as the relay and the load generator. Everything shares
this machine's cores: compare the rows with each other, not with another machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))

from load import Call, LoadResult, run_load  # noqa: E402
from procs import Proc, cpu_seconds, kill_all, machine_busy_seconds, start_relaylog, start_standin  # noqa: E402
from relay import LONG, PATH, SDK_HEADERS, SMALL, STREAM  # noqa: E402

from tests.support.otlp import BlackHole, OtlpReceiver, closed_port  # noqa: E402

SETTINGS = ("off", "down", "no answer", "live")


def otel_env(setting: str, receiver: OtlpReceiver, hole: BlackHole) -> dict[str, str]:
    if setting == "off":
        return {}
    endpoint = {
        "down": f"http://127.0.0.1:{closed_port()}",
        "no answer": hole.url,
        "live": receiver.http_url,
    }[setting]
    # A short schedule delay: spans leave within 50 ms, the busiest the exporter thread gets.
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2000",
    }


@dataclass
class Run:
    load: LoadResult
    # CPU time per completed request: the relay's process, and the exporter process it started.
    relay_us: float
    exporter_us: float


def _exporters(proc: Proc) -> list[int]:
    found = []
    for pid in proc.tree():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"relaylog.otel.worker" in f.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def measured(proc: Proc, call: Call, seconds: int) -> Run:
    exporters = _exporters(proc)
    relay_pid = proc.popen.pid
    before = cpu_seconds(relay_pid), sum(cpu_seconds(p) for p in exporters)
    load = run_load(call, 16, seconds)
    after = cpu_seconds(relay_pid), sum(cpu_seconds(p) for p in exporters)
    per = 1e6 / load.requests if load.requests else 0.0
    return Run(load, (after[0] - before[0]) * per, (after[1] - before[1]) * per)


def run_setting(setting: str, env: dict[str, str], standin_url: str, work: Path, seconds: int) -> dict[str, Run]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # start_relaylog copies this process's environment for the child
    try:
        proc, url = start_relaylog(work, standin_url, work / f"data-{setting.replace(' ', '-')}-{time.time_ns()}", 1)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        plain = Call(url + PATH, SMALL, SDK_HEADERS)
        stream = Call(url + PATH, STREAM, SDK_HEADERS + LONG)
        run_load(plain, 16, 1)  # warm-up: upstream pool, first records, the exporter's first batch
        return {"plain": measured(proc, plain, seconds), "stream": measured(proc, stream, seconds)}
    finally:
        proc.stop()


def per_record_costs(count: int = 1000, repeats: int = 7) -> dict[str, float]:
    """Microseconds per record of each step the exporter thread takes, best of `repeats` (the
    minimum is the least disturbed by other processes on a shared machine)."""
    import uuid
    from datetime import UTC, datetime

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from relaylog.config import OtelSettings
    from relaylog.otel.export import SpanShipper
    from relaylog.otel.spans import span_data

    from tests.support.records import make_record

    logging.getLogger("relaylog.otel").setLevel(logging.ERROR)  # its drop warnings are expected here
    created = datetime(2026, 11, 25, 22, 10, tzinfo=UTC)
    records = [make_record(created, request_id=str(uuid.uuid4())) for _ in range(count)]
    shipper = SpanShipper(OtelSettings(endpoint=f"http://127.0.0.1:{closed_port()}/v1/traces", timeout_s=0.2), {})
    best: dict[str, float] = {}

    def timed(name: str, step: object) -> object:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = step()  # type: ignore[operator]
            times.append(time.perf_counter() - started)
        best[name] = min(times) / count * 1e6
        return result

    data = timed("record -> span attributes (relaylog)", lambda: [span_data(r, {}, False) for r in records])
    spans = timed("span data -> SDK span", lambda: [shipper._readable(d) for d in data])  # type: ignore[attr-defined]
    timed("SDK OTLP protobuf encoding", lambda: encode_spans(spans).SerializePartialToString())
    shipper.export(records[:1])  # fails: the collector is down, the pause begins
    timed("offer() during the pause after a failure", lambda: shipper.offer(records))
    shipper.close(0.1)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=4, help="times each setting is measured, in turn")
    opts = parser.parse_args(argv)
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        del os.environ[key]
    work = Path(tempfile.mkdtemp(prefix="relaylog-bench-otel-"))
    results: dict[str, list[dict[str, Run]]] = {s: [] for s in SETTINGS}
    busy_before, started = machine_busy_seconds(), time.monotonic()
    try:
        standin, standin_url = start_standin(work)
        with OtlpReceiver() as receiver, BlackHole() as hole:
            for _ in range(opts.rounds):
                for setting in SETTINGS:
                    env = otel_env(setting, receiver, hole)
                    results[setting].append(run_setting(setting, env, standin_url, work, opts.seconds))
            spans_received = len(receiver.spans)
        standin.stop()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        kill_all()
    busy = (machine_busy_seconds() - busy_before) / (time.monotonic() - started)
    print(
        f"\nrelaylog serve --workers 1, 16 connections, {opts.seconds}s runs, median of {opts.rounds} round(s);"
        f" machine busy {busy:.2f} of {os.cpu_count()} cores on average\n"
    )
    print(f"{'':<12} {'plain':^46}   {'streamed':^46}")
    header = f"{'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'relay us':>9} {'export us':>10}"
    print(f"{'OTel export':<12} {header}   {header}")
    for setting in SETTINGS:
        runs = results[setting]
        cells = []
        errors = 0
        for kind in ("plain", "stream"):
            cells.append(
                f"{statistics.median(r[kind].load.rps for r in runs):>7.0f}"
                f" {statistics.median(r[kind].load.p50_ms for r in runs):>7.2f}"
                f" {statistics.median(r[kind].load.p99_ms for r in runs):>7.2f}"
                f" {statistics.median(r[kind].relay_us for r in runs):>9.0f}"
                f" {statistics.median(r[kind].exporter_us for r in runs):>10.0f}"
            )
            errors += sum(r[kind].load.non2xx + r[kind].load.socket_errors for r in runs)
        print(f"{setting:<12} {cells[0]}   {cells[1]}" + (f"   errors: {errors}" if errors else ""))
    print("(relay us, export us: CPU time per request of the relay's process and of its exporter process)")
    print(f"\nspans received by the live receiver: {spans_received}")
    print("\nCPU per record in the exporter process, best of 7 x 1000 records:")
    for step, micros in per_record_costs().items():
        print(f"  {step:<44} {micros:>8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
