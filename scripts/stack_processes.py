"""The local stack's child processes (moto, the sandbox, `cargo lambda watch`): where they run and log, starting one,
waiting for it to answer, and stopping them all, also on a second Ctrl-C. Apart from scripts/stack.py so that its
other modules share one list of what runs and one log prefix."""

import os
import signal
import socket
import subprocess
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
