# Two commands for a newcomer: `make demo` and `make test`.
# Both create .venv (Python 3.11 preferred) and install the package on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
DEMO_DIR ?= runs/demo
DATA_DIR ?= $(HOME)/tensorflow_datasets
PYTEST_ARGS ?=

# Deviceless GPU/TPU compiles (vtfpar_jax/tools/aot.py) need jax[cuda13] and jax[tpu], several
# GB and Python >= 3.12: their own venv, never the test one.
AOT_VENV := .venv-aot
# The first interpreter >= 3.12 that runs: on PATH, else one pyenv has installed but not
# selected (where its python3.12 shim only says "command not found").
AOT_PYTHON ?= $(shell for p in python3.13 python3.12 \
	$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python 2>/dev/null | sort -rV); \
	do $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
	&& command -v $$p && break; done)
AOT_STAMP := $(AOT_VENV)/.installed-aot
AOT_TARGET ?= h200
AOT_ARGS ?= --batch 64 --dtype bfloat16

.PHONY: venv test test-fast demo lint clean-demo aot-venv aot

$(STAMP): pyproject.toml
	@test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip setuptools wheel
	@# A venv made before the package moved from tensorflow-cpu to tensorflow: both write the
	@# same tensorflow/ folder, so the old one goes before the new one comes.
	@if $(VPY) -m pip show -q tensorflow-cpu 2>/dev/null; then \
		$(VPY) -m pip uninstall --quiet -y tensorflow-cpu tensorflow; fi
	$(VPY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Tests run in 2 worker processes (pytest-xdist); each spawns its own CPU devices. A worker
# that runs out of tests takes some of the other's (worksteal), so no long test is left
# to run alone at the end. The 25 slowest tests are listed: the suite must stay under
# 35 minutes on two cores, and this says where to look when it grows.
test: $(STAMP)
	$(VPY) -m pytest -q -n 2 --dist worksteal --durations=25 $(PYTEST_ARGS) tests

# The edit-test loop: everything not marked slow.
test-fast: $(STAMP)
	$(VPY) -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS) tests

lint: $(STAMP)
	$(VPY) -m ruff check vtfpar_jax input_pipeline configs tests benchmarks colab/runtime
	$(VENV)/bin/lint-imports --no-cache --no-logo

demo: $(STAMP)
	$(VENV)/bin/vtfpar demo --workdir $(DEMO_DIR) --data_dir $(DATA_DIR)

clean-demo:
	rm -rf $(DEMO_DIR)

$(AOT_STAMP): pyproject.toml
	@test -n "$(AOT_PYTHON)" || { echo "aot-venv needs python3.12 or newer (jax 0.11): none found on PATH or in pyenv; set AOT_PYTHON=/path/to/python3.12"; exit 1; }
	@test -x $(AOT_VENV)/bin/python || $(AOT_PYTHON) -m venv $(AOT_VENV)
	$(AOT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AOT_VENV)/bin/python -m pip install --quiet 'jax[cuda13,tpu]>=0.11.2,<0.12' \
		'flax>=0.12.8,<0.13' 'optax>=0.2.8,<0.3' 'numpy>=1.26,<3' pytest
	$(AOT_VENV)/bin/python -m pip install --quiet --no-deps -e .
	@touch $(AOT_STAMP)

aot-venv: $(AOT_STAMP)

# e.g. make aot AOT_TARGET=tpu-v5e:4x4 AOT_ARGS="--batch 64 --dtype bfloat16"
aot: $(AOT_STAMP)
	JAX_PLATFORMS=cpu $(AOT_VENV)/bin/vtfpar bench --aot $(AOT_TARGET) $(AOT_ARGS)
