#!/usr/bin/env python3
"""The local stack, for `make dev` and `make test`.

Starts moto (DynamoDB + Secrets Manager + SQS + EventBridge on one port), creates the tables **from
infra/template.yaml** (with their streams), the event bus and the secrets, starts the Atlassian sandbox (unless
ATLASSIAN_AUTH_BASE_URL points elsewhere) and runs every function under `cargo lambda watch` on the production
paths; what Lambda's event sources do in AWS (SQS to the sync worker, the tables' streams to the event publisher) is
done by threads here. The bus's events land on a tap queue (`STACK_EVENTS_QUEUE_URL`): `make dev` prints them as
they come, tests read them. Everything it starts is stopped when it ends.

    stack.py dev              bring the stack up, print a connect URL, stay in the foreground until Ctrl-C
    stack.py run -- CMD...    bring the stack up, run CMD with the stack's variables in its environment, stop

Variables that point the same stack at a real Atlassian app (or any server speaking Atlassian's API):
ATLASSIAN_AUTH_BASE_URL, ATLASSIAN_API_BASE_URL, ATLASSIAN_CLIENT_ID, ATLASSIAN_CLIENT_SECRET, MANAGEMENT_API_KEY.
Ports: STACK_AWS_PORT (5050), STACK_FUNCTIONS_PORT (9000), STACK_SANDBOX_PORT (9911), STACK_WEBHOOK_PORT (9950: a
local webhook receiver that checks each delivery's signature; `GET /__receiver/deliveries` lists them, `POST
/__receiver/fail {"count": N}` makes it refuse the next N, `{"event_id": ID, "refuse": true|false}` every delivery of
one event until told otherwise).
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
STATE = ROOT / ".dev"

processes = []


def log(message):
    print(f"[stack] {message}", flush=True)


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_for(url, what, timeout, accept=lambda status: status < 500):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        for proc, name in processes:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited early (code {proc.returncode}); see {STATE / 'logs'}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if accept(response.status):
                    return
        except urllib.error.HTTPError as e:
            if accept(e.code):
                return
            last = e
        except Exception as e:  # noqa: BLE001 - anything short of an answer means "not yet"
            last = e
        time.sleep(0.3)
    raise SystemExit(f"{what} did not come up at {url} within {timeout}s ({last})")


def start(name, argv, env=None, log_name=None):
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = open(logs / f"{log_name or name}.log", "w")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env or os.environ.copy(), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    processes.append((proc, name))
    return proc


def stop_all():
    # A second Ctrl-C or SIGTERM must not cut the cleanup short and leave servers behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for proc, name in reversed(processes):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for proc, name in reversed(processes):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    processes.clear()


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


def deliver(aws_endpoint, queue_url, functions_url, stop, function="sync-worker", batch=1):
    """What Lambda's SQS event source does: receive up to `batch` messages (with their receive count and sent time),
    invoke `function` with them, delete those it did not report as failed."""
    sqs = aws_session().client("sqs", endpoint_url=aws_endpoint)
    invoke = f"{functions_url}/2015-03-31/functions/{function}/invocations"
    while not stop.is_set():
        try:
            messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=batch, WaitTimeSeconds=1,
                                           AttributeNames=["All"]).get("Messages", [])
        except Exception:  # noqa: BLE001 - moto restarting or stopping: try again
            time.sleep(1)
            continue
        if not messages:
            continue
        event = {"Records": [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""),
            "eventSource": "aws:sqs", "eventSourceARN": f"arn:aws:sqs:us-east-1:000000000000:{function}",
            "awsRegion": "us-east-1",
        } for m in messages]}
        request = urllib.request.Request(invoke, data=json.dumps(event).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=900) as response:
                failures = {f["itemIdentifier"] for f in json.load(response).get("batchItemFailures", [])}
        except Exception as e:  # noqa: BLE001 - the invocation failed: the messages come back
            log(f"{function} invocation failed: {e}")
            continue
        for message in messages:
            if message["MessageId"] not in failures:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def lambda_image(value):
    """A stream image as Lambda hands it over: binary attributes base64-encoded (boto3 gives bytes)."""
    import base64

    if isinstance(value, dict):
        return {k: (base64.b64encode(v).decode() if k == "B" else
                    [base64.b64encode(b).decode() for b in v] if k == "BS" else lambda_image(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [lambda_image(v) for v in value]
    return value


def state_filter(record):
    """The template's FilterCriteria on the state table's stream: connections and runs only."""
    sk = record["dynamodb"].get("Keys", {}).get("sk", {}).get("S", "")
    return sk == "CONN" or sk.startswith("RUN#")


def publish_stream(aws_endpoint, table, functions_url, stop, keep=lambda record: True):
    """What Lambda's DynamoDB event source does for the event publisher: read the table's stream shard by shard,
    in order, and invoke with each batch (the same batch again while it fails, as Lambda retries it)."""
    session = aws_session()
    dynamodb = session.client("dynamodb", endpoint_url=aws_endpoint)
    streams = session.client("dynamodbstreams", endpoint_url=aws_endpoint)
    invoke = f"{functions_url}/2015-03-31/functions/event-publisher/invocations"
    arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    iterators = {}
    # moto writes a transaction's update to the stream twice (the key alone, then the item); DynamoDB writes a change
    # once (and no record for a write that changes nothing), so a record of a bare key, or whose images repeat the
    # key's previous record, is moto's echo.
    last = {}

    def fresh(record):
        change = record["dynamodb"]
        if record["eventName"] != "REMOVE" and set(change.get("NewImage", {})) <= {"pk", "sk"}:
            return False  # moto's first record of a transaction's update: the key alone, before the update
        key = json.dumps(change.get("Keys"), sort_keys=True, default=str)
        images = json.dumps([change.get("OldImage"), change.get("NewImage")], sort_keys=True, default=str)
        repeated = last.get(key) == images
        last[key] = images
        return not repeated
    while not stop.is_set():
        busy = False
        try:
            for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
                if shard["ShardId"] not in iterators:
                    iterators[shard["ShardId"]] = streams.get_shard_iterator(
                        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            for shard_id, iterator in list(iterators.items()):
                if iterator is None:
                    continue
                answer = streams.get_records(ShardIterator=iterator, Limit=100)
                records = [{
                    "eventID": r["eventID"], "eventName": r["eventName"], "eventSource": "aws:dynamodb",
                    "eventSourceARN": arn, "awsRegion": "us-east-1",
                    "dynamodb": {**lambda_image({k: v for k, v in r["dynamodb"].items()
                                                 if k != "ApproximateCreationDateTime"}),
                                 "ApproximateCreationDateTime": r["dynamodb"]["ApproximateCreationDateTime"].timestamp()},
                } for r in answer.get("Records", []) if keep(r) and fresh(r)]
                if records:
                    busy = True
                    for attempt in range(10):
                        request = urllib.request.Request(invoke, data=json.dumps({"Records": records}).encode(),
                                                         headers={"Content-Type": "application/json"}, method="POST")
                        try:
                            with urllib.request.urlopen(request, timeout=120) as response:
                                response.read()
                            break
                        except Exception as e:  # noqa: BLE001 - Lambda would retry the batch
                            log(f"event publisher invocation failed ({e}); retrying the batch")
                            time.sleep(1 + attempt)
                iterators[shard_id] = answer.get("NextShardIterator")
        except Exception as e:  # noqa: BLE001 - moto restarting or stopping: try again
            if stop.is_set():
                return
            log(f"reading the stream of {table} failed ({e}); trying again")
            time.sleep(1)
        if not busy:
            time.sleep(0.3)


def print_events(aws_endpoint, queue_url, stop):
    """`make dev`: every event on the bus, one line each as it comes (and whole in .dev/logs/events.log)."""
    sqs = aws_session().client("sqs", endpoint_url=aws_endpoint)
    with open(STATE / "logs" / "events.log", "a") as whole:
        while not stop.is_set():
            try:
                messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=1).get("Messages", [])
            except Exception:  # noqa: BLE001 - moto stopping
                time.sleep(1)
                continue
            for message in messages:
                event = json.loads(message["Body"])
                detail = event.get("detail", {})
                what = " ".join(str(detail[k]) for k in ("object_type", "key", "status", "reason") if detail.get(k))
                changed = f" changed={','.join(detail['changed'])}" if detail.get("changed") else ""
                print(f"[event] {event.get('detail-type')}: {detail.get('tenant_id')} {detail.get('connection_id')} "
                      f"{what}{changed}", flush=True)
                whole.write(json.dumps(event) + "\n")
                whole.flush()
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def receiver(port, secret, printing):
    """A webhook endpoint of the product's, for the local stack: checks each delivery's signature (HMAC-SHA256 of
    `{t}.{body}`, five minutes of tolerance) and keeps what it got."""
    import hashlib
    import hmac
    import http.server
    import threading

    state = {"deliveries": [], "fail": 0, "refused_events": set()}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body=b""):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/__receiver/deliveries":
                with lock:
                    self.answer(200, json.dumps(state["deliveries"]).encode())
            else:
                self.answer(404)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/__receiver/fail":
                asked = json.loads(body or b"{}")
                with lock:
                    if "event_id" in asked:
                        (state["refused_events"].add if asked.get("refuse", True) else
                         state["refused_events"].discard)(asked["event_id"])
                    else:
                        state["fail"] = int(asked.get("count", 0))
                return self.answer(204)
            if self.path != "/webhook":
                return self.answer(404)
            fields = dict(part.split("=", 1) for part in self.headers.get(
                "Atlassian-Connector-Signature", "").split(",") if "=" in part)
            signatures = [p.split("=", 1)[1] for p in self.headers.get("Atlassian-Connector-Signature", "").split(",")
                          if p.startswith("v1=")]
            t = fields.get("t", "0")
            expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
            recent = t.isdigit() and abs(time.time() - int(t)) <= 300
            verified = recent and any(hmac.compare_digest(expected, s) for s in signatures)
            event = json.loads(body or b"{}")
            event_id = self.headers.get("Atlassian-Connector-Event-Id")
            with lock:
                refused = state["fail"] > 0 or event_id in state["refused_events"]
                state["fail"] -= 1 if state["fail"] > 0 else 0
                state["deliveries"].append({
                    "event_id": self.headers.get("Atlassian-Connector-Event-Id"), "verified": verified,
                    "refused": refused, "detail_type": event.get("detail-type"),
                    "connection_id": event.get("detail", {}).get("connection_id"), "t": t,
                })
            if printing:
                mark = "signature verified" if verified else "SIGNATURE NOT VERIFIED"
                print(f"[webhook] {event.get('detail-type')} {self.headers.get('Atlassian-Connector-Event-Id')} "
                      f"({mark}{', refused on purpose' if refused else ''})", flush=True)
            self.answer(500 if refused or not verified else 200)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def up():
    STATE.mkdir(exist_ok=True)
    aws_port = int(os.environ.get("STACK_AWS_PORT", "5050"))
    fn_port = int(os.environ.get("STACK_FUNCTIONS_PORT", "9000"))
    sandbox_port = int(os.environ.get("STACK_SANDBOX_PORT", "9911"))
    webhook_port = int(os.environ.get("STACK_WEBHOOK_PORT", "9950"))
    for port, what in [(aws_port, "STACK_AWS_PORT"), (fn_port, "STACK_FUNCTIONS_PORT"), (webhook_port, "STACK_WEBHOOK_PORT")]:
        if not port_free(port):
            raise SystemExit(f"port {port} is taken: stop what uses it or set {what}")

    aws_endpoint = f"http://127.0.0.1:{aws_port}"
    functions_url = f"http://127.0.0.1:{fn_port}"
    start("moto", [str(VENV_BIN / "python"), str(ROOT / "scripts" / "moto_server.py"), "127.0.0.1", str(aws_port)])

    # The sandbox, unless the caller points the stack at another Atlassian.
    external = bool(os.environ.get("ATLASSIAN_AUTH_BASE_URL"))
    client_id = os.environ.get("ATLASSIAN_CLIENT_ID", "sandbox-client-id")
    client_secret = os.environ.get("ATLASSIAN_CLIENT_SECRET", "sandbox-client-secret")
    if external:
        auth_base = os.environ["ATLASSIAN_AUTH_BASE_URL"]
        api_base = os.environ.get("ATLASSIAN_API_BASE_URL", "https://api.atlassian.com")
    else:
        if not port_free(sandbox_port):
            raise SystemExit(f"port {sandbox_port} is taken: stop what uses it or set STACK_SANDBOX_PORT")
        auth_base = api_base = f"http://127.0.0.1:{sandbox_port}"
        target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        sandbox_bin = target_dir / "debug" / "atlassian-sandbox"
        subprocess.run(["cargo", "build", "-q", "-p", "atlassian-sandbox"], cwd=ROOT, check=True)
        # STACK_SANDBOX_FLAGS shapes the org and its quota (e.g. "--users 1500 --quota-points 3000").
        start("sandbox", [str(sandbox_bin), "--port", str(sandbox_port), "--client-id", client_id,
                          "--client-secret", client_secret, *os.environ.get("STACK_SANDBOX_FLAGS", "").split()])
        wait_for(f"{auth_base}/__sandbox/stats", "the Atlassian sandbox", 30)

    wait_for(f"{aws_endpoint}/moto-api/", "moto", 60)
    prefix = f"dev{int(time.time())}-{secrets.token_hex(2)}"
    management_key = os.environ.get("MANAGEMENT_API_KEY") or f"mk_{secrets.token_urlsafe(24)}"
    webhook_secret = f"whsec_{secrets.token_urlsafe(32)}"
    tables, secret_ids = create_resources(
        aws_endpoint, prefix, {"client_id": client_id, "client_secret": client_secret}, management_key, webhook_secret)
    receiver(webhook_port, webhook_secret, printing=len(sys.argv) > 1 and sys.argv[1] == "dev")
    log(f"tables and queues {', '.join(n.rsplit('/', 1)[-1] for n in tables.values())} created from infra/template.yaml")

    function_env = {
        "AWS_ENDPOINT_URL": aws_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": os.environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        "STATE_TABLE": tables["StateTable"],
        "MIRROR_TABLE": tables["MirrorTable"],
        "SYNC_QUEUE_URL": tables["SyncQueue"],
        "EVENT_BUS_NAME": tables["EventBus"],
        "WEBHOOK_URL": f"http://127.0.0.1:{webhook_port}/webhook",
        "WEBHOOK_QUEUE_URL": tables["WebhookQueue"],
        "WEBHOOK_DEAD_LETTER_QUEUE_URL": tables["WebhookDeadLetterQueue"],
        "PUBLIC_BASE_URL": functions_url,
        "ATLASSIAN_AUTH_BASE_URL": auth_base,
        "ATLASSIAN_API_BASE_URL": api_base,
        "RETURN_URL_ALLOWLIST": os.environ.get("RETURN_URL_ALLOWLIST", f"{functions_url}/__return,http://localhost:3000/"),
        **secret_ids,
    }
    # Optional settings passed through as they are (e.g. SYNC_MAX_PAGES_PER_INVOCATION=1 forces continuations).
    for name, value in os.environ.items():
        passed = name.startswith(("SYNC_", "ATLASSIAN_QUOTA_", "WEBHOOK_RETRY_", "WEBHOOK_GIVE_UP_")) \
            or name in ("OAUTH_SCOPES", "ATLASSIAN_TENANT_QUOTAS")
        if passed and name != "SYNC_QUEUE_URL":
            function_env[name] = value
    env_file = STATE / "functions.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in function_env.items()))

    # STACK_FUNCTIONS=0: only moto, the tables, queues and secrets (the load test runs the functions' handlers
    # in-process, with an Atlassian sandbox of its own).
    functions = os.environ.get("STACK_FUNCTIONS", "1") != "0"
    watch_env = os.environ.copy()
    watch_env.pop("ATLASSIAN_CLIENT_SECRET", None)
    watch_env.pop("MANAGEMENT_API_KEY", None)
    if functions:
        start_functions(watch_env, env_file, fn_port, functions_url, aws_endpoint, tables)
    return export(aws_endpoint, functions_url, auth_base, tables, management_key, secret_ids, client_id, client_secret,
                  webhook_port)


def start_functions(watch_env, env_file, fn_port, functions_url, aws_endpoint, tables):
    start("cargo lambda watch",
          [str(VENV_BIN / "cargo-lambda"), "lambda", "watch", "--invoke-address", "127.0.0.1",
           "--invoke-port", str(fn_port), "--env-file", str(env_file),
           *os.environ.get("STACK_WATCH_FLAGS", "").split()],
          env=watch_env, log_name="functions")
    wait_for(f"{functions_url}/connections", "cargo lambda watch", 120, accept=lambda status: True)
    # The first request to each function compiles and starts it; do it now, not in the reader's first click.
    for path in ["/connections", "/connect", "/oauth/callback"]:
        wait_for(f"{functions_url}{path}", f"the function behind {path}", 600, accept=lambda status: status < 500)
    import threading

    stop_delivery = threading.Event()
    for _ in range(2):
        threading.Thread(target=deliver, args=(aws_endpoint, tables["SyncQueue"], functions_url, stop_delivery),
                         daemon=True).start()
    # STACK_EVENTS=0: no events (the integration tests run the engine in-process and need none; reading the
    # streams of their big syncs would only load the machine).
    if os.environ.get("STACK_EVENTS", "1") != "0":
        threading.Thread(target=publish_stream, daemon=True,
                         args=(aws_endpoint, tables["StateTable"], functions_url, stop_delivery, state_filter)).start()
        threading.Thread(target=publish_stream, daemon=True,
                         args=(aws_endpoint, tables["MirrorTable"], functions_url, stop_delivery)).start()
        for _ in range(3):
            threading.Thread(target=deliver, daemon=True, args=(aws_endpoint, tables["WebhookQueue"], functions_url,
                                                               stop_delivery, "webhook-sender", 10)).start()


def export(aws_endpoint, functions_url, auth_base, tables, management_key, secret_ids, client_id, client_secret,
           webhook_port):
    stack_env = {
        "STACK_AWS_ENDPOINT": aws_endpoint,
        "STACK_FUNCTIONS_URL": functions_url,
        "STACK_ATLASSIAN_URL": auth_base,
        "STACK_STATE_TABLE": tables["StateTable"],
        "STACK_MIRROR_TABLE": tables["MirrorTable"],
        "STACK_SYNC_QUEUE_URL": tables["SyncQueue"],
        "STACK_SYNC_DLQ_URL": tables["SyncDeadLetterQueue"],
        "STACK_EVENT_BUS": tables["EventBus"],
        "STACK_EVENTS_QUEUE_URL": tables["EventsTap"],
        "STACK_WEBHOOK_RECEIVER": f"http://127.0.0.1:{webhook_port}",
        "STACK_WEBHOOK_QUEUE_URL": tables["WebhookQueue"],
        "STACK_WEBHOOK_DLQ_URL": tables["WebhookDeadLetterQueue"],
        "STACK_MANAGEMENT_API_KEY": management_key,
        "STACK_TOKEN_KEYS_SECRET_ID": secret_ids["TOKEN_KEYS_SECRET_ID"],
        "STACK_FUNCTION_LOG": str(STATE / "logs" / "functions.log"),
        "STACK_CLIENT_ID": client_id,
        "STACK_CLIENT_SECRET": client_secret,
    }
    (STATE / "stack.env").write_text("".join(f"{k}={v}\n" for k, v in stack_env.items()))
    return stack_env


def create_session(functions_url, management_key, tenant_id):
    request = urllib.request.Request(
        f"{functions_url}/connect-sessions",
        data=json.dumps({"tenant_id": tenant_id}).encode(),
        headers={"Authorization": f"Bearer {management_key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def sandbox_admin_body(atlassian_url):
    """An admin-key connection body for the sandbox's org: a fresh org admin key and an admin's site API token."""
    def post(path, body):
        request = urllib.request.Request(f"{atlassian_url}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)
    key = post("/__sandbox/admin/keys", {})["key"]
    token = post("/__sandbox/api-tokens", {"account_id": "5b10ac8d82e05b22cc7d0000"})
    return {"tenant_id": "dev-tenant", "mode": "admin_api_key", "org_id": "4f1e2d3c-0a0b-4c5d-8e9f-0123456789ab",
            "admin_api_key": key, "site_url": f"{atlassian_url}/site/acme", "site_email": token["email"],
            "site_api_token": token["token"]}


def main():
    args = sys.argv[1:]
    if not args or args[0] not in ("dev", "run"):
        print(__doc__)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        stack = up()
        if args[0] == "run":
            command = args[2:] if args[1:2] == ["--"] else args[1:]
            log(f"running {' '.join(command)}")
            return subprocess.call(command, cwd=ROOT, env={**os.environ, **stack})
        session = create_session(stack["STACK_FUNCTIONS_URL"], stack["STACK_MANAGEMENT_API_KEY"], "dev-tenant")
        admin = ""
        if not os.environ.get("ATLASSIAN_AUTH_BASE_URL"):
            body = json.dumps(sandbox_admin_body(stack["STACK_ATLASSIAN_URL"]))
            admin = f"""
  Or connect with the sandbox org's admin API key and a site token:
    curl -s -H 'Authorization: Bearer {stack['STACK_MANAGEMENT_API_KEY']}' -H 'Content-Type: application/json' \\
      -d '{body}' '{stack['STACK_FUNCTIONS_URL']}/connections'
"""
        import threading

        threading.Thread(target=print_events, args=(stack["STACK_AWS_ENDPOINT"], stack["STACK_EVENTS_QUEUE_URL"],
                                                    threading.Event()), daemon=True).start()
        print(f"""
The local stack is up (logs in .dev/logs, variables in .dev/stack.env).

  Connect URL (open it in a browser, press Accept):
    {session['connect_url']}
{admin}
  Management API:  {stack['STACK_FUNCTIONS_URL']}   (Authorization: Bearer {stack['STACK_MANAGEMENT_API_KEY']})
    curl -s -H 'Authorization: Bearer {stack['STACK_MANAGEMENT_API_KEY']}' '{stack['STACK_FUNCTIONS_URL']}/connections?tenant_id=dev-tenant'
  Proxy (once connected: the connection id from the listing above, a cloud id from its sites):
    curl -s -H 'Authorization: Bearer {stack['STACK_MANAGEMENT_API_KEY']}' \\
      '{stack['STACK_FUNCTIONS_URL']}/connections/<connection id>/proxy/jira/rest/api/3/search/jql?jql=order%20by%20key&maxResults=5&cloud_id=<cloud id>'
  Events:          printed below as they happen ([event] …), whole in .dev/logs/events.log; each also reaches
                   a local webhook receiver, signed ([webhook] …, {stack['STACK_WEBHOOK_RECEIVER']}/__receiver/deliveries)
  Atlassian:       {stack['STACK_ATLASSIAN_URL']}
  AWS (moto):      {stack['STACK_AWS_ENDPOINT']}   table {stack['STACK_STATE_TABLE']}

Press Ctrl-C to stop everything.
""", flush=True)
        while all(proc.poll() is None for proc, _ in processes):
            time.sleep(1)
        for proc, name in processes:
            if proc.poll() is not None:
                log(f"{name} exited with {proc.returncode}; stopping the stack")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        log("stopping")
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
