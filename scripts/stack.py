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
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# The stack's parts, by subject: its child processes, its AWS in moto, and the threads that stand in for Lambda's
# event sources and a webhook endpoint.
from stack_aws import create_resources
from stack_events import deliver, print_events, publish_stream, receiver, state_filter
from stack_processes import ROOT, STATE, VENV_BIN, log, port_free, processes, start, stop_all, wait_for


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
