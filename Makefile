# Switchboard — every command a newcomer needs. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

UV ?= uv
RUN := $(UV) run --frozen
# Python packages of the workspace (for mypy), and their test directories.
PACKAGES := $(notdir $(wildcard libs/*/src/switchboard_* services/*/src/switchboard_*))
TEST_DIRS := $(sort $(patsubst %/,%,$(dir $(wildcard libs/*/tests/*.py services/*/tests/*.py tests/*.py))))
PYTEST := $(RUN) pytest --no-skips

.PHONY: help install lint format typecheck schemas schemas-check test test-tiers \
        test-unit test-integration test-e2e infra-up infra-down infra-status run \
        bench faults clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

install: ## install the locked Python dependencies into .venv
	$(UV) sync --all-packages --frozen

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

test: lint typecheck schemas-check ## lint, types and every test tier on real servers
	$(RUN) switchboard-infra with -- $(MAKE) --no-print-directory test-tiers

test-tiers: test-unit test-integration test-e2e

test-unit: install ## unit tier only (no I/O)
	$(PYTEST) -m unit -q

test-integration: install ## integration tier (real Kafka + MongoDB-wire server)
	$(PYTEST) -m integration -q

test-e2e: install ## end-to-end tier (the services as separate processes)
	$(PYTEST) -m e2e -q

infra-up: install ## start local Kafka + FerretDB (idempotent)
	$(RUN) switchboard-infra up

infra-down: ## stop them
	$(RUN) switchboard-infra down

infra-status: ## show what runs
	$(RUN) switchboard-infra status

run: install ## servers + every service in the foreground; Ctrl-C stops all
	SWITCHBOARD_ENV=$${SWITCHBOARD_ENV:-dev} $(RUN) switchboard-run

bench: install ## every benchmark beside its baseline (3 repetitions) -> docs/benchmarks.*
	$(RUN) switchboard-infra with -- $(RUN) python bench/run.py $(BENCH_ARGS)

clean: ## remove build and test caches (not the downloaded servers)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis .run
