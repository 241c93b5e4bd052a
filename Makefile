# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-web test lint bench chaos check venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/firmgrant demo

# The demo, then the dashboard over its ledger until Ctrl-C (prints the URL and a sign-in).
demo-web: $(STAMP)
	$(BIN)/firmgrant demo --web

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/sync.py 100000

# Attack the worker (kills, replicas, PostgreSQL restarts, SMTP outages, a full disk, SIGTERM)
# and print what was lost: zeros, or exit 1. Restarts the local PostgreSQL; needs root.
CHAOS_DATABASE ?= postgresql://postgres@127.0.0.1:5432/test
chaos: $(STAMP)
	$(BIN)/python bench/chaos.py --database $(CHAOS_DATABASE) $(CHAOS_ARGS)

check: lint test

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
