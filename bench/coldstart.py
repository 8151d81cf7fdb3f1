"""Cold start of the proxy function as Lambda receives it: imports, app creation, size.

    .venv/bin/python bench/coldstart.py [--build-dir DIR]

Clones the committed HEAD into a folder named relaylog and runs the plain `sam build` there (the
SAM CLI from .venv-tools, no Docker; python3.13 under pyenv or on PATH), or takes an existing
`sam build` output (`--build-dir .aws-sam/build` after `sam build` measures uncommitted work).
Each artifact is zipped by the SAM CLI's own packaging code and unzipped, as `sam deploy` and
Lambda do; a python3.13 with only boto3 (the managed runtime) then runs on the unzipped function
and layer, laid out as the exec wrapper lays them out. Prints the min and median of fresh
processes. Targets: under 300 ms of imports and under 40 MB unzipped for the proxy function.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.lambda_artifacts import (  # noqa: E402
    Unzipped,
    build_from_clone,
    lambda_env,
    managed_runtime,
    package,
)

RUNS = 11
# What `python -m relaylog.runtime` (the exec wrapper) imports before its first GET /next, the app
# factory's module included; timed in the process itself (-X importtime adds its own overhead, so
# it only says where the time goes).
COLD_IMPORTS = "import relaylog.runtime.__main__, relaylog.aws.proxy"
# Wall-clock time, and CPU time, which other processes sharing the machine disturb much less.
IMPORTS = (
    f"import time; t, c = time.perf_counter(), time.process_time(); {COLD_IMPORTS}; "
    "print((time.perf_counter() - t) * 1000, (time.process_time() - c) * 1000)"
)
# The biggest parts of those imports, by the cumulative time -X importtime gives their first import.
PARTS = ("ssl", "yarl", "botocore.session", "asyncio")
# All of the init phase before the first GET /next: the imports, then the app with its AWS clients.
CREATE = (
    "import time; t = time.perf_counter(); import relaylog.runtime.__main__; "
    "from relaylog.runtime.factory import create_app; app = create_app(); print((time.perf_counter() - t) * 1000)"
)
# What the first record pays, after the first response has gone out.
DEFERRED = (
    "import time; import relaylog.aws.proxy; t = time.perf_counter(); from relaylog.cost import load_prices; "
    "load_prices(); from aws_lambda_powertools import Metrics; print((time.perf_counter() - t) * 1000)"
)


def _size_mb(*paths: Path) -> float:
    return sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file()) / 2**20


def _python(python: Path, layer: Path, task: Path, code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    env = lambda_env("ProxyFunction", task, layer)
    return subprocess.run(
        [str(python), *flags, "-P", "-c", code], env=env, cwd=task, capture_output=True, text=True, check=True
    )


def _parts_ms(stderr: str) -> dict[str, float]:
    """Cumulative ms of each of PARTS and relaylog's own modules' self time, from -X importtime's
    `self | cumulative | name` lines."""
    found: dict[str, float] = {"relaylog (own code)": 0.0}
    for line in stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].strip()
        if name in PARTS and name not in found:
            found[name] = int(parts[1]) / 1000
        elif name.startswith("relaylog."):
            found["relaylog (own code)"] += int(parts[0].split(":")[1]) / 1000
    return found


def _without_relaylog_bytecode(layer: Path, scratch: Path) -> Path:
    """A copy of the layer whose relaylog has no usable bytecode: what timestamp-based .pyc files
    amount to after SAM's zip (each cold start compiles relaylog, and cannot keep the result)."""
    copy = scratch / "stale-layer"
    shutil.copytree(layer, copy, symlinks=True)
    for cache in (copy / "relaylog").rglob("__pycache__"):
        shutil.rmtree(cache)
    return copy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", type=Path, help="an existing `sam build` output to measure")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="relaylog-coldstart-"))
    try:
        build = args.build_dir.resolve() if args.build_dir else build_from_clone(scratch)
        unzipped: Unzipped = package(build, scratch)
        python = managed_runtime(scratch / "managed-runtime")
        _report(unzipped, python, scratch, "committed HEAD" if args.build_dir is None else str(args.build_dir))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _report(unzipped: Unzipped, python: Path, scratch: Path, source: str) -> None:
    layer, task = unzipped.layer, unzipped.task("ProxyFunction")
    _python(python, layer, task, COLD_IMPORTS)  # warm the OS page cache, as a fair baseline
    timed = [_python(python, layer, task, IMPORTS).stdout.split() for _ in range(RUNS)]
    imports, imports_cpu = [float(wall) for wall, _ in timed], [float(cpu) for _, cpu in timed]
    breakdown = [_parts_ms(_python(python, layer, task, COLD_IMPORTS, "-X", "importtime").stderr) for _ in range(RUNS)]
    create = [float(_python(python, layer, task, CREATE).stdout) for _ in range(RUNS)]
    deferred = [float(_python(python, layer, task, DEFERRED).stdout) for _ in range(RUNS)]
    stale = _without_relaylog_bytecode(layer, scratch)
    _python(python, stale, task, COLD_IMPORTS)
    stale_imports = [float(_python(python, stale, task, IMPORTS).stdout.split()[0]) for _ in range(RUNS)]
    proxy_mb = _size_mb(task, unzipped.root / "SharedLayer")
    aggregator_mb = _size_mb(unzipped.task("AggregatorFunction"), unzipped.root / "SharedLayer")

    # Timings as min (the cost itself, least disturbed by other processes) and median (what a busy
    # machine gives); the verdict is on the median. Sizes have one value.
    timings = [
        ("proxy imports before serving (ms)", imports, "< 300"),
        ("the same imports, CPU time (ms)", imports_cpu, "< 300"),
        ("the same, relaylog compiled at start (ms)", stale_imports, ""),
        ("init: imports + create_app with AWS clients (ms)", create, ""),
        ("after the 1st response: prices + metrics (ms)", deferred, ""),
    ]
    sizes = [
        ("proxy function + layer, unzipped (MB)", proxy_mb, "< 40"),
        ("aggregator function + layer, unzipped (MB)", aggregator_mb, "< 250 (Lambda limit)"),
    ]
    print(f"{source}: `sam build`, zipped by SAM's packaging and unzipped; {python.name} with only boto3;")
    print(f"{RUNS} fresh processes each")
    print(f"  {'':<48} {'min':>8} {'median':>8}   target")
    for name, values, target in timings:
        middle = statistics.median(values)
        print(f"  {name:<48} {min(values):>8.1f} {middle:>8.1f}   {target:<22} {_verdict(middle, target)}")
        if values is imports_cpu:
            print("    where the imports go (-X importtime, which inflates them):")
            for part in breakdown[0]:
                spent = [b[part] for b in breakdown]
                print(f"      {part:<44} {min(spent):>8.1f} {statistics.median(spent):>8.1f}")
    for name, value, target in sizes:
        print(f"  {name:<48} {'':>8} {value:>8.1f}   {target:<22} {_verdict(value, target)}")


def _verdict(value: float, target: str) -> str:
    if not target.startswith("<"):
        return ""
    return "PASS" if value < float(target.split()[1]) else "MISS"


if __name__ == "__main__":
    main()
