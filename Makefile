# Every target creates .venv itself when it is missing, so a fresh clone needs only `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN := $(VENV)/.installed-run
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint bench proof install services clean

# What the product needs to run (make demo), and that plus the test and lint tools.
$(RUN): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN)

$(DEV): $(RUN)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV)

install: $(DEV)

demo: $(RUN)
	$(BIN)/creditgate demo

# The tests talk to a real Redis and PostgreSQL: .ci/services starts (or installs) them.
services:
	bash .ci/services

test: $(DEV) services
	$(BIN)/pytest -q

lint: $(DEV)
	$(BIN)/ruff check gateway store sync tests bench
	$(BIN)/ruff format --check gateway store sync tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(DEV)
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/scripts.py
	$(BIN)/python bench/proxy.py --rounds 3
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/memory.py

# Load and faults on a whole deployment, then an exact reconciliation (README, "Correctness").
# ARGS=--short is the CI configuration; --duration S and --seed N are the other options.
proof: $(DEV) services
	$(BIN)/python bench/proof.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache creditgate.db
