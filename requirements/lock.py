"""Writes the lock files from pyproject.toml (`make lock`), or says which ones are stale (`--check`).

  requirements/dev.txt     the dependencies and every extra: `make test`, `make lint` (any platform,
                           Python 3.11 and later)
  requirements/serve.txt   the dependencies alone: `make serve` (at dev.txt's versions, so a venv
                           made by `make serve` only gains packages when `make test` runs in it)
  layers/requirements.txt, functions/*/requirements.txt
                           what each Lambda artifact installs ([tool.relaylog.lambda] names the
                           packages), at dev.txt's versions, for Lambda's python3.13 on x86_64

Every file pins exact versions with their hashes. pyproject.toml's [tool.uv] exclude-newer makes a
resolution repeatable, so --check can resolve again and compare byte for byte. uv pip compile
resolves (pip-compile cannot resolve for another platform than the one it runs on, as the Lambda
files need).
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV = "requirements/dev.txt"
SERVE = "requirements/serve.txt"
# Lambda's runtime (template.yaml: python3.13, x86_64) and the oldest Python relaylog supports.
LAMBDA = ["--python-platform", "x86_64-manylinux_2_17", "--python-version", "3.13"]
ANY = ["--universal", "--python-version", "3.11"]
HEADER = (
    "# {what}: {names} ([tool.relaylog.lambda] in pyproject.toml)\n"
    "# at the versions of {dev}. Written by `make lock`: do not edit.\n"
)


def uv(*args: str, stdin: str | None = None) -> None:
    command = [str(Path(sys.executable).with_name("uv")), "pip", "compile", "--quiet", "--generate-hashes", *args]
    subprocess.run(command, cwd=ROOT, input=stdin, text=True, check=True)


def write_all(out: Path, constraints: str) -> dict[str, Path]:
    """Every lock file under `out` (same relative paths), the Lambda ones constrained by `constraints`."""
    lambda_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["relaylog"]["lambda"]
    written = {DEV: out / DEV, SERVE: out / SERVE}
    for path in written.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    command = ["--custom-compile-command", "make lock"]
    uv("pyproject.toml", "--all-extras", *ANY, *command, "-o", str(written[DEV]))
    uv("pyproject.toml", *ANY, *command, "-c", constraints, "--no-annotate", "-o", str(written[SERVE]))
    for name, packages in lambda_files.items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        plain = ["--no-header", "--no-annotate"]
        uv("-", *LAMBDA, "-c", constraints, *plain, "-o", str(target), stdin="\n".join(packages))
        header = HEADER.format(what=f"What {name} installs", names=", ".join(sorted(packages)), dev=DEV)
        target.write_text(header + target.read_text())
        written[name] = target
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="resolve again and compare; change nothing")
    args = parser.parse_args()
    if not args.check:
        write_all(ROOT, DEV)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        # The committed pins are uv's preferences, as for `make lock`: only a change of inputs moves them.
        for name in (DEV, SERVE):
            if (ROOT / name).exists():
                (fresh / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / name, fresh / name)
        # Constrained by the committed dev.txt: if it is stale, that is said first anyway.
        written = write_all(fresh, DEV)
        stale = []
        for name, path in written.items():
            committed = (ROOT / name).read_text() if (ROOT / name).exists() else ""
            fresh_text = path.read_text()
            if fresh_text != committed:
                stale.append(name)
                diff = difflib.unified_diff(committed.splitlines(True), fresh_text.splitlines(True), name, "make lock")
                sys.stdout.writelines(diff)
    if stale:
        print(f"stale: {', '.join(stale)}: pyproject.toml changed without `make lock`, or they were edited by hand")
        return 1
    print("lock files match pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
