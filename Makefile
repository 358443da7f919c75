# Developer entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION ?= 0.13.9
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.installed

# uv's cache usually sits on another filesystem: copy instead of warning about hardlinks.
export UV_LINK_MODE ?= copy

PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=

# Exported before every command that needs PostgreSQL: a server URL (bin/pg-url) and the
# directory of the pg_dump/pg_restore/psql that match it.
PG_ENV = MM_PG_URL="$$(bin/pg-url)"; MM_PG_BINDIR="$$(bin/pg-url --bindir)"; \
	export MM_PG_URL MM_PG_BINDIR; echo "MM_PG_URL=$$MM_PG_URL MM_PG_BINDIR=$$MM_PG_BINDIR"

.PHONY: help venv lint fmt test demo demo-reset bench bench-airflow bench-airflow-tables bench-airflow-bigdata lock pg-stop clean distclean airflow airflow-stop airflow-status

help:
	@echo "make venv       create .venv and install requirements.txt (only when it changed)"
	@echo "make lint       ruff check, ruff format --check, mypy include/migration_manager"
	@echo "make fmt        ruff check --fix, ruff format"
	@echo "make test       lint, then pytest with MM_PG_URL from bin/pg-url (PYTEST_ARGS=...)"
	@echo "make demo       python -m migration_manager.demo (DEMO_ARGS=...)"
	@echo "make demo-reset the demo databases back to their initial state (make airflow does it too)"
	@echo "make bench      python bench/run.py (BENCH_ARGS=...)"
	@echo "make bench-airflow  NocoBase syncs under the real scheduler vs pg_dump|pg_restore"
	@echo "make bench-airflow-tables  100 and 400 small tables under the scheduler vs pg_dump|pg_restore"
	@echo "make bench-airflow-bigdata  full sync of the make bench data under the scheduler vs the psql pipe"
	@echo "make airflow    run Airflow for real (LocalExecutor, http://127.0.0.1:8080, admin/admin)"
	@echo "make airflow-stop  stop every process make airflow started"
	@echo "make lock       rewrite requirements.txt from what .venv holds"
	@echo "make pg-stop    stop the throwaway PostgreSQL cluster bin/pg-url may have started"
	@echo "make clean      stop that cluster, remove .pg .airflow .demo artifacts and caches"
	@echo "make distclean  clean, and remove .venv"

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(UV): | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# The engine (include/migration_manager) is installed in editable mode: importable in every
# process of the venv, Airflow's included, without PYTHONPATH.
$(STAMP): requirements.txt pyproject.toml | $(UV)
	$(UV) pip install --python $(BIN)/python -r requirements.txt
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy include/migration_manager

fmt: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# pytest's own exit code is kept: 5 (no tests collected) fails the target.
test: lint
	$(PG_ENV); $(BIN)/pytest -q $(PYTEST_ARGS)

demo: venv
	$(PG_ENV); $(BIN)/python -m migration_manager.demo $(DEMO_ARGS)

# The demo pair back to its initial state (prod lacks what staging has), nothing run.
demo-reset: venv
	$(PG_ENV); $(BIN)/python -m migration_manager.demo --reset

bench: venv
	$(PG_ENV); $(BIN)/python bench/run.py $(BENCH_ARGS)

# Syncs of the NocoBase fixture pair under the real scheduler (its own bin/airflow-local).
bench-airflow: venv
	$(PG_ENV); $(BIN)/python bench/airflow.py $(BENCH_AIRFLOW_ARGS)

# Apps of many small tables (100, 400; BENCH_AIRFLOW_TABLES_ARGS="--tables 1000") vs pg_dump|pg_restore.
bench-airflow-tables: venv
	$(PG_ENV); $(BIN)/python bench/airflow_tables.py $(BENCH_AIRFLOW_TABLES_ARGS)

# A full sync of the make bench data (2.2 M rows) under its own bin/airflow-local vs the psql pipe.
bench-airflow-bigdata: venv
	$(PG_ENV); $(BIN)/python bench/airflow_bigdata.py $(BENCH_AIRFLOW_BIGDATA_ARGS)

# Airflow for real: api-server, scheduler, dag-processor, triggerer (bin/airflow-local --help).
# AIRFLOW_ARGS=... passes options, e.g. AIRFLOW_ARGS="--port 8081 --executor CeleryExecutor".
AIRFLOW_ARGS ?=
airflow: venv
	$(PG_ENV); $(BIN)/python bin/airflow-local start $(AIRFLOW_ARGS)

airflow-stop:
	$(BIN)/python bin/airflow-local stop $(AIRFLOW_ARGS)

airflow-status:
	$(BIN)/python bin/airflow-local status $(AIRFLOW_ARGS)

lock: | $(UV)
	{ sed -n '/^#/p' requirements.txt; \
	  $(UV) pip freeze --python $(BIN)/python | grep -vE '^(pip|setuptools|uv)=='; \
	} > requirements.txt.new
	mv requirements.txt.new requirements.txt

pg-stop:
	bin/pg-stop

clean:
	[ ! -x $(BIN)/python ] || $(BIN)/python bin/airflow-local stop
	bin/pg-stop --purge || true
	rm -rf .airflow .demo artifacts .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
