# pmm: `make run` and `make test` are all a newcomer needs.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pmm-installed

.DEFAULT_GOAL := help
.PHONY: help setup run test test-fast bench clean

help: ## List the targets with their one-line description
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP) ## Create .venv (if missing) and install pmm with its dev tools into it

run: $(STAMP) ## Set up, then run the whole pipeline on the embedded synthetic dataset
	$(PY) -m pmm.run stage=all

test: $(STAMP) ## Set up, then run the test suite
	$(PY) -m pytest

test-fast: $(STAMP) ## Run the tests that are not marked slow
	$(PY) -m pytest -m "not slow"

bench: $(STAMP) ## Measure the CRF backends, PPMG, inference, the default run and the cost at scale; writes benchmarks/RESULTS.md
	$(PY) benchmarks/run_all.py

clean: ## Remove run outputs (keeps .venv and the generated data)
	rm -rf outputs multirun
