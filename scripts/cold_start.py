#!/usr/bin/env python3
"""Cold starts: each function's release binary, from process start to its first poll of the Lambda Runtime API
(`GET /2018-06-01/runtime/invocation/next`), with its init reading its secrets from the local stack.

Run inside the stack, after a host release build: `make cold-start` (STACK_FUNCTIONS=0 scripts/stack.py run --
python3 scripts/cold_start.py). Prints a Markdown table of the median, p90 and best of COLD_START_RUNS (20) starts
per function. A local Runtime API stand-in answers nothing: the first poll is the end of the init."""
import http.server
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ["connect", "callback", "api", "sync-scheduler", "sync-worker", "event-publisher", "webhook-sender"]


class RuntimeApi(http.server.BaseHTTPRequestHandler):
    """Notes when the first `invocation/next` arrives, then leaves the poll hanging (no event ever comes)."""

    polled = threading.Event()
    polled_at = 0.0

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        if self.path.endswith("/runtime/invocation/next") and not RuntimeApi.polled.is_set():
            RuntimeApi.polled_at = time.perf_counter()
            RuntimeApi.polled.set()
        time.sleep(5)

    def log_message(self, *_):
        pass


def function_env() -> dict:
    env = {}
    for line in (ROOT / ".dev" / "functions.env").read_text().splitlines():
        name, _, value = line.partition("=")
        env[name] = value
    return env


def main() -> int:
    runs = int(os.environ.get("COLD_START_RUNS", "20"))
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = {**os.environ, **function_env(),
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_LEVEL": "WARN"}
    print(f"| function | median | p90 | best | runs |\n|---|---|---|---|---|")
    for name in FUNCTIONS:
        binary = target / name
        if not binary.exists():
            raise SystemExit(f"{binary} is missing: build the release binaries first (make cold-start does)")
        env = {**base, "AWS_LAMBDA_FUNCTION_NAME": name}
        times = []
        for _ in range(runs + 1):
            RuntimeApi.polled.clear()
            started = time.perf_counter()
            process = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if not RuntimeApi.polled.wait(10):
                process.kill()
                raise SystemExit(f"{name} never polled: {process.communicate()[1].decode(errors='replace')[-2000:]}")
            times.append((RuntimeApi.polled_at - started) * 1000)
            process.kill()
            process.wait()
        times = sorted(times[1:])  # the first start warms the page cache
        p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
        print(f"| {name} | {statistics.median(times):.1f} ms | {p90:.1f} ms | {times[0]:.1f} ms | {runs} |")
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
