# instant3d-jax: two commands on a fresh machine with Python 3.11 — `make demo`, `make test`.
# Every target sets up a local .venv from the pinned requirements first (idempotent: pip runs
# again only when a requirements file or pyproject.toml changed).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP     := $(VENV)/.dev-installed
PYTEST_ARGS   ?=
DEMO_ARGS     ?=

.PHONY: install install-dev install-gpu test test-all demo bench clean

install: $(RUNTIME_STAMP)

$(RUNTIME_STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

install-dev: $(DEV_STAMP)

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

# JAX's CUDA 12 build at the pinned JAX version (GPU machines only).
install-gpu: $(RUNTIME_STAMP)
	$(BIN)/python -m pip install -q "jax[cuda12]==$$(grep '^jax==' requirements.txt | cut -d= -f3)"

test: $(DEV_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: $(DEV_STAMP)
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

demo: $(RUNTIME_STAMP)
	$(BIN)/python -m instant3d_jax.demo $(DEMO_ARGS)

bench: $(DEV_STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
