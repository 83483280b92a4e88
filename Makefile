# The README's commands. `make demo` runs the main job on embedded defaults;
# `make test` sets up everything (venv, system packages, broker) and runs the checks.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint bench broker sysdeps clean

sysdeps:
	@PYTHON=$(PYTHON) scripts/ensure-system-packages.sh

# One stamp per install flavour; pyproject.toml changes reinstall.
$(VENV)/.installed-runtime: pyproject.toml | sysdeps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | sysdeps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-runtime

demo: $(VENV)/.installed-runtime
	@scripts/demo.sh $(BIN)/iplosctl

broker:
	@scripts/test-broker.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check --quiet .

test: $(VENV)/.installed-dev broker lint
	PYTHON_KEYRING_BACKEND=keyring.backends.null.Keyring $(BIN)/python -m pytest -q

# Prints figures and asserts nothing (README "Performance"); about five minutes.
bench: $(VENV)/.installed-dev broker
	@PYTHON=$(PYTHON) scripts/ensure-system-packages.sh --bench
	$(BIN)/python benchmarks/plan_scale.py --recipients 10000
	$(BIN)/python benchmarks/plan_scale.py --recipients 100000
	$(BIN)/python benchmarks/apply_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
