"""template.yaml's two proxy capacities (ProxyCapacity): each rendered as CloudFormation would deploy it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.sam import deployed, load_template, run, tool

MODES = ("Lambda", "ManagedInstances")
# What a user passes in ManagedInstances mode (the defaults are empty lists).
VPC = {"ProxySubnetIds": "subnet-0a1b2c3d4e5f60001,subnet-0a1b2c3d4e5f60002,subnet-0a1b2c3d4e5f60003",
       "ProxySecurityGroupIds": "sg-0a1b2c3d4e5f60001"}  # fmt: skip
PROXY_FUNCTIONS = {"Lambda": "ProxyFunction", "ManagedInstances": "ProxyManagedFunction"}


def _deployed(mode: str) -> dict[str, Any]:
    return deployed(ProxyCapacity=mode, **(VPC if mode == "ManagedInstances" else {}))


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r["Properties"] for name, r in resources.items() if r["Type"] == kind}


def _references(node: Any) -> set[str]:
    """Every logical id or parameter that `node` names through Ref, Fn::GetAtt or Fn::Sub."""
    if isinstance(node, list):
        return set().union(*(_references(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = set()
    for key, value in node.items():
        if key == "Ref":
            found.add(value)
        elif key == "Fn::GetAtt":
            found.add(value[0] if isinstance(value, list) else value.split(".")[0])
        elif key == "Fn::Sub":
            text = value[0] if isinstance(value, list) else value
            names = value[1] if isinstance(value, list) else {}
            found |= {part.split("}")[0].split(".")[0] for part in text.split("${")[1:] if not part.startswith("!")}
            found -= set(names)
            found |= _references(names)
        else:
            found |= _references(value)
    return found


@pytest.mark.parametrize("mode", MODES)
def test_each_capacity_deploys_one_streaming_proxy_and_names_nothing_missing(mode: str) -> None:
    template = _deployed(mode)
    resources = template["Resources"]
    functions = _of_type(resources, "AWS::Lambda::Function")
    proxy = PROXY_FUNCTIONS[mode]
    assert set(functions) == {proxy, "AggregatorFunction", "QueryFunction"}
    assert {name: f["Runtime"] for name, f in functions.items()} == dict.fromkeys(functions, "python3.13")
    assert not [name for name, f in functions.items() if "VpcConfig" in f]  # Function URL streaming
    urls = _of_type(resources, "AWS::Lambda::Url")
    assert urls[f"{proxy}Url"] == {
        "AuthType": "NONE",
        "InvokeMode": "RESPONSE_STREAM",
        "TargetFunctionArn": {"Ref": proxy},
    }
    assert template["Outputs"]["ProxyUrl"]["Value"] == {"Fn::GetAtt": [f"{proxy}Url", "FunctionUrl"]}
    # The public grants a Function URL needs, for the proxy and the query function, and no others.
    permissions = [
        (p["Action"], p["FunctionName"]["Ref"]) for p in _of_type(resources, "AWS::Lambda::Permission").values()
    ]
    assert sorted(permissions) == sorted(
        [(a, f) for a in ("lambda:InvokeFunction", "lambda:InvokeFunctionUrl") for f in (proxy, "QueryFunction")]
    )
    # The proxy's role carries the one shared policy, and nothing else grants data access.
    role = resources[functions[proxy]["Role"]["Fn::GetAtt"][0]]["Properties"]
    assert {"Ref": "ProxyPolicy"} in role["ManagedPolicyArns"] and "Policies" not in role
    # Nothing refers to a resource this mode left out.
    known = set(resources) | set(template["Parameters"]) | {"AWS::AccountId", "AWS::Partition", "AWS::Region",
                                                             "AWS::StackId", "AWS::StackName", "AWS::URLSuffix"}  # fmt: skip
    dangling = _references({"Resources": resources, "Outputs": template["Outputs"]}) - known
    assert not dangling, dangling


def test_classic_mode_is_the_proxy_as_it_was_and_creates_no_capacity() -> None:
    resources = _deployed("Lambda")["Resources"]
    assert not [r for r in resources.values() if r["Type"] == "AWS::Lambda::CapacityProvider"]
    proxy = resources["ProxyFunction"]["Properties"]
    assert "CapacityProviderConfig" not in proxy
    assert proxy["MemorySize"] == {"Ref": "ProxyMemory"} and proxy["Timeout"] == {"Ref": "ProxyTimeout"}


def test_managed_instances_mode_puts_the_proxy_on_a_capacity_provider_in_the_given_vpc() -> None:
    resources = _deployed("ManagedInstances")["Resources"]
    (provider,) = _of_type(resources, "AWS::Lambda::CapacityProvider").values()
    assert provider["VpcConfig"] == {
        "SubnetIds": {"Ref": "ProxySubnetIds"},
        "SecurityGroupIds": {"Ref": "ProxySecurityGroupIds"},
    }
    assert provider["CapacityProviderScalingConfig"]["MaxVCpuCount"] == {"Ref": "ProxyMaxVCpu"}
    assert provider["InstanceRequirements"]["Architectures"] == ["x86_64"]  # the layer's wheels
    operator = resources[provider["PermissionsConfig"]["CapacityProviderOperatorRoleArn"]["Fn::GetAtt"][0]]
    assert operator["Type"] == "AWS::IAM::Role"
    proxy = resources["ProxyManagedFunction"]["Properties"]
    assert proxy["CapacityProviderConfig"] == {"LambdaManagedInstancesCapacityProviderConfig": {
        "CapacityProviderArn": {"Fn::GetAtt": ["ProxyCapacityProvider", "Arn"]},
        "PerExecutionEnvironmentMaxConcurrency": {"Ref": "ProxyConcurrencyPerEnvironment"},
        "ExecutionEnvironmentMemoryGiBPerVCpu": 2}}  # fmt: skip
    # One vCPU per environment at 2 GiB per vCPU; Lambda Managed Instances takes no reserved concurrency.
    assert proxy["MemorySize"] == 2048 and "ReservedConcurrentExecutions" not in proxy
    assert proxy["Architectures"] == ["x86_64"] and proxy["Timeout"] == {"Ref": "ProxyTimeout"}


def test_the_two_proxies_differ_only_in_their_capacity() -> None:
    """The same code, layer, variables, log group, URL and policy: what the runtime reads is the same."""
    resources = load_template()["Resources"]
    classic, managed = (resources[name]["Properties"] for name in PROXY_FUNCTIONS.values())
    capacity_only = {"Description", "MemorySize", "CapacityProviderConfig", "ReservedConcurrentExecutions",
                     "LoggingConfig"}  # fmt: skip
    assert {k: v for k, v in classic.items() if k not in capacity_only} == {
        k: v for k, v in managed.items() if k not in capacity_only
    }
    # The same log group; Managed Instances logs in JSON only.
    assert managed["LoggingConfig"] == classic["LoggingConfig"] | {"LogFormat": "JSON"}
    parameter = load_template()["Parameters"]["ProxyConcurrencyPerEnvironment"]
    assert (parameter["MinValue"], parameter["MaxValue"]) == (1, 1600)  # Lambda's own bounds


@pytest.mark.parametrize("mode", MODES)
def test_cfn_lint_passes_on_each_rendered_capacity(mode: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{mode}.json"
    rendered.write_text(json.dumps(_deployed(mode)))
    # Parameters that only chose between branches (and this mode's unused ones) are unused once rendered.
    result = run([tool("cfn-lint"), "--ignore-checks", "W2001", "--", str(rendered)])
    assert result.returncode == 0, result.stdout + result.stderr
