# The two commands of the README: `make dev` (the local stack) and `make test` (everything, unit to end to end).
# Every tool they need is installed here from the package registries, into the repo where possible.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
CARGO_LAMBDA := $(VENV)/bin/cargo-lambda

.PHONY: dev test tools unit lint clippy build-arm64 sizes cold-start load-test clean

tools: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

/usr/bin/chromium:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null

## The local stack: moto (DynamoDB, Secrets Manager, SQS), the Atlassian sandbox, every function under
## `cargo lambda watch` on 127.0.0.1:9000; prints a connect URL; Ctrl-C stops it all.
dev: tools
	cargo build --workspace --bins
	$(PY) scripts/stack.py dev

## The end-to-end stack's org and points quota: the org's first sync costs several windows of the quota, so runs
## wait for the quota and resume (a window of 4 s stands in for Atlassian's hour); and webhook retries shrunk the
## same way (1 s for 30 s, 8 s for a day).
E2E_ORG := --users 600 --groups 30 --projects 60 --spaces 60
E2E_QUOTA_SANDBOX := --quota-points 1500 --quota-window-secs 4
E2E_QUOTA_CONNECTOR := ATLASSIAN_QUOTA_POINTS=1500 ATLASSIAN_QUOTA_WINDOW_SECONDS=4 ATLASSIAN_QUOTA_RESERVE_PERCENT=10 \
  SYNC_QUOTA_SLEEP_SECONDS=0 WEBHOOK_RETRY_FIRST_SECONDS=1 WEBHOOK_GIVE_UP_SECONDS=8

## Everything: formatting, the template lint, unit tests, then integration tests against the local stack's AWS (the
## engine and the functions' handlers in-process), end-to-end and browser tests against the whole stack (functions
## under `cargo lambda watch`, the sandbox, the events), and the small load test.
test: tools node_modules/.installed /usr/bin/chromium
	cargo fmt --all --check
	$(VENV)/bin/cfn-lint infra/template.yaml
	$(PY) scripts/check_iam.py --self-test && $(PY) scripts/check_iam.py
	cargo test --workspace
	cargo build --workspace --bins
	STACK_FUNCTIONS=0 $(PY) scripts/stack.py run -- cargo test -p tests --features stack --test integration -- --test-threads 4
	STACK_WATCH_FLAGS=--ignore-changes SYNC_MAX_PAGES_PER_INVOCATION=1 \
	  STACK_SANDBOX_FLAGS="$(E2E_ORG) $(E2E_QUOTA_SANDBOX)" $(E2E_QUOTA_CONNECTOR) \
	  $(PY) scripts/stack.py run -- \
	  bash -c 'rm -f .dev/e2e-events.jsonl && cargo test -p tests --features stack --test e2e -- --test-threads 4 \
	    && node tests/browser/connect.mjs && $(PY) scripts/check_event_schemas.py .dev/e2e-events.jsonl'
	STACK_FUNCTIONS=0 LOAD_TEST=1 $(LOAD_SMALL) $(PY) scripts/stack.py run -- cargo test -p tests --features stack --test load

## The load test's small version (in `make test`): 30 tenants, 2 big ones that are most of the work, under a quota that
## binds.
LOAD_SMALL := LOAD_TENANTS=30 LOAD_BIG=2 LOAD_BIG_USERS=10000 LOAD_QUOTA_POINTS=1200 LOAD_WINDOW_SECS=4 \
  LOAD_TURN_POINTS=500 LOAD_TIMEOUT_SECS=900

## The load test: 1,000 tenants (20–200 users each, 5 of 5,000) synced through the scheduler, SQS and workers
## against one sandbox under a compressed points quota; prints the figures BENCHMARKS.md keeps. Override any
## LOAD_* setting (see tests/load/main.rs), e.g. `make load-test LOAD_TENANTS=200`.
load-test: tools
	cargo build -p tests --features stack --tests
	STACK_FUNCTIONS=0 LOAD_TEST=1 $(PY) scripts/stack.py run -- cargo test -p tests --features stack --test load

unit:
	cargo test --workspace

clippy:
	cargo clippy --workspace --all-targets --features tests/stack -- -D warnings

lint: tools clippy
	cargo fmt --all --check
	$(VENV)/bin/cfn-lint infra/template.yaml
	$(PY) scripts/check_iam.py

## The release artifacts SAM deploys, cross-built for arm64 with zig (from PyPI's ziglang).
build-arm64: tools
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(CARGO_LAMBDA) lambda build --release --arm64 \
	  --package connect --package callback --package api --package sync-worker --package sync-scheduler \
	  --package event-publisher --package webhook-sender

## Cold starts: each release binary from process start to its first poll of a local Runtime API, its secrets read
## from the local stack (BENCHMARKS.md).
cold-start: tools
	cargo build --release --bins -p connect -p callback -p api -p sync-worker -p sync-scheduler -p event-publisher \
	  -p webhook-sender
	STACK_FUNCTIONS=0 $(PY) scripts/stack.py run -- python3 scripts/cold_start.py

## The release artifacts' sizes, raw and zipped (BENCHMARKS.md).
sizes: build-arm64
	python3 scripts/artifact_sizes.py

clean:
	rm -rf .dev target/lambda
