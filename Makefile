# Set-up and entry points. Every target creates what it needs; a second run with nothing to do
# finishes in seconds (stamp files under .venv/ record what is installed).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
TESTS ?= tests
PYTEST_ARGS ?=

.PHONY: setup lint test demo lock clean-venv mutation

setup: $(VENV)/.stamp-project

$(VENV)/.stamp-venv:
	$(PYTHON) -m venv $(VENV)
	touch $@

# PyTorch first (CUDA build from PyPI; it runs on the CPU too), then the pinned dependencies
# (runtime: requirements/base.txt; tests only: requirements/test.txt).
$(VENV)/.stamp-deps: $(VENV)/.stamp-venv $(CONSTRAINTS) requirements/base.txt requirements/test.txt
	$(PIP) install -q -c $(CONSTRAINTS) torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -c $(CONSTRAINTS) -r requirements/base.txt -r requirements/test.txt
	touch $@

# Detectron2 v0.6 from PyPI, patched at install time; an importable detectron2 is left alone.
$(VENV)/.stamp-d2: $(VENV)/.stamp-deps tools/install_detectron2.py
	$(PY) tools/install_detectron2.py
	touch $@

# The project itself, editable, with its test extras.
$(VENV)/.stamp-project: $(VENV)/.stamp-d2 setup.py
	$(PIP) install -q --no-build-isolation --no-deps -e .
	touch $@

# The linter and formatter (configuration in ruff.toml); `make test` runs them before the tests.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Developer tools (mutmut), pinned like the rest.
$(VENV)/.stamp-dev: $(VENV)/.stamp-deps requirements/dev.txt
	$(PIP) install -q -c $(CONSTRAINTS) -r requirements/dev.txt
	touch $@

test: lint $(VENV)/.stamp-dev
	$(PY) -m pytest $(TESTS) $(PYTEST_ARGS)

# Mutation testing of the core modules (slow, not part of `make test`/CI; see docs/testing.md):
#   make mutation                                          every core module
#   make mutation MODULE=mask2former/modeling/matcher.py   one module
#   make mutation MODULE=--report                          scores from the last runs
MODULE ?=
mutation: setup $(VENV)/.stamp-dev
	$(PY) tools/mutation.py $(MODULE)

demo: setup
	$(PY) tools/run_demo.py

# Re-resolve the pinned versions (needs network); commit the result.
lock: $(VENV)/.stamp-venv
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1 -r requirements/base.txt -r requirements/test.txt
	{ head -n 3 $(CONSTRAINTS); $(PIP) freeze --exclude-editable | grep -v '^pb1-detectron2'; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean-venv:
	rm -rf $(VENV)
