#!/usr/bin/env python3
"""Least privilege, checked: every IAM statement in infra/template.yaml names the table, index, queue, secret or
function it applies to. Fails (exit 1, naming the function and the statement) on a `*` resource, a `*` in an
action, or a statement without a resource; SAM's policy templates (`SQSSendMessagePolicy: {QueueName: …}`, …) must
name theirs too. Run by `make test` beside cfn-lint."""
import sys
from pathlib import Path

import yaml

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "template.yaml"


class Loader(yaml.SafeLoader):
    """Reads CloudFormation's short-form intrinsics (`!GetAtt`, `!Sub`, …) as plain values."""


def intrinsic(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {f"Fn::{suffix}" if suffix != "Ref" else "Ref": value}


Loader.add_multi_constructor("!", intrinsic)


def as_list(value):
    return value if isinstance(value, list) else [value]


def problems(template: dict) -> list[str]:
    found = []
    for name, resource in (template.get("Resources") or {}).items():
        properties = resource.get("Properties") or {}
        policies = list(as_list(properties.get("Policies") or []))
        for policy in (properties.get("PolicyDocument"), ):
            if policy:
                policies.append(policy)
        for policy in policies:
            if not isinstance(policy, dict):
                found.append(f"{name}: a managed policy by name ({policy!r}) grants what it grants: name resources")
                continue
            for template_name, parameters in policy.items():
                if template_name == "Statement":
                    continue
                if not parameters or any(v in ("*", "") for v in (parameters or {}).values()):
                    found.append(f"{name}: {template_name} must name its resource")
            for statement in as_list(policy.get("Statement") or []):
                actions = as_list(statement.get("Action") or [])
                resources = as_list(statement.get("Resource") or [])
                if not resources:
                    found.append(f"{name}: {actions} has no Resource")
                if any(r == "*" or (isinstance(r, str) and r.endswith(":*")) for r in resources):
                    found.append(f"{name}: {actions} on Resource '*'")
                if any(a == "*" or (isinstance(a, str) and a.endswith(":*")) for a in actions):
                    found.append(f"{name}: a wildcard action in {actions}")
    return found


def main() -> int:
    template = yaml.load(TEMPLATE.read_text(), Loader=Loader)
    found = problems(template)
    for problem in found:
        print(f"least privilege: {problem}", file=sys.stderr)
    if not found:
        print("least privilege: every IAM statement names its resources")
    return 1 if found else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--self-test":
        bad = {"Resources": {"F": {"Properties": {"Policies": [
            {"Statement": [{"Effect": "Allow", "Action": ["dynamodb:Scan"], "Resource": "*"}]},
            {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": {"Ref": "B"}}]},
            "AmazonDynamoDBFullAccess",
        ]}}}}
        assert len(problems(bad)) == 3, problems(bad)
        print("least privilege: the check catches a '*' resource, a wildcard action and a managed policy")
        sys.exit(0)
    sys.exit(main())
