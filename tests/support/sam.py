"""SAM CLI and cfn-lint from the tools venv (`make` installs it), and the template as data."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
TOOLS = ROOT / ".venv-tools" / "bin"


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        raise AssertionError(f"{path} is missing: run `make test`, which installs the SAM CLI there")
    return str(path)


# The functions' runtime (template.yaml): Lambda Managed Instances runs Python 3.13 and later only.
RUNTIME_PYTHON = "python3.13"


def runtime_python_dir() -> str:
    """A directory holding the functions' Python, which `sam build` needs on PATH to build without Docker."""
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    version = RUNTIME_PYTHON.removeprefix("python")
    candidates = sorted(glob.glob(f"{root}/versions/{version}*/bin/{RUNTIME_PYTHON}"))
    if candidates:
        return str(Path(candidates[-1]).parent)
    found = shutil.which(RUNTIME_PYTHON)  # a pyenv shim would not do: it needs a selected version
    if found and "shims" not in found:
        return str(Path(found).parent)
    raise AssertionError(f"{RUNTIME_PYTHON} is needed for `sam build` (the functions' runtime)")


def run(args: list[str], timeout: float = 600, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SAM_CLI_TELEMETRY": "0",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PATH": f"{runtime_python_dir()}:{os.environ['PATH']}",
    }
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


_TRANSFORM = """
import json, sys
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

class NoManagedPolicies:
    def load(self):
        return {}

template = yaml_parse(open(sys.argv[1]).read())
for resource in template["Resources"].values():
    for uri in ("CodeUri", "ContentUri"):
        if uri in resource.get("Properties", {}):
            resource["Properties"][uri] = "s3://bucket/key"  # what `sam package` puts there
print(json.dumps(transform(template, {}, NoManagedPolicies())))
"""


@cache
def _transformed_json(template: str) -> str:
    result = run([str(TOOLS / "python"), "-c", _TRANSFORM, str(TEMPLATE)])
    assert result.returncode == 0, result.stderr
    return result.stdout


def transformed() -> dict[str, Any]:
    """The template as CloudFormation receives it after the SAM transform (the SAM CLI's own
    translator); translated once per version of the template, a fresh copy each call."""
    loaded: dict[str, Any] = json.loads(_transformed_json(TEMPLATE.read_text()))
    return loaded


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub, ...) as plain values."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_CfnLoader.add_multi_constructor("!", _tag)


def load_template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)  # noqa: S506 (SafeLoader subclass)
    return loaded


