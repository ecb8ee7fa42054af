# Two commands set everything up on a fresh machine:
#   make repro   create .venv if missing, then run the pipeline (dvc repro) on params.yaml
#   make test    create .venv if missing, then run the whole test suite (slow tests included)
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export TOKENIZERS_PARALLELISM := false
export DO_NOT_TRACK := 1

.PHONY: repro test lint env clean-env

env: $(VENV)/.installed

# torch first (the CPU build), then everything else pinned by requirements.lock, which also pins
# torch==2.13.0 so pip never swaps in a CUDA build.
$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	touch $@

repro: env
	dvc repro

test: env
	pytest -q

lint: env
	ruff check src tests

clean-env:
	rm -rf $(VENV)
