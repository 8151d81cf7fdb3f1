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


_NO_VALUE = object()  # a property left out (AWS::NoValue)


def _holds(node: Any, parameters: dict[str, str], conditions: dict[str, Any]) -> Any:
    """A condition's value: Fn::Equals, Not, Or, And, Join and Condition over parameter Refs."""
    if isinstance(node, list):
        return [_holds(item, parameters, conditions) for item in node]
    if not isinstance(node, dict):
        return node
    ((name, args),) = node.items()
    match name:
        case "Ref":
            return parameters[args]
        case "Condition":
            return _holds(conditions[args], parameters, conditions)
        case "Fn::Equals":
            first, second = _holds(args, parameters, conditions)
            return str(first) == str(second)
        case "Fn::Not":
            return not _holds(args[0], parameters, conditions)
        case "Fn::Or":
            return any(_holds(args, parameters, conditions))
        case "Fn::And":
            return all(_holds(args, parameters, conditions))
        case "Fn::Join":
            # A CommaDelimitedList parameter (BedrockModels) is a list to Fn::Join.
            delimiter, items = args[0], _holds(args[1], parameters, conditions)
            return delimiter.join(items.split(",") if isinstance(items, str) else items)
    raise AssertionError(f"{name} in a condition")


def _chosen(node: Any, kept: set[str]) -> Any:
    """`node` with each Fn::If replaced by its branch (`kept`: the conditions that hold), and what
    AWS::NoValue names left out."""
    if isinstance(node, list):
        return [v for v in (_chosen(item, kept) for item in node) if v is not _NO_VALUE]
    if not isinstance(node, dict):
        return node
    if list(node) == ["Fn::If"]:
        condition, then, otherwise = node["Fn::If"]
        return _chosen(then if condition in kept else otherwise, kept)
    if node == {"Ref": "AWS::NoValue"}:
        return _NO_VALUE
    return {k: v for k, v in ((k, _chosen(v, kept)) for k, v in node.items()) if v is not _NO_VALUE}


def deployed(**values: str) -> dict[str, Any]:
    """The transformed template as CloudFormation deploys it with these parameter values (the others
    at their defaults, and the given ones made the defaults): resources and outputs whose condition
    is false left out, each Fn::If replaced by its branch, no conditions left."""
    template = transformed()
    parameters = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()} | values
    conditions: dict[str, Any] = template.get("Conditions", {})
    kept = {name for name, condition in conditions.items() if _holds(condition, parameters, conditions)}
    rendered: dict[str, Any] = {key: value for key, value in template.items() if key != "Conditions"}
    # The values given stand as the parameters' defaults, which is what a linter resolves a Ref to.
    rendered["Parameters"] = {name: spec | ({"Default": values[name]} if name in values else {})
                              for name, spec in template["Parameters"].items()}  # fmt: skip
    for section in ("Resources", "Outputs"):
        rendered[section] = {
            name: _chosen({k: v for k, v in entry.items() if k != "Condition"}, kept)
            for name, entry in template.get(section, {}).items()
            if "Condition" not in entry or entry["Condition"] in kept
        }
    return rendered
