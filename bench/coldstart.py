"""Cold start of the proxy function as `sam build` packages it: imports, app creation, size.

    .venv/bin/python bench/coldstart.py [--build-dir DIR]

Builds with the SAM CLI from .venv-tools (no Docker; python3.12 must be on PATH or under
pyenv), then runs python3.12 on the built layer the way Lambda lays it out (/opt/python), with
botocore installed beside it as the managed runtime provides it. Prints medians of fresh
processes. Targets: under 300 ms of imports and under 40 MB unzipped for the proxy function.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.sam import python312_dir, run, tool  # noqa: E402

RUNS = 7
COLD_IMPORTS = "import relaylog.runtime.loop, relaylog.aws.proxy"
CREATE = (
    "import time; t = time.perf_counter(); from relaylog.aws.proxy import create_app; app = create_app(); "
    "print((time.perf_counter() - t) * 1000)"
)
# What the first record pays, after the first response has gone out.
DEFERRED = (
    "import time; import relaylog.aws.proxy; t = time.perf_counter(); from relaylog.cost import load_prices; "
    "load_prices(); from aws_lambda_powertools import Metrics; print((time.perf_counter() - t) * 1000)"
)


def _size_mb(*paths: Path) -> float:
    return sum(f.stat().st_size for p in paths for f in p.rglob("*") if f.is_file()) / 2**20


def _python(layer: Path, runtime_libs: Path, code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        PYTHONPATH=f"{layer}:{runtime_libs}",
        AWS_REGION="us-east-1", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
        RELAYLOG_BUCKET="b", RELAYLOG_TABLE="t", RELAYLOG_FIREHOSE_STREAM="s",
    )  # fmt: skip
    python = str(Path(python312_dir()) / "python3.12")
    return subprocess.run([python, *flags, "-c", code], env=env, capture_output=True, text=True, check=True)


def _import_ms(stderr: str) -> float:
    total = 0
    for line in stderr.splitlines():
        parts = line.split("|")
        # Top-level imports only: their cumulative times add up to the whole.
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            total += int(parts[1])
    return total / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", type=Path, help="an existing `sam build` output to measure")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="relaylog-coldstart-"))
    build = args.build_dir or scratch / "build"
    if args.build_dir is None:
        done = run([tool("sam"), "build", "--build-dir", str(build)])
        if done.returncode:
            sys.exit(done.stdout + done.stderr)
    runtime_libs = scratch / "runtime-libs"  # the managed runtime's boto3/botocore
    python = str(Path(python312_dir()) / "python3.12")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--target", str(runtime_libs), "boto3"], check=True)
    subprocess.run([python, "-m", "compileall", "-q", str(runtime_libs)], check=True)
    layer = build / "SharedLayer" / "python"

    _python(layer, runtime_libs, COLD_IMPORTS)  # warm the OS page cache, as a fair baseline
    imports = [_import_ms(_python(layer, runtime_libs, COLD_IMPORTS, "-X", "importtime").stderr) for _ in range(RUNS)]
    create = [float(_python(layer, runtime_libs, CREATE).stdout) for _ in range(RUNS)]
    deferred = [float(_python(layer, runtime_libs, DEFERRED).stdout) for _ in range(RUNS)]
    proxy_mb = _size_mb(build / "ProxyFunction", build / "SharedLayer")
    aggregator_mb = _size_mb(build / "AggregatorFunction", build / "SharedLayer")

    rows = [
        ("proxy imports before serving (ms)", statistics.median(imports), "< 300"),
        ("create_app incl. imports and clients (ms)", statistics.median(create), ""),
        ("after the 1st response: prices + metrics (ms)", statistics.median(deferred), ""),
        ("proxy function + layer, unzipped (MB)", proxy_mb, "< 40"),
        ("aggregator function + layer, unzipped (MB)", aggregator_mb, "< 250 (Lambda limit)"),
    ]
    print(f"python3.12, {RUNS} fresh processes each, medians; layer built by layers/Makefile (bytecode included)")
    for name, value, target in rows:
        verdict = ""
        if target.startswith("<"):
            verdict = "PASS" if value < float(target.split()[1]) else "MISS"
        print(f"  {name:<48} {value:>8.1f}   {target:<22} {verdict}")


if __name__ == "__main__":
    main()
