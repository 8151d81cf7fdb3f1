"""The functions and the layer as Lambda receives them, and a Python as Lambda runs them.

`build_from_clone` runs the plain `sam build` in a fresh clone of the committed HEAD, in a folder
named `relaylog` (what `git clone` gives a user). `package` zips each built artifact with the SAM
CLI's own packaging code (the code `sam deploy` runs: every entry dated 1980-01-01, Lambda's
permissions) and unzips it the way unzip does (modes and dates kept). `managed_runtime` is a
python3.13 with only boto3 beside it: what the managed runtime ships. `lambda_env` is what a
function's process would see: the template's variables, the function's code first on the path and
the layer where Lambda mounts it (/opt/python), and no way out to AWS.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.sam import ROOT, RUNTIME_PYTHON, TOOLS, load_template, run, runtime_python_dir, tool

LAYER = "SharedLayer"
# Where the managed runtime looks for the layer's code (/opt/python); the tests put it at that
# position on the path instead.
LAYER_MOUNT = "/opt/python"
# SAM's packaging, driven as `sam package`/`sam deploy` drive it: `upload_local_artifacts` picks the
# zip method for the resource type and hands the zip to the uploader, which here keeps a copy.
_PACKAGE = """
import json, shutil, sys
from pathlib import Path
from samcli.lib.package.utils import upload_local_artifacts
from samcli.yamlhelper import yaml_parse

build, out = Path(sys.argv[1]), Path(sys.argv[2])

class KeepZip:
    bucket_name, prefix = "bucket", "prefix"
    def __init__(self, name):
        self.name = name
    def upload_with_dedup(self, path, precomputed_md5=None, extension=None):
        shutil.copy(path, out / f"{self.name}.zip")
        return f"s3://bucket/{self.name}.zip"

template = yaml_parse((build / "template.yaml").read_text())
zips = {}
for name, resource in template["Resources"].items():
    prop = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}.get(resource["Type"])
    if prop is None or prop not in resource["Properties"]:
        continue
    upload_local_artifacts(resource["Type"], name, resource["Properties"], prop, str(build), KeepZip(name))
    zips[name] = str(out / f"{name}.zip")
print(json.dumps(zips))
"""


@dataclass(frozen=True)
class Unzipped:
    """Each artifact unzipped under root/<logical id>; `dates` holds every zip entry's date."""

    root: Path
    dates: frozenset[tuple[int, ...]]

    def task(self, function: str) -> Path:
        """What Lambda puts at /var/task for this function."""
        return self.root / function

    @property
    def layer(self) -> Path:
        """What Lambda mounts at /opt/python."""
        return self.root / LAYER / "python"


def build_from_clone(parent: Path) -> Path:
    """Clone the committed HEAD into parent/relaylog, run `sam build` there: its .aws-sam/build."""
    checkout = parent / "relaylog"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(checkout)], check=True, capture_output=True)
    result = run([tool("sam"), "build"], cwd=checkout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return checkout / ".aws-sam" / "build"


def sam_zip(build: Path, out: Path) -> dict[str, Path]:
    """Each artifact of a `sam build` output zipped by the SAM CLI's packaging: logical id -> zip."""
    out.mkdir(parents=True, exist_ok=True)
    result = run([str(TOOLS / "python"), "-c", _PACKAGE, str(build), str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    return {name: Path(path) for name, path in json.loads(result.stdout).items()}


def unzip(archive: Path, dest: Path) -> set[tuple[int, int, int, int, int, int]]:
    """Extract as unzip does (zipfile alone would drop modes and dates); the entries' dates."""
    dates = set()
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            path = Path(zipped.extract(info, dest))
            if mode := info.external_attr >> 16:
                path.chmod(mode & 0o7777)
            stamp = datetime(*info.date_time).timestamp()
            os.utime(path, (stamp, stamp))
            dates.add(info.date_time)
    return dates


def package(build: Path, scratch: Path) -> Unzipped:
    """Zip each artifact as `sam deploy` does, then unzip it as Lambda receives it."""
    root = scratch / "unzipped"
    dates: set[tuple[int, ...]] = set()
    for name, archive in sam_zip(build, scratch / "zips").items():
        dates |= unzip(archive, root / name)
    return Unzipped(root, frozenset(dates))


def managed_runtime(dest: Path) -> Path:
    """The functions' Python with boto3 and its dependencies and nothing else: its interpreter."""
    subprocess.run([str(Path(runtime_python_dir()) / RUNTIME_PYTHON), "-m", "venv", str(dest)], check=True)
    python = dest / "bin" / RUNTIME_PYTHON
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "boto3"], check=True, capture_output=True)
    return python


def _rendered(value: Any, parameters: dict[str, Any]) -> str:
    """A template value as the function would see it: parameters at their defaults, other
    references as placeholders."""
    if isinstance(value, dict) and "Ref" in value:
        ref = value["Ref"]
        return str(parameters[ref]["Default"]) if ref in parameters else f"test-{ref.lower()}"
    return str(value)


def lambda_env(function: str, task: Path, layer: Path, **extra: str) -> dict[str, str]:
    """The environment of `function`'s process: its variables from template.yaml, Lambda's own,
    the function's code then the layer on the path (the managed runtime's order), and AWS
    endpoints on a closed loopback port (nothing leaves the machine)."""
    template = load_template()
    variables = template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {})
    env = {name: _rendered(value, template["Parameters"]) for name, value in variables.items()}
    env.pop("AWS_LAMBDA_EXEC_WRAPPER", None)  # the tests start the wrapper themselves
    env.update(
        PATH="/usr/bin:/bin",
        LANG="C.UTF-8",
        LAMBDA_TASK_ROOT=str(task),
        PYTHONPATH=f"{task}:{layer}",
        # Lambda's file system is read-only: nothing may be written beside the code.
        PYTHONDONTWRITEBYTECODE="1",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_LAMBDA_FUNCTION_NAME=function,
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
    )
    env.update(extra)
    return env


# Run by the managed runtime's python: executes each argument as a statement, then says which
# sources had to be compiled (a .pyc that was missing or did not match) and where each module came
# from. Every compile goes through SourceLoader.source_to_code; a valid .pyc never reaches it.
_PROBE = """
import importlib._bootstrap_external as external, json, sys
compiled = []
_compile = external.SourceLoader.source_to_code
def source_to_code(self, data, path, *, _optimize=-1):
    compiled.append(str(path))
    return _compile(self, data, path, _optimize=_optimize)
external.SourceLoader.source_to_code = source_to_code
for statement in sys.argv[1:]:
    exec(statement, {})
files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
print(json.dumps({"compiled": compiled, "files": files}))
"""


@dataclass(frozen=True)
class Probe:
    compiled: list[str]  # sources compiled at import, not loaded from a .pyc
    files: list[str]  # every imported module's file


def probe(python: Path, env: dict[str, str], *statements: str) -> Probe:
    """Run `statements` in a fresh process of `python` (-P: no script folder on the path, as
    Lambda's bootstrap has none of ours), from the task root as Lambda does."""
    result = subprocess.run(
        [str(python), "-P", "-c", _PROBE, *statements],
        env=env,
        cwd=env["LAMBDA_TASK_ROOT"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    found = json.loads(result.stdout.splitlines()[-1])
    return Probe(found["compiled"], found["files"])
