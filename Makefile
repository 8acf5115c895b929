# Upkeep — two commands matter: `make up` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help up down demo status logs mongo-server mongo-server-background test test-unit test-integration test-e2e test-deploy image-check lint fmt \
        typecheck dashboards audit \
        schemas bench bench-ingest bench-mongo bench-rules bench-notifier bench-analytics lock clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[local,dev]'
	@touch $(STAMP)

# Debian packages the tests drive (installed once, as root): Chromium for the dashboard's
# headless browser test; prometheus for promtool and a real Prometheus server
CHROMIUM := /usr/bin/chromium
PROMTOOL := /usr/bin/promtool
DEBIAN_TOOLS := $(CHROMIUM) $(PROMTOOL)
$(DEBIAN_TOOLS) &:
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	else \
		echo "the tests need Debian's chromium and prometheus: sudo apt-get install chromium prometheus" >&2; \
		exit 1; \
	fi

# compose-go's loader (github.com/compose-spec/compose-go), which checks deploy/compose.yaml
COMPOSE_GO_VERSION := v2.16.2
COMPOSE_GO := .cache/compose-go/$(COMPOSE_GO_VERSION)/cmd
$(COMPOSE_GO):
	GOPATH=$(CURDIR)/.cache/go GOCACHE=$(CURDIR)/.cache/go-build GOFLAGS=-modcacherw \
	GOBIN=$(CURDIR)/$(dir $(COMPOSE_GO)) \
		go install github.com/compose-spec/compose-go/v2/cmd@$(COMPOSE_GO_VERSION)

# compose-go's loader as `docker compose` uses it (interpolation, env files, consistency)
COMPOSE_CHECK := .cache/compose-check/compose-check
$(COMPOSE_CHECK): deploy/compose-check/main.go deploy/compose-check/go.mod deploy/compose-check/go.sum
	cd deploy/compose-check && GOPATH=$(CURDIR)/.cache/go GOCACHE=$(CURDIR)/.cache/go-build \
		GOFLAGS=-modcacherw go build -o $(CURDIR)/$(COMPOSE_CHECK) .

# the compiled MongoDB-wire server (crate secantus-mdb), built once per machine into
# ~/.cache/upkeep/ and reused by every clone; UPKEEP_LOCAL_MONGO=python skips it
mongo-server: $(STAMP) ## build (once per machine) or find the compiled MongoDB-wire server
	$(BIN)/python -m deploy.local.mongo_choice build

# make test starts the build first, in the background, so the other tools and the unit tests
# overlap it; the test harness waits for it (a file lock) before it starts the server
mongo-server-background: $(STAMP)
	@$(BIN)/python -m deploy.local.mongo_choice build --background

TOOLS := $(STAMP) $(DEBIAN_TOOLS) $(COMPOSE_GO) $(COMPOSE_CHECK)
export UPKEEP_COMPOSE_GO := $(CURDIR)/$(COMPOSE_GO)
export UPKEEP_COMPOSE_CHECK := $(CURDIR)/$(COMPOSE_CHECK)

install: $(STAMP) ## create .venv and install the project with pinned dependencies

up: $(STAMP) mongo-server ## start Kafka, the MongoDB-wire server and every service (no Docker needed)
	$(BIN)/python -m deploy.local up

down: $(STAMP) ## stop what `make up` started (by pid)
	$(BIN)/python -m deploy.local down

demo: $(STAMP) ## publish a realistic scenario into the running system (after `make up`)
	$(BIN)/python -m deploy.local.demo

status: $(STAMP) ## what runs, where, and its log file
	$(BIN)/python -m deploy.local status

logs: $(STAMP) ## the last lines of every local log (LINES=100 for more)
	$(BIN)/python -m deploy.local logs --lines $${LINES:-30}

# the tests that need no server first, overlapping the compiled server's first build; then
# wait for that build (outside any test's timeout) and run those that start servers
test: $(STAMP) mongo-server-background $(TOOLS) ## every test: unit, integration (real Kafka + MongoDB-wire server), e2e, deploy
	$(BIN)/python -m pytest tests/unit tests/deploy $(PYTEST_ARGS)
	$(BIN)/python -m deploy.local.mongo_choice build
	$(BIN)/python -m pytest tests/integration tests/e2e --durations=20 $(PYTEST_ARGS)

test-unit: $(STAMP) ## unit tests only (no servers)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP) mongo-server ## integration tests only
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: $(TOOLS) mongo-server ## end-to-end tests only
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

test-deploy: $(TOOLS) ## the Compose file, Dockerfile, Prometheus rules and Grafana dashboards
	$(BIN)/python -m pytest tests/deploy $(PYTEST_ARGS)

dashboards: $(STAMP) ## regenerate deploy/grafana/dashboards/*.json
	$(BIN)/python -m deploy.grafana.dashboards

# podman (with runc: crun cannot run on every cgroup layout) and mmdebstrap for the image check,
# installed once as root; without them the check skips and says why
PODMAN := /usr/bin/podman
$(PODMAN):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap; \
	else \
		echo "the image check needs podman, runc and mmdebstrap: sudo apt-get install podman runc mmdebstrap (skipped without them)" >&2; \
	fi

image-check: $(STAMP) $(PODMAN) ## build the image with podman on a local python:3.11 stand-in and run each service from it as Compose does (make test runs it when podman can run)
	$(BIN)/python -m deploy.image.check

lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services deploy tests bench

audit: $(STAMP) ## pip-audit the pinned dependencies (needs PyPI's per-release JSON API)
	$(BIN)/pip-audit --requirement constraints.txt --no-deps --disable-pip --strict \
		--progress-spinner off

fmt: $(STAMP) ## format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP) ## mypy --strict
	$(BIN)/mypy shared services deploy tests bench

schemas: $(STAMP) ## regenerate docs/schemas from the event models
	$(BIN)/python -m shared.events.schema docs/schemas

bench: $(STAMP) mongo-server ## the whole pipeline at increasing rates: events/s, latency, lag, memory
	$(BIN)/python -m bench.pipeline $${BENCH_ARGS:-}

bench-ingest: $(STAMP) mongo-server ## events/s through ingest vs a bare aiokafka pass-through
	$(BIN)/python -m bench.ingest $${BENCH_ARGS:-}

bench-notifier: $(STAMP) mongo-server ## deliveries/s to local SMTP + webhooks, ledger on vs off
	$(BIN)/python -m bench.notifier $${BENCH_ARGS:-}

bench-analytics: $(STAMP) mongo-server ## events/s aggregated, MongoDB writes per 1,000 events vs naive
	$(BIN)/python -m bench.analytics $${BENCH_ARGS:-}

bench-mongo: $(STAMP) mongo-server ## the embedded MongoDB-wire servers on Upkeep's operations
	$(BIN)/python -m bench.mongo_server $${BENCH_ARGS:-}

bench-rules: $(STAMP) mongo-server ## events/s evaluated, timers fired/s with 100,000 due, tick cost vs customers
	$(BIN)/python -m bench.rules $${BENCH_ARGS:-}

lock: ## re-pin constraints.txt from a clean environment
	rm -rf .cache/lock-venv && $(PYTHON) -m venv .cache/lock-venv
	.cache/lock-venv/bin/pip install --quiet -e '.[local,dev]'
	.cache/lock-venv/bin/pip freeze --exclude-editable > constraints.txt

clean: ## remove runtime state (not caches)
	rm -rf .run
