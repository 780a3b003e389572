# One-word entry points. Each target creates/updates the locked environment first.
SHELL := /bin/bash
PYTHON ?= python3.11
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
# Precompile the venv: with PYTHONDONTWRITEBYTECODE set (as on CI machines) every process would otherwise
# recompile TensorFlow, Airflow and friends from source on each import.
export UV_COMPILE_BYTECODE := 1

.PHONY: env demo test test-fast lint bench airflow cluster cluster-down clean

env: $(UV)
	$(UV) sync --frozen

$(UV):
	$(PYTHON) -m pip install --user --quiet uv

demo: env  ## the main job on the embedded default (no servers)
	$(UV) run recsys demo

test: env  ## every test tier (unit, services, e2e)
	$(UV) run pytest

test-fast: env  ## tests not marked slow or e2e (tiny models are still trained and served in process via ASGI)
	$(UV) run pytest -m "not slow and not e2e"

lint: env  ## ruff, and the import-linter layer contracts in pyproject.toml
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run lint-imports

airflow: env  ## Airflow standalone on the embedded home: both DAGs and their runs in the UI (127.0.0.1:8080)
	$(UV) run recsys airflow

cluster: env  ## CeleryExecutor cluster as local processes (Postgres metadata, Redis broker, 2 workers); pids and logs under var/cluster
	$(UV) run recsys cluster up

cluster-down: env  ## stop the cluster's processes by their pids
	$(UV) run recsys cluster down

bench: env  ## benchmarks (BENCH="name ..." to pick); JSON results under bench/results/
	$(UV) run python -m bench.run $(BENCH)

clean:
	rm -rf var
