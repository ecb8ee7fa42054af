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

# torch first, then everything else pinned by requirements.lock. TORCH=auto (default) keeps a torch that
# is already importable in $(VENV) (the CUDA build you installed for your GPU) and pins the rest around
# it; without one it installs TORCH_SPEC (the CPU build of torch 2.13, which the lock also pins, so pip
# never swaps in a CUDA build). TORCH=cpu installs TORCH_SPEC whatever is there. Off this workplace,
# point pip at the CPU wheels: TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu'.
TORCH ?= auto
TORCH_SPEC ?= torch==2.13.0

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ "$(TORCH)" != auto ] || ! $(PY) -c 'import torch' 2>/dev/null; then \
	  echo "make: installing $(TORCH_SPEC)"; $(PY) -m pip install -q $(TORCH_SPEC); \
	  cp requirements.lock $(VENV)/constraints.txt; \
	else \
	  echo "make: keeping the installed torch $$($(PY) -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)')"; \
	  grep -v '^torch==' requirements.lock > $(VENV)/constraints.txt; \
	fi
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e '.[dev]'
	touch $@

repro: env
	dvc repro

test: env
	pytest -q

lint: env
	ruff check src tests

clean-env:
	rm -rf $(VENV)
