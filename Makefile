# mfd: `make run` installs everything and runs the main job on the embedded stack; `make help` lists targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# Ports (the one port map: README "Ports", .env.example).
DAGSTER_PORT ?= 3000
BENTO_PORT ?= 3001
MLFLOW_PORT ?= 5000
CONSOLE_PORT ?= 3002
MQTT_PORT ?= 1883
# The plant profile (MFD_PROFILE; docs/profiles.md): `make run PROFILE=cmapss`. The default profile keeps
# its embedded state in .mfd/, any other in .mfd/profiles/<name>/ (a store holds one profile's readings).
PROFILE ?= ai4i
export MFD_PROFILE := $(PROFILE)
STATE := $(if $(filter ai4i,$(PROFILE)),$(CURDIR)/.mfd,$(CURDIR)/.mfd/profiles/$(basename $(notdir $(PROFILE))))
ifneq ($(PROFILE),ai4i)
export MFD_HOME := $(STATE)
endif
# Dagster refuses a relative DAGSTER_HOME: the embedded instance, absolute.
export DAGSTER_HOME := $(STATE)/dagster
# The embedded stack keeps its BentoML store (models, bentos) beside its other state, not in ~/bentoml.
run dev: export BENTOML_HOME := $(STATE)/bentoml

.PHONY: help run test test-docs install deps dev lint bench clean stack stop celery

help: ## list the targets
	@grep -hE '^[a-z][a-z -]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort | awk -F'\t' '{printf "  make %-8s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# torch first and pinned: pip then takes the CPU wheel on this machine, not a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip check
	touch $@

install: $(BIN)/.installed ## create .venv with every dependency (PyTorch CPU first)

# System packages the tests need: PostgreSQL server binaries (initdb/pg_ctl). The embedded path needs none.
deps: ## install PostgreSQL server binaries, Chromium, Mosquitto, Redis and Prometheus for the tests (apt-get, once)
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; fi
	@# Debian's Chromium for tests/e2e/test_browser.py (Playwright drives it; no browser download).
	@if ! command -v chromium >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; fi
	@# Debian's Mosquitto MQTT broker for `mfd stream`'s tests (mfd/services/mosquitto.py).
	@if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto; fi
	@# Debian's Redis server: the Celery broker and result backend of tests/scale (mfd/services/redis.py).
	@if ! command -v redis-server >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; fi
	@# Debian's Prometheus for the console's alert rules (deploy/prometheus, tests/console/test_prometheus.py).
	@if ! command -v prometheus >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus; fi

# The embedded instance: the root dagster.yaml with its paths made absolute.
$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	sed 's|base_dir: \.mfd/dagster|base_dir: $(DAGSTER_HOME)|' $< > $@

run: install $(DAGSTER_HOME)/dagster.yaml ## generate readings and materialize every asset, embedded (~6 min)
	$(BIN)/python -m mfd_assets.main --dagster-port $(DAGSTER_PORT) --mlflow-port $(MLFLOW_PORT) \
		--bento-port $(BENTO_PORT)

test: install deps ## ruff, import contracts and the whole test suite (real PostgreSQL, S3, MLflow)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q -p no:cacheprovider -m "not docs_walk" --durations=15

test-docs: install deps ## run every README/docs command verbatim in a copy of the checkout, then make run + make dev (~55 min)
	$(BIN)/pytest -q -s -p no:cacheprovider -m docs_walk tests/docs

# The Dagster UI (reading the root dagster.yaml: the same .mfd/dagster instance), the MLflow UI, the
# maintenance console and (with Debian's mosquitto) an MQTT broker with `mfd stream` (mfd/services/dev.py)
# over the embedded store, side by side; Ctrl-C stops all of them.
dev: install $(DAGSTER_HOME)/dagster.yaml ## Dagster UI :3000, MLflow UI :5000, console :3002, MQTT + mfd stream :1883, over .mfd/
	@mkdir -p $(STATE)/mlartifacts
	@setsid $(BIN)/mlflow server --backend-store-uri sqlite:///$(STATE)/mlflow.db \
		--default-artifact-root $(STATE)/mlartifacts --host 127.0.0.1 --port $(MLFLOW_PORT) \
		>$(STATE)/mlflow-ui.log 2>&1 & mlflow=$$!; \
	setsid $(BIN)/python -m mfd.services.dev --state $(STATE) --console-port $(CONSOLE_PORT) \
		--mqtt-port $(MQTT_PORT) & side=$$!; \
	trap 'kill -TERM -- -$$mlflow -$$side 2>/dev/null; wait $$mlflow $$side 2>/dev/null' EXIT; \
	trap 'exit 130' INT TERM; \
	echo "MLflow UI: http://127.0.0.1:$(MLFLOW_PORT) (log $(STATE)/mlflow-ui.log)"; \
	echo "Dagster UI: http://127.0.0.1:$(DAGSTER_PORT)"; \
	env -u DAGSTER_HOME $(BIN)/dagster dev -h 127.0.0.1 -p $(DAGSTER_PORT)

lint: install ## ruff --fix and ruff format
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: install deps ## every bench/*.py (needs wrk for bench/serve.py)
	@if ! command -v wrk >/dev/null; then apt-get update -q && apt-get install -y -q wrk; fi
	for script in bench/*.py; do $(BIN)/python $$script; done

# The production stack on one machine (deploy/Procfile under honcho; docs/operating.md): PostgreSQL, S3,
# mosquitto, MLflow, the Dagster webserver and daemon, the console, Prometheus, and bentoml serve of the
# champion and mfd stream once there is one; state under .mfd/stack/.
stack: install deps ## start the production stack on 127.0.0.1 (or resume it), print its URLs
	$(BIN)/python -m mfd.services.stack up

# main_job with the dagster-celery executor (deploy/celery) over the running stack's PostgreSQL, S3 and MLflow:
# a redis-server broker and two Celery workers, each in its own directory under .mfd/celery/, then stopped.
celery: install deps ## run main_job on two Celery workers over the running stack (make stack first)
	eval "$$($(BIN)/python -m mfd.services.stack env)" && $(BIN)/python -m mfd.services.celery_workers main_job

stop: ## stop what make stack started (its data stays in .mfd/stack/)
	$(BIN)/python -m mfd.services.stack down

clean: ## remove .mfd/ (every embedded store)
	rm -rf .mfd
