"""template.yaml's BedrockModels parameter: the proxy's role may invoke exactly the operator's Bedrock
models (in every region, and through their cross-region inference profiles), and none by default.
The policy is read as CloudFormation receives it after the SAM transform, its functions worked out
here for each parameter value, and ARNs matched the way IAM matches them (`*` and `?` wildcards)."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

import pytest

from tests.support.sam import transformed

pytestmark = pytest.mark.sam

ACCOUNT = "123456789012"


def _resolve(node: Any, parameters: dict[str, list[str]]) -> Any:
    """The few intrinsic functions the Bedrock statement uses, as CloudFormation evaluates them."""
    if isinstance(node, list):
        return [_resolve(n, parameters) for n in node]
    if not isinstance(node, dict) or len(node) != 1:
        return {k: _resolve(v, parameters) for k, v in node.items()} if isinstance(node, dict) else node
    ((name, value),) = node.items()
    if name == "Ref":
        return {"AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}.get(value, parameters.get(value))
    if name == "Fn::Join":
        return value[0].join(_resolve(value[1], parameters))
    if name == "Fn::Split":
        return _resolve(value[1], parameters).split(value[0])
    if name == "Fn::Sub":
        text, variables = value
        for variable, replacement in {**_resolve(variables, parameters), "AWS::AccountId": ACCOUNT}.items():
            text = text.replace("${" + variable + "}", replacement)
        assert "${" not in text, text
        return text
    return {name: _resolve(value, parameters)}


def _bedrock_grants(models: str) -> list[tuple[str, str]]:
    """(action, resource) the proxy's role is granted on Bedrock when BedrockModels is `models`
    (CloudFormation splits a CommaDelimitedList on commas: "" is [""])."""
    template = transformed()
    parameters = {"BedrockModels": models.split(",")}
    allowed = _resolve(template["Conditions"]["BedrockAllowed"], parameters)
    assert set(allowed) == {"Fn::Not"}
    ((equals,),) = allowed.values()
    left, right = equals["Fn::Equals"]
    grants = []
    # Both proxies (classic, Managed Instances) carry ProxyPolicy; the Bedrock statement is in it.
    for statement in template["Resources"]["ProxyPolicy"]["Properties"]["PolicyDocument"]["Statement"]:
        if "Fn::If" in statement:
            condition, when_true, when_false = statement["Fn::If"]
            assert condition == "BedrockAllowed" and when_false == {"Ref": "AWS::NoValue"}
            if left == right:  # the condition is false
                continue
            statement = _resolve(when_true, parameters)
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        grants += [(a, r) for a in actions for r in resources if a.startswith("bedrock:")]
    return grants


def _allows(grants: list[tuple[str, str]], action: str, resource: str) -> bool:
    return any(fnmatchcase(action, a) and fnmatchcase(resource, r) for a, r in grants)


def _model(region: str, model: str) -> str:
    return f"arn:aws:bedrock:{region}::foundation-model/{model}"


def _profile(region: str, profile: str) -> str:
    return f"arn:aws:bedrock:{region}:{ACCOUNT}:inference-profile/{profile}"


HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"


def test_by_default_the_proxy_may_call_no_bedrock_model() -> None:
    assert _bedrock_grants("") == []


def test_the_proxy_may_invoke_the_allowed_models_only() -> None:
    grants = _bedrock_grants(f"{HAIKU},amazon.nova-*")
    assert {action for action, _ in grants} == {"bedrock:InvokeModel*"}
    # InvokeModel covers Converse, InvokeModelWithResponseStream covers ConverseStream.
    for action in ("bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"):
        for resource in (
            _model("us-east-1", HAIKU),
            _model("us-west-2", HAIKU),  # where a cross-region profile may send the call
            _profile("us-east-1", f"us.{HAIKU}"),
            _profile("eu-west-1", f"eu.{HAIKU}"),
            _model("eu-central-1", "amazon.nova-lite-v1:0"),
            _profile("us-east-1", "us.amazon.nova-pro-v1:0"),
        ):
            assert _allows(grants, action, resource), (action, resource)
    for action, resource in (
        ("bedrock:InvokeModel", _model("us-east-1", "anthropic.claude-3-opus-20240229-v1:0")),
        ("bedrock:InvokeModel", _profile("us-east-1", "us.anthropic.claude-3-opus-20240229-v1:0")),
        ("bedrock:InvokeModel", _model("us-east-1", "meta.llama3-1-8b-instruct-v1:0")),
        ("bedrock:InvokeModel", f"arn:aws:bedrock:us-east-1:{ACCOUNT}:application-inference-profile/abc123"),
        ("bedrock:InvokeModel", f"arn:aws:bedrock:us-east-1:{ACCOUNT}:custom-model/{HAIKU}/abc"),
        ("bedrock:CreateModelInvocationJob", _model("us-east-1", HAIKU)),
        ("bedrock:InvokeAgent", _model("us-east-1", HAIKU)),
    ):
        assert not _allows(grants, action, resource), (action, resource)
