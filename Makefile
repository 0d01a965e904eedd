# mfd: `make run` installs everything and runs the main job on the embedded stack; `make test` runs the suite.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
export DAGSTER_HOME := $(CURDIR)/.mfd/dagster
# The embedded stack keeps its BentoML store (models, bentos) beside its other state, not in ~/bentoml.
run dev: export BENTOML_HOME := $(CURDIR)/.mfd/bentoml

.PHONY: run test install deps dev lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# torch first and pinned: pip then takes the CPU wheel on this machine, not a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip check
	touch $@

install: $(BIN)/.installed deps

# System packages: PostgreSQL server binaries for the tests (initdb/pg_ctl), wrk for bench/serve.py.
deps:
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; fi

$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	printf '# Embedded Dagster instance (SQLite storage in this directory).\ntelemetry:\n  enabled: false\n' > $@

run: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m mfd_assets.main
	@echo
	@echo "Next: DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster dev   # UI at http://127.0.0.1:3000"
	@echo "Data: .mfd/readings.db (readings), .mfd/objects/ (incoming, processed, rejected), .mfd/mlflow.db"

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

lint: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: install
	@if ! command -v wrk >/dev/null; then apt-get update -q && apt-get install -y -q wrk; fi
	for script in bench/*.py; do $(BIN)/python $$script; done

clean:
	rm -rf .mfd
