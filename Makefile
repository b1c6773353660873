# torchkfp: `make run` (whole DAG locally) and `make test` work on a fresh machine: each
# creates/updates the virtualenv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.torchkfp-installed
ARGS ?=
# make test: pytest-xdist workers, each running whole test files (module fixtures stay whole)
TEST_JOBS ?= 2

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit lint format compile bench clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-11s %s\n", $$1, $$2}'

# torch==2.13.0 first and explicitly (a CPU build); the project's range then installs nothing
# more. See ENVIRONMENT notes in the README.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## Create/update .venv with torch 2.13.0, the project and dev tools

run: $(STAMP) ## Run the whole DAG locally on the embedded defaults (ARGS="--set train.epochs=3")
	$(BIN)/torchkfp run --quiet $(ARGS)

test: $(STAMP) ## Run all tests (unit + integration: DDP, kfp.local, emulators, HTTP), TEST_JOBS files at a time
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile $(ARGS)

test-unit: $(STAMP) ## Run only the fast unit tier (no integration, no slow)
	$(BIN)/python -m pytest -q -m "not integration and not slow" $(ARGS)

lint: $(STAMP) ## ruff check + format check
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP) ## ruff format + autofix
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

compile: $(STAMP) ## Compile the Vertex and local pipeline YAML into build/
	$(BIN)/python compile.py --out build

bench: $(STAMP) ## Run the benchmarks (DAG overhead, trainer throughput, serving)
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_serving.py

clean: ## Remove build outputs, local runs and the local warehouse/registry
	rm -rf build .runs .data .pytest_cache .ruff_cache
