# The README's commands. `make demo` runs the main job on embedded defaults;
# `make test` sets up everything (venv, system packages, broker) and runs the checks.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo demo-edi test lint bench broker sysdeps citools wheel clean

sysdeps:
	@PYTHON=$(PYTHON) scripts/ensure-system-packages.sh

# One stamp per install flavour; pyproject.toml changes reinstall. `pip install -e .` also
# compiles the per-record path with mypyc in place (setup.py), so a change to one of those
# sources reinstalls too: otherwise Python would keep importing the stale .so beside it.
COMPILED_SOURCES := setup.py iplosctl/compiled.py $(shell sed -n 's/^ *("[a-z_.]*", "\([^"]*\.py\)"),$$/\1/p' iplosctl/compiled.py)

$(VENV)/.installed-runtime: pyproject.toml $(COMPILED_SOURCES) | sysdeps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(COMPILED_SOURCES) | sysdeps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@ $(VENV)/.installed-runtime

demo: $(VENV)/.installed-runtime
	@scripts/demo.sh $(BIN)/iplosctl

# The same rehearsal over the EDI channel: S/MIME over SMTP, receipts over IMAP, with
# aiosmtpd and dovecot on loopback (README "Choosing the channel").
demo-edi: $(VENV)/.installed-dev
	@$(BIN)/python scripts/demo-edi.py $(BIN)/iplosctl

broker:
	@scripts/test-broker.sh

# gitlab-ci-local and actionlint, pinned, under .tools/: the CI-template tests run them.
citools:
	@scripts/ci-tools.sh

# A wheel to keep in the municipality's repository; the CI templates install it
# (no package index has iplosctl). Pure Python, so it stays py3-none-any for any runner.
wheel: $(VENV)/.installed-runtime
	IPLOSCTL_PURE_PYTHON=1 $(BIN)/pip wheel --quiet --no-deps --wheel-dir dist .
	@ls dist/*.whl

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check --quiet .
	$(BIN)/mypy

# IPLOSCTL_EXPECT_COMPILED: tests/test_compiled.py fails unless the install compiled
# (unset it with IPLOSCTL_PURE_PYTHON=1, which builds pure Python).
test: $(VENV)/.installed-dev broker citools lint
	PYTHON_KEYRING_BACKEND=keyring.backends.null.Keyring \
	IPLOSCTL_EXPECT_COMPILED=$(if $(filter 1,$(IPLOSCTL_PURE_PYTHON)),0,1) \
	$(BIN)/python -m pytest -q

# Prints figures and asserts nothing (README "Performance"); about ten minutes, and
# about six more the first time (the fleet's 356 exports are generated once, into /tmp).
bench: $(VENV)/.installed-dev broker
	$(BIN)/python benchmarks/plan_scale.py --recipients 10000
	$(BIN)/python benchmarks/plan_scale.py --recipients 100000
	$(BIN)/python benchmarks/apply_throughput.py
	$(BIN)/python benchmarks/fleet.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .mypy_cache build dist *.egg-info
	find iplosctl plugins -name '*.so' -delete
