#!/usr/bin/env python3
"""Least privilege, checked: every IAM statement in infra/template.yaml names the table, index, queue, secret or
function it applies to. Fails (exit 1, naming the function and the statement) on a `*` resource or a `*` anywhere
in a resource's ARN (`index/*`, `table/*`, `:*`), a `*` in an action, a statement without a resource, and any grant of
`dynamodb:Scan` (the scheduler Queries the sparse index `gsi2`; nothing reads a table whole); SAM's policy templates
(`SQSSendMessagePolicy: {QueueName: …}`, …) must name theirs too. Run by `make test` beside cfn-lint."""
import fnmatch
import sys
from pathlib import Path

import yaml

TEMPLATE = Path(__file__).resolve().parent.parent / "infra" / "template.yaml"

# Reads a table whole. `dynamodb:PartiQLSelect` is one too: a SELECT without its key condition is a Scan.
SCAN_ACTIONS = ("dynamodb:scan", "dynamodb:partiqlselect")
# SAM policy templates that include dynamodb:Scan.
SCAN_POLICY_TEMPLATES = {"DynamoDBCrudPolicy", "DynamoDBReadPolicy"}


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


def strings(value):
    """Every string in a value, through intrinsics (`!Sub "${T.Arn}/index/*"`, `!Join`, `!If`)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def grants_scan(action) -> bool:
    """Whether an action (IAM matches them case-insensitively, with `*` and `?`) covers a Scan."""
    return isinstance(action, str) and any(fnmatch.fnmatchcase(a, action.lower()) for a in SCAN_ACTIONS)


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
            if "PolicyDocument" in policy:  # an AWS::IAM::Role's inline policy: {PolicyName, PolicyDocument}
                policy = policy["PolicyDocument"] or {}
            for template_name, parameters in policy.items():
                if template_name in ("Statement", "Version"):
                    continue
                if not parameters or any(v in ("*", "") for v in (parameters or {}).values()) \
                        or any("*" in s for s in strings(parameters)):
                    found.append(f"{name}: {template_name} must name its resource")
                if template_name in SCAN_POLICY_TEMPLATES:
                    found.append(f"{name}: {template_name} allows dynamodb:Scan; grant the Query it needs instead")
            for statement in as_list(policy.get("Statement") or []):
                actions = as_list(statement.get("Action") or [])
                resources = as_list(statement.get("Resource") or [])
                allows = statement.get("Effect", "Allow") != "Deny"
                if not resources:
                    found.append(f"{name}: {actions} has no Resource")
                if allows and "NotAction" in statement:
                    found.append(f"{name}: NotAction {statement['NotAction']} allows every other action")
                if allows and any(grants_scan(a) for a in actions):
                    found.append(f"{name}: {actions} allows dynamodb:Scan; Query a key or an index instead")
                if any(r == "*" or (isinstance(r, str) and r.endswith(":*")) for r in resources):
                    found.append(f"{name}: {actions} on Resource '*'")
                else:
                    for r in resources:
                        wild = [s for s in strings(r) if "*" in s]
                        if wild:
                            found.append(f"{name}: {actions} on a wildcard resource {wild[0]!r}; name it")
                if any(a == "*" or (isinstance(a, str) and a.endswith(":*")) for a in actions):
                    found.append(f"{name}: a wildcard action in {actions}")
    return found


def self_test() -> int:
    def function(*policies):
        return {"Resources": {"F": {"Properties": {"Policies": list(policies)}}}}

    def allow(action, resource):
        return {"Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]}

    table = {"Fn::GetAtt": ["T", "Arn"]}
    cases = {
        # The rules the check always had.
        "a '*' resource": (function(allow(["dynamodb:GetItem"], "*")), "on Resource '*'"),
        "a wildcard action": (function(allow("s3:*", {"Ref": "B"})), "a wildcard action"),
        "a managed policy": (function("AmazonDynamoDBFullAccess"), "a managed policy by name"),
        # dynamodb:Scan, however it is granted.
        "Scan on a named table": (function(allow(["dynamodb:Query", "dynamodb:Scan"], table)), "dynamodb:Scan"),
        "Scan on a named index": (function(allow("dynamodb:scan", {"Fn::Sub": "${T.Arn}/index/gsi2"})),
                                  "dynamodb:Scan"),
        "Scan through a pattern": (function(allow("dynamodb:S*", table)), "dynamodb:Scan"),
        "Scan through PartiQL": (function(allow("dynamodb:PartiQLSelect", table)), "dynamodb:Scan"),
        "Scan in a SAM template": (function({"DynamoDBReadPolicy": {"TableName": {"Ref": "T"}}}), "dynamodb:Scan"),
        "Scan as everything but something else": (function({"Statement": [
            {"Effect": "Allow", "NotAction": "dynamodb:DeleteTable", "Resource": table}]}), "NotAction"),
        "Scan in a role's policy": ({"Resources": {"R": {"Type": "AWS::IAM::Role", "Properties": {"Policies": [
            {"PolicyName": "p", "PolicyDocument": allow("dynamodb:Scan", table)}]}}}}, "dynamodb:Scan"),
        # A '*' anywhere in a resource.
        "every index (Sub)": (function(allow("dynamodb:Query", {"Fn::Sub": "${T.Arn}/index/*"})), "wildcard resource"),
        "every index (Sub with variables)": (function(allow("dynamodb:Query", {"Fn::Sub": [
            "${Arn}/index/*", {"Arn": table}]})), "wildcard resource"),
        "every index (Join)": (function(allow("dynamodb:Query", {"Fn::Join": ["", [table, "/index/*"]]})),
                               "wildcard resource"),
        "every table": (function(allow("dynamodb:GetItem", "arn:aws:dynamodb:us-east-1:1:table/*")),
                        "wildcard resource"),
        "a pattern in a name": (function(allow("sqs:SendMessage", "arn:aws:sqs:us-east-1:1:sync-*")),
                                "wildcard resource"),
        "a wildcard in a queue policy": ({"Resources": {"P": {"Properties": {"PolicyDocument": allow(
            "sqs:SendMessage", {"Fn::Sub": "arn:${AWS::Partition}:sqs:*:${AWS::AccountId}:q"})}}}},
            "wildcard resource"),
        "a wildcard in a SAM template": (function({"SQSSendMessagePolicy": {"QueueName": "sync-*"}}),
                                         "must name its resource"),
    }
    failed = 0
    for what, (template, expected) in cases.items():
        found = problems(template)
        if not any(expected in p for p in found):
            print(f"least privilege self-test: {what} passed the check ({found})", file=sys.stderr)
            failed += 1
    # What must pass: named resources, and a Deny of Scan.
    good = function(allow(["dynamodb:Query"], {"Fn::Sub": "${T.Arn}/index/gsi2"}),
                    {"Statement": [{"Effect": "Deny", "Action": "dynamodb:Scan", "Resource": table}]})
    wrongly = problems(good)
    if wrongly:
        print(f"least privilege self-test: a named grant failed ({wrongly})", file=sys.stderr)
        failed += 1
    if failed:
        return 1
    print(f"least privilege: the check catches each of {len(cases)} bad grants ('*' resources and actions, managed "
          "policies, dynamodb:Scan, '*' inside ARNs) and passes named ones")
    return 0


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
        sys.exit(self_test())
    sys.exit(main())
