# Quick start: `make demo` (the main job) and `make test` (the whole test suite).
# Both create ./.venv and install what they need into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install -q -c constraints.txt

.PHONY: demo test test-quick lint bench bench-plan clean

$(BIN)/specgraph: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(PIP) -e .
	touch $@

BACKENDS := $(wildcard backends/*/pyproject.toml)

$(VENV)/.test-deps: $(BIN)/specgraph requirements-test.txt $(BACKENDS)
	$(PIP) -r requirements-test.txt
	$(foreach b,$(BACKENDS),$(PIP) --no-deps -e $(dir $(b)) &&) true
	touch $@

# With its declared dependencies (torch, numpy); torch's version comes from constraints.txt.
$(VENV)/.torch: $(BIN)/specgraph backends/torch/pyproject.toml
	$(PIP) -e backends/torch
	touch $@

demo: $(VENV)/.torch
	$(BIN)/python examples/quickstart.py

test: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-quick: $(VENV)/.test-deps
	$(BIN)/python -m pytest -m "not slow"

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .

bench: $(VENV)/.test-deps
	$(PIP) -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/run.py

bench-plan: $(BIN)/specgraph
	$(BIN)/python benchmarks/bench_plan.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .hypothesis
