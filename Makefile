# paritylab: `make repro` builds every result, `make test` runs the tests.
# Both create .venv and install the pinned dependencies first if needed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1
# dvc.yaml's commands say `python`: it must be the venv's, with the pinned packages.
export PATH := $(abspath $(BIN)):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help setup repro test test-all lint bench check ui ui-shot clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch 2.13.0 CPU is installed first and alone so nothing pulls a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.lock
	touch $@

setup: $(STAMP) ## Create .venv and install pinned dependencies

# DVC runs one stage at a time; `python -m stages repro` starts independent ones side by side
# (JOBS at once; by default one per CPU, at most one per 2 GB of memory).
JOBS ?=

repro: $(STAMP) ## Run the whole pipeline (dvc repro, independent stages side by side; JOBS=N)
	$(BIN)/python -m stages repro $(if $(JOBS),--jobs $(JOBS))

test: $(STAMP) ## Run the test suite (5-10 minutes on 2 cores; excludes slow tests)
	$(BIN)/python -m pytest

test-all: $(STAMP) ## Run every test, slow ones included
	$(BIN)/python -m pytest -m ""

lint: $(STAMP) ## Ruff
	$(BIN)/ruff check .

check: $(STAMP) ## Regression gate against the committed metrics
	$(BIN)/python -m stages check

bench: $(STAMP) ## Benchmark; writes bench/results.json
	$(BIN)/python bench/run.py

ui: $(STAMP) ## Open the MLflow UI on the local store (127.0.0.1:5000); prints the URL comparing the variants
	$(BIN)/python -m stages ui

ui-shot: $(STAMP) ## Screenshot that page in headless Chromium (needs chromium); writes ui_runs.png
	$(BIN)/python scripts/ui_screenshot.py --out ui_runs.png

clean: ## Remove the venv (outputs stay; dvc owns them)
	rm -rf $(VENV)
