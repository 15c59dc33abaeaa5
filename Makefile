# One command sets everything up on a fresh machine (Python 3.11, nothing installed):
#   make demo   - the main job
#   make test   - ruff, mypy and the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PACKAGES := space search distill api db

NNI_VENV ?= .venv-nni

.PHONY: demo test test-fast lint install docs clean nni-venv test-nni bench-search-speed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch/torchvision come from the machine's local wheels with plain pip (never uv or poetry).
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/reskd demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy $(PACKAGES) benchmarks

# Two test workers; cases that must not overlap or that share a module's server run in one
# worker (``xdist_group``: tests/api/service.py); the 25 slowest cases are listed at the end.
test: lint
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n 2 --dist loadgroup --durations=25

# The cases not marked slow, in under a minute on 2 cores (two xdist workers): the unit tests, a one-epoch search of each
# strategy on a tiny supernet, and the job queue's contract on SQLite.
test-fast: $(VENV)/.installed
	$(BIN)/pytest -q -m 'not slow' -n 2 --dist loadgroup --durations=10

# NNI 3.0 (optional strategy nni-darts) pins filelock<3.12 and old typeguard: its own environment.
$(NNI_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(NNI_VENV)
	$(NNI_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(NNI_VENV)/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(NNI_VENV)/bin/python -m pip install --quiet -e '.[dev,nni]'
	touch $@

nni-venv: $(NNI_VENV)/.installed

test-nni: nni-venv
	$(NNI_VENV)/bin/pytest -q tests/search/test_nni.py

bench-search-speed: nni-venv
	$(NNI_VENV)/bin/python -m benchmarks.search_speed

# The documentation site (mkdocs.yml) into site/; --strict: a broken link or reference fails.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(NNI_VENV) site .mypy_cache .pytest_cache .ruff_cache .import_linter_cache
