# Every target creates .venv itself when it is missing, so a fresh clone needs only `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench install services clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/creditgate demo

# The tests talk to a real Redis and PostgreSQL: .ci/services starts (or installs) them.
services:
	bash .ci/services

test: $(STAMP) services
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check gateway store sync tests bench
	$(BIN)/ruff format --check gateway store sync tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/proxy.py --rounds 3
	$(BIN)/python bench/sync.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache creditgate.db
