# Two entry points for a fresh machine (Python 3.11, make):
#   make demo   virtualenv + install + train a small network with TNGD on a private daemon, and with Adam
#   make test   virtualenv + install with the dev and sweep extras + run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, pinned: the CPU build of 2.13.0 that lies on disk here (an unpinned torch pulls CUDA).
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[torch,dev,sweep]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/spu demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
