# The README's two commands. Each creates .venv when missing and installs the project with its
# dev and distributed extras (the scale-out tests run a real Dask LocalCluster), so a fresh
# machine needs only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,distributed]'
	touch $(STAMP)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/runner demo

bench: $(STAMP)
	$(BIN)/python bench/protocol.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
