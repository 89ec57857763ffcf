# ltr-platform: every target installs what it needs into .venv/ first (idempotent).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
EXTRAS := training,serving,orchestration,dev,deploy
# Local wheel folder (a CPU build of torch lives there on the dev/CI machines).
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-16)
PYTEST_ARGS ?=

.PHONY: install demo airflow test test-all lint format bench bench-quality bench-export bench-serving bench-adversarial bench-features bench-online clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(FIND_LINKS) -c requirements/constraints.txt -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $@

demo: install
	$(VENV)/bin/ltr demo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)
	@echo "== DAG tests again with Airflow's metadata database on PostgreSQL"
	LTR_TEST_AIRFLOW_DB=postgres $(PY) -m pytest -m dags tests/dags $(PYTEST_ARGS)

# Everything make test runs, then the tests marked slow (the all-fold quality gate).
test-all: test
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check ltr serving tests bench dags feature_repo
	$(VENV)/bin/ruff format --check ltr serving tests bench dags feature_repo
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format ltr serving tests bench dags feature_repo
	$(VENV)/bin/ruff check --fix ltr serving tests bench dags feature_repo

bench: bench-export bench-quality bench-serving bench-features bench-online

bench-export: install
	$(PY) -m bench.export_latency

bench-quality: install
	$(PY) -m bench.quality

# The rank service next to the stack a user would assemble (FastAPI + Feast SDK + ONNX
# Runtime, bench/assembled_stack.py), 1 and 2 uvicorn workers, ratio targets (Redis at
# 127.0.0.1:6379, db 11)
bench-serving: install
	$(PY) -m bench.serving

# Legitimate traffic while another process attacks the service (oversized and error-heavy
# bodies, a feedback flood, slow clients); starts a private redis-server (64 MB, allkeys-lru)
bench-adversarial: install
	$(PY) -m bench.adversarial

# Feature store: materialization into Redis vs Feast's file offline store, online reads vs
# the Feast SDK (both need the Redis at 127.0.0.1:6379)
bench-features: install
	$(PY) -m bench.materialize
	$(PY) -m bench.feature_read

# The online loop: event drain throughput (Redis at 127.0.0.1:6379), interleaving power on
# the click simulator, propensity estimation and debiased click labels (MQ2008)
bench-online: install
	$(PY) -m bench.drain
	$(PY) -m bench.online_loop
	$(PY) -m bench.online_power
	$(PY) -m bench.click_debias

# Airflow for the UI on http://localhost:$(AIRFLOW_PORT) (blocks; Ctrl-C or SIGTERM stops every
# component): what `airflow standalone` runs, launched by ltr/pipelines/airflow_dev.py so that every
# process stops with it and nothing listens beyond 127.0.0.1 (log servers included).
# Metadata DB SQLite under $(LTR_HOME)/airflow unless AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is
# set, DAGs from dags/, no examples, LocalExecutor with AIRFLOW_PARALLELISM task slots.
# See docs/airflow.md.
AIRFLOW_PORT ?= 8080
AIRFLOW_PARALLELISM ?= 4
airflow: install
	LTR_HOME="$(abspath $(or $(LTR_HOME),var))" \
	exec $(PY) -m ltr.pipelines.airflow_dev --port $(AIRFLOW_PORT) --parallelism $(AIRFLOW_PARALLELISM)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
