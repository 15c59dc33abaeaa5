# One command sets everything up on a fresh machine (Python 3.11, nothing installed):
#   make demo   - the main job
#   make test   - ruff, mypy and the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PACKAGES := space search distill api db

.PHONY: demo test lint install clean

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
	$(BIN)/mypy $(PACKAGES)

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
