# Switchboard — every command a newcomer needs. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Downloads, builds and server data (the same directory as switchboard_devkit.paths).
CACHE_DIR := $(or $(SWITCHBOARD_CACHE_DIR),$(HOME)/.cache/switchboard)
# uv UV_VERSION, installed from PyPI into a virtual environment of its own under CACHE_DIR:
# that works where `pip install --user` is refused (PEP 668) and leaves the system's
# Python alone. The Dockerfile pins the same version.
UV_VERSION := 0.13.9
UV_VENV := $(CACHE_DIR)/uv-$(UV_VERSION)
UV := $(CACHE_DIR)/bin/uv-$(UV_VERSION)
RUN := $(UV) run --frozen
# uv trusts the machine's certificate store, as apt and pip do (a TLS-inspecting proxy's
# CA included), rather than only the Mozilla roots built into it.
export UV_SYSTEM_CERTS ?= true
# Python packages of the workspace (for mypy), and their test directories.
PACKAGES := $(notdir $(wildcard libs/*/src/switchboard_* services/*/src/switchboard_* tools/*/src/switchboard_*))
TEST_DIRS := $(sort $(patsubst %/,%,$(dir $(wildcard libs/*/tests/*.py services/*/tests/*.py tools/*/tests/*.py tests/*.py))))
PYTEST := $(RUN) pytest --no-skips

.PHONY: help uv bootstrap install apt-run apt-test lint format typecheck schemas schemas-check test test-tiers \
        test-unit test-integration test-e2e infra-up infra-down infra-status run \
        bench faults clean docs docs-check up down demo deploy-tools deploy-check chart-files

# Compose: the docker CLI's `compose` plugin when it has one, else docker-compose (Debian's
# 1.29 or any later one); project "switchboard". Looked up only by the targets using it.
# COMPOSE_OVERRIDES=docker-compose.secrets.yml reads the secrets from deploy/compose/secrets/.
COMPOSE_DIR := deploy/compose
COMPOSE_OVERRIDES ?=
DOCKER_COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE := $(DOCKER_COMPOSE) -p switchboard -f $(COMPOSE_DIR)/docker-compose.yml \
           $(addprefix -f $(COMPOSE_DIR)/,$(COMPOSE_OVERRIDES))

help: ## list the targets
	@grep -E '^[A-Za-z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

# Bootstrap. `make run` and `make test` need nothing typed first: their first step, `uv`,
# installs the pinned uv when it is missing (python3 and python3-venv from apt if need be,
# then `pip install uv==UV_VERSION` into a venv under CACHE_DIR), and `apt-run`/`apt-test`
# install the Debian packages they use. Every target that runs Python depends on `install`,
# which depends on `uv` too.
uv: $(UV) ## install the pinned uv into the cache directory when missing

$(UV):
	@mkdir -p $(dir $@)
	@# A uv already on PATH at the pinned version is used as it is.
	@if command -v uv >/dev/null && [ "$$(uv --version | cut -d' ' -f2)" = "$(UV_VERSION)" ]; then \
	  echo "switchboard: using $$(command -v uv) (uv $(UV_VERSION))"; ln -sfn "$$(command -v uv)" $@; exit 0; fi; \
	command -v python3 >/dev/null || scripts/apt-install --why "uv is installed with Python" python3; \
	rm -rf $(UV_VENV); python3 -m venv $(UV_VENV) >/dev/null 2>&1 || { rm -rf $(UV_VENV); \
	  scripts/apt-install --why "python3 -m venv installs uv" python3-venv; python3 -m venv $(UV_VENV); }; \
	echo "switchboard: installing uv $(UV_VERSION) from PyPI into $(UV_VENV)"; \
	$(UV_VENV)/bin/python -m pip install uv==$(UV_VERSION) --quiet --disable-pip-version-check; \
	ln -sfn $(UV_VENV)/bin/uv $@

bootstrap: uv apt-test ## install uv and the Debian packages the tests use (run and test do this themselves)

install: uv ## install uv if missing, then the locked Python dependencies into .venv
	$(UV) sync --all-packages --frozen

apt-run: ## install the Debian packages `make run` uses when missing (scripts/apt-packages)
	@scripts/apt-install --warn --for run

apt-test: ## install the Debian packages the tests use when missing (as root or with sudo)
	@scripts/apt-install --for test

lint: install ## ruff lint and format check
	$(RUN) ruff check .
	$(RUN) ruff format --check .

format: install ## apply ruff's fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

typecheck: install ## mypy --strict (pydantic plugin) on every package and test suite
	$(RUN) mypy $(addprefix -p ,$(PACKAGES))
	@for dir in $(TEST_DIRS) bench; do echo "mypy $$dir"; $(RUN) mypy $$dir; done

schemas: install ## write the contract's JSON Schemas to docs/schemas/
	$(RUN) switchboard-schemas docs/schemas

schemas-check: install
	$(RUN) switchboard-schemas docs/schemas --check

docs: install ## regenerate docs/asyncapi.yaml and docs/openapi/*.json from the code
	$(RUN) python -m switchboard_devtools.docs docs

docs-check: install
	$(RUN) python -m switchboard_devtools.docs docs --check

test: uv apt-test lint typecheck schemas-check docs-check ## lint, types and every test tier on real servers
	$(RUN) switchboard-infra with -- $(MAKE) --no-print-directory test-tiers

test-tiers: test-unit test-integration test-e2e faults

test-unit: install apt-test ## unit tier only (no I/O)
	$(PYTEST) -m unit -q

test-integration: install apt-test ## integration tier (real Kafka + MongoDB-wire server)
	$(PYTEST) -m integration -q

test-e2e: install apt-test ## end-to-end tier (the services as separate processes)
	$(PYTEST) -m e2e -q

faults: install apt-test ## fault injection on private servers; prints sent/acked/stored/dups/over-capacity
	$(PYTEST) -m faults -q -s

infra-up: install ## start local Kafka + FerretDB (idempotent)
	$(RUN) switchboard-infra up

infra-down: uv ## stop them
	$(RUN) switchboard-infra down

infra-status: $(UV) ## show what runs
	$(RUN) switchboard-infra status

run: uv install apt-run ## servers + every service in the foreground; Ctrl-C stops all
	SWITCHBOARD_ENV=$${SWITCHBOARD_ENV:-dev} $(RUN) switchboard-run

bench: install ## every benchmark beside its baseline (3 repetitions) -> docs/benchmarks.*
	$(RUN) switchboard-infra with -- $(RUN) python bench/run.py $(BENCH_ARGS)

up: ## build the images and start everything with Docker Compose (services, Kafka, MongoDB, monitoring)
	$(COMPOSE) up -d --build
	@echo "SMTP 127.0.0.1:2525 · webhooks :8002 · router API :8003 · agent console http://127.0.0.1:8003/console (token: make demo) · web chat http://127.0.0.1:8005/chat/demo · Grafana http://127.0.0.1:3000 · Prometheus :9090"

down: ## stop the Compose stack (data volumes kept; VOLUMES=1 removes them)
	$(COMPOSE) down $(if $(VOLUMES),--volumes,)

demo: install ## send mail, signed webhooks and a web chat message to a running stack (make run or make up), show the routing
	$(RUN) python -m switchboard_devtools.demo $(if $(DEMO_SECONDS),--seconds $(DEMO_SECONDS),)

deploy-tools: install ## build helm and kubeconform (Go module proxy) and the k8s schemas into ~/.cache/switchboard
	$(RUN) python -m switchboard_devkit.deploy_tools

deploy-check: install apt-test ## compose config, hadolint, helm template + kubeconform, dashboards, runbooks, docs
	$(PYTEST) -q -m unit tests/test_deploy_manifests.py tests/test_deploy_observability.py tests/test_deploy_docs.py

chart-files: ## copy the shipped alert rules and dashboards into the Helm chart
	cp deploy/prometheus/*.rules.yml deploy/k8s/switchboard/files/prometheus/
	cp deploy/grafana/dashboards/*.json deploy/k8s/switchboard/files/grafana/

clean: ## remove build and test caches (not the downloaded servers)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis .run
