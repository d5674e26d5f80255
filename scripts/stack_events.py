"""What Lambda's event sources and the product's webhook endpoint do in AWS, done by threads for the local stack: SQS
deliveries to the sync worker and the webhook sender, the tables' streams read for the event publisher, the bus's
tap printed for `make dev`, and a webhook receiver that checks every signature. Apart from scripts/stack.py because
it is the stack's emulation of AWS's plumbing, not its setup."""

import json
import time
import urllib.request

from stack_aws import aws_session
from stack_processes import STATE, log


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
