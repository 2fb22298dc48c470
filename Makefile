# Two commands for a newcomer: `make demo` and `make test`.
# Both create .venv (Python 3.11 preferred) and install the package on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
DEMO_DIR ?= runs/demo
DATA_DIR ?= $(HOME)/tensorflow_datasets
PYTEST_ARGS ?=

.PHONY: venv test test-fast demo lint clean-demo

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip setuptools wheel
	$(VPY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Tests run in 2 worker processes (pytest-xdist); each spawns its own CPU devices.
test: $(STAMP)
	$(VPY) -m pytest -q -n 2 $(PYTEST_ARGS) tests

# The edit-test loop: everything not marked slow.
test-fast: $(STAMP)
	$(VPY) -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS) tests

lint: $(STAMP)
	$(VPY) -m ruff check vtfpar_jax input_pipeline configs tests

demo: $(STAMP)
	$(VPY) -m vtfpar_jax.demo --workdir $(DEMO_DIR) --data_dir $(DATA_DIR)

clean-demo:
	rm -rf $(DEMO_DIR)
