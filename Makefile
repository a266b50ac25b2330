# densemed: `make demo` and `make test` do all set-up themselves.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
TSTAMP  := $(VENV)/.installed-test
export DENSEMED_DATA ?= $(abspath ../shared/data)

.PHONY: demo test test-fast bench install clean lint

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The CPU build of PyTorch first, so that the package's `torch>=2.1` is already satisfied
# and pip never resolves a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $@

$(TSTAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/densemed demo --out runs/demo

test: $(TSTAMP)
	$(BIN)/python -m pytest -q

test-fast: $(TSTAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(TSTAMP)
	$(BIN)/python -m benchmarks

lint: $(TSTAMP)
	$(BIN)/pip install -q ruff && $(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs build src/*.egg-info
