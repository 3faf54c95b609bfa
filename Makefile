# Every target does its own set-up on a fresh Debian machine, idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck bench clean

install: $(VENV)/.installed
	@bash scripts/install-system.sh

$(VENV)/.installed: pyproject.toml
	@bash scripts/install-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: install
	$(BIN)/python -m eagle.demo

LINT_DIRS := $(wildcard src tests bench)

lint: install
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)

typecheck: install
	$(BIN)/mypy

test: install lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench.swarm

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

# Eagle's tracker against opentracker under wrk load (see bench/tracker_load.py).
.PHONY: bench-tracker
bench-tracker: install
	$(BIN)/python -m bench.tracker_load $(BENCH_ARGS)
