"""The lock files against pyproject.toml, offline. `make lock-check` resolves again (it needs the
package index) and compares byte for byte; this catches a hand edit or a forgotten `make lock` in
every test run: a pin outside pyproject's range, a Lambda file at another version than what the tests
ran with, a package [tool.relaylog.lambda] names missing from its file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LAMBDA_FILES: dict[str, list[str]] = PYPROJECT["tool"]["relaylog"]["lambda"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def pins(path: str) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in PIN.findall((ROOT / path).read_text())}


DEV = pins("requirements/dev.txt")


def test_every_dependency_and_extra_is_pinned_within_its_range() -> None:
    project = PYPROJECT["project"]
    wanted = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    for line in wanted:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == "relaylog":  # the test extra naming the others
            continue
        assert name in DEV, f"{name} is in pyproject.toml but not in requirements/dev.txt: run make lock"
        assert requirement.specifier.contains(DEV[name], prereleases=True), (name, DEV[name], str(requirement))


def test_serve_installs_the_dependencies_alone_at_the_tested_versions() -> None:
    serve = pins("requirements/serve.txt")
    assert {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]} <= serve.keys()
    assert not {"pytest", "moto", "openai", "ruff", "mypy"} & serve.keys()
    assert {name: DEV[name] for name in serve} == serve


@pytest.mark.parametrize("path", sorted(LAMBDA_FILES))
def test_lambda_requirements_are_the_tested_versions(path: str) -> None:
    deployed = pins(path)
    assert {canonicalize_name(name) for name in LAMBDA_FILES[path]} <= deployed.keys()
    # Every package the artifact installs at the version the tests ran with (dev.txt resolves for any
    # platform; a Lambda-only dependency would show up here as missing from dev.txt).
    assert {name: DEV.get(name) for name in deployed} == deployed
    assert "--hash=sha256:" in (ROOT / path).read_text()
