"""A deployed relaylog stack, found by its CloudFormation name: the CLI's `--stack NAME`."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .clients import make_client


class StackError(Exception):
    """The stack, or something the command needs from it, cannot be reached."""


def outputs(stack: str, client: Any = None) -> dict[str, str]:
    client = client or make_client("cloudformation")
    try:
        described = client.describe_stacks(StackName=stack)["Stacks"][0]
    except (ClientError, BotoCoreError) as exc:
        raise StackError(f"stack {stack!r}: {exc}") from exc
    return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}


def output(found: dict[str, str], stack: str, name: str) -> str:
    if name not in found:
        raise StackError(f"stack {stack!r} has no output {name}: is it a relaylog stack?")
    return found[name]


def resources(stack: str, client: Any = None) -> dict[str, str]:
    """Logical id -> physical id of the stack's resources (a queue's URL, a function's name)."""
    client = client or make_client("cloudformation")
    found: dict[str, str] = {}
    token: dict[str, str] = {}
    try:
        while True:
            page = client.list_stack_resources(StackName=stack, **token)
            for summary in page.get("StackResourceSummaries", []):
                if summary.get("PhysicalResourceId"):
                    found[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]
            if not page.get("NextToken"):
                return found
            token = {"NextToken": page["NextToken"]}
    except (ClientError, BotoCoreError) as exc:
        raise StackError(f"stack {stack!r}: {exc}") from exc
