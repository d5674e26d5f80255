"""The local stack's AWS, in moto: the tables and queues read from infra/template.yaml (keys, indexes, streams, TTL,
dead-letter queues), the event bus with its tap and webhook rules, and the secrets. Apart from scripts/stack.py so
that what is copied from the template sits in one place."""

import json
import secrets

from stack_processes import ROOT


def template_tables():
    """The DynamoDB tables of infra/template.yaml, as CreateTable arguments (keys, indexes, TTL)."""
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(ROOT / "infra" / "template.yaml"))
    tables = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        args = {
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if "GlobalSecondaryIndexes" in props:
            args["GlobalSecondaryIndexes"] = [
                {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
                for g in props["GlobalSecondaryIndexes"]
            ]
        if "StreamSpecification" in props:
            args["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        ttl = props.get("TimeToLiveSpecification")
        tables[logical_id] = (args, ttl)
    return tables


def template_queues():
    """The SQS queues of infra/template.yaml: logical id → (dead-letter queue's logical id, maxReceiveCount) or
    None, dead-letter queues first."""
    from cfnlint.decode import cfn_yaml

    template = cfn_yaml.load(str(ROOT / "infra" / "template.yaml"))
    queues = {}
    for logical_id, r in template["Resources"].items():
        if r["Type"] != "AWS::SQS::Queue":
            continue
        redrive = r.get("Properties", {}).get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]
            target = target.get("Fn::GetAtt", [None])[0] if isinstance(target, dict) else str(target).split(".")[0]
            queues[logical_id] = (target, int(redrive["maxReceiveCount"]))
        else:
            queues[logical_id] = None
    return sorted(queues.items(), key=lambda item: item[1] is not None)


def aws_session():
    import boto3

    return boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")


def create_resources(aws_endpoint, prefix, oauth_client, management_key, webhook_secret):
    session = aws_session()
    dynamodb = session.client("dynamodb", endpoint_url=aws_endpoint)
    names = {}
    for logical_id, (args, ttl) in template_tables().items():
        name = f"{prefix}-{logical_id}"
        dynamodb.create_table(TableName=name, **args)
        if ttl and ttl.get("Enabled"):
            dynamodb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True})
        names[logical_id] = name
    sm = session.client("secretsmanager", endpoint_url=aws_endpoint)
    key_ring = {"current": "v1", "v1": secrets.token_hex(32)}
    ids = {}
    for env_name, secret_name, value in [
        ("OAUTH_CLIENT_SECRET_ID", "oauth-client", json.dumps(oauth_client)),
        ("TOKEN_KEYS_SECRET_ID", "token-keys", json.dumps(key_ring)),
        ("MANAGEMENT_API_KEY_SECRET_ID", "management-api-key", management_key),
        ("WEBHOOK_SECRET_ID", "webhook-secret", webhook_secret),
    ]:
        ids[env_name] = sm.create_secret(Name=f"{prefix}/{secret_name}", SecretString=value)["ARN"]
    sqs = session.client("sqs", endpoint_url=aws_endpoint)
    for logical_id, redrive in template_queues():
        # Locally a failed job comes back after 20 s rather than the deployed 16 minutes; the dead-letter queue
        # and its maxReceiveCount are the template's.
        attributes = {"VisibilityTimeout": "20"}
        if redrive:
            target, max_receives = redrive
            arn = sqs.get_queue_attributes(QueueUrl=names[target], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receives)})
        url = sqs.create_queue(QueueName=f"{prefix}-{logical_id}", Attributes=attributes)["QueueUrl"]
        names[logical_id] = url
    # The template's bus, and a tap on it: every event of the connector, on a queue of its own.
    events = session.client("events", endpoint_url=aws_endpoint)
    names["EventBus"] = events.create_event_bus(Name=f"{prefix}-events")["EventBusArn"].rsplit("/", 1)[-1]
    tap = sqs.create_queue(QueueName=f"{prefix}-EventsTap")["QueueUrl"]
    tap_arn = sqs.get_queue_attributes(QueueUrl=tap, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=f"{prefix}-tap", EventBusName=names["EventBus"],
                    EventPattern=json.dumps({"source": ["atlassian-connector"]}))
    events.put_targets(Rule=f"{prefix}-tap", EventBusName=names["EventBus"], Targets=[{"Id": "tap", "Arn": tap_arn}])
    names["EventsTap"] = tap
    # The template's webhook rule: every event to the webhook queue.
    webhook_arn = sqs.get_queue_attributes(QueueUrl=names["WebhookQueue"],
                                           AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=f"{prefix}-webhooks", EventBusName=names["EventBus"],
                    EventPattern=json.dumps({"source": ["atlassian-connector"]}))
    events.put_targets(Rule=f"{prefix}-webhooks", EventBusName=names["EventBus"],
                       Targets=[{"Id": "webhooks", "Arn": webhook_arn}])
    return names, ids
