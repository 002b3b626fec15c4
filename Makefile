# Two entry points for a fresh machine: `make demo` (set up + run the main job) and `make test` (set up + run tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup demo test lint typecheck check bench clean

$(BIN)/fmscope: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt "torch==2.13.0"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,text,sam]"
	SAM2_BUILD_CUDA=0 $(BIN)/pip install --quiet --no-deps --no-build-isolation sam2==1.1.0
	touch $(BIN)/fmscope

setup: $(BIN)/fmscope

demo: setup
	$(BIN)/fmscope quickstart --out quickstart_out --overwrite

# CI runs this (.ci/run): lint, type-check, then the test suite.
test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: setup
	$(BIN)/mypy

check: lint typecheck test

bench: setup
	$(BIN)/python benchmarks/bench_percentiles.py
	$(BIN)/python benchmarks/real_data_otsu.py

clean:
	rm -rf $(VENV) quickstart_out .pytest_cache .mypy_cache .ruff_cache
