# Two entry points: `make demo` and `make test`. Both create .venv if absent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test docs bench gpu-check venv clean wheel-check

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,examples]"
	touch $(STAMP)

# JAX's CPU wheel and PyTorch's CPU build (torch==2.13.0 is the CPU wheel
# these machines keep on disk; a looser pin would download a CUDA build).
BACKENDS_STAMP := $(VENV)/.backends-installed
$(BACKENDS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[backends]"
	touch $(BACKENDS_STAMP)

venv: $(STAMP)

# KERAS_BACKEND=jax make demo (or torch) installs that backend first.
demo: $(STAMP) $(if $(filter jax torch,$(KERAS_BACKEND)),$(BACKENDS_STAMP))
	$(PY) examples/digits.py

# The whole suite on TensorFlow, then the modules marked `all_backends`
# (callback, hyperparameters, snapshots, population, backends) on JAX and
# on PyTorch, both at once (tests/conftest.py, tests/other_backends.sh).
test: $(STAMP) $(BACKENDS_STAMP) docs
	# Debian's chromium for the browser test of the TensorBoard tab (no browser download).
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)
	$(PY) -m pytest -q --durations=20 tests
	PY=$(PY) bash tests/other_backends.sh

# The reference site (MkDocs, API pages from the docstrings) into build/site;
# any warning (a broken link, a docstring argument the signature lacks) fails.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

# Every benchmark at its default size, one after another (about 2.5 hours on
# 2 cores); results go to benchmarks/RESULTS.md by hand, with the command.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/step_interval.py
	$(PY) benchmarks/exploit_cost.py
	$(PY) benchmarks/store_scaling.py
	$(PY) benchmarks/concurrency.py
	$(PY) benchmarks/search_quality.py
	$(PY) benchmarks/ray_pbt.py

# The GPU check (benchmarks/gpu_check.py): every phase with a timeout, one
# table, non-zero exit on a failure; about 8 minutes on one H200. Without a
# GPU it runs the same phases at tiny size on logical CPU devices.
# GPU_CHECK_OUT=path also writes the results as JSON, GPU_CHECK_LOG=path
# keeps TensorFlow's log of every phase.
GPU_CHECK_OUT ?=
GPU_CHECK_LOG ?=
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py $(if $(GPU_CHECK_OUT),--out $(GPU_CHECK_OUT)) $(if $(GPU_CHECK_LOG),--log $(GPU_CHECK_LOG))

# Builds the wheel, installs it into a fresh venv outside the repository,
# runs the demo from there and checks that TensorBoard serves the lineage
# tab (a few minutes; see the script's header).
wheel-check: $(STAMP)
	PYTHON=$(PY) bash benchmarks/wheel_check.sh

clean:
	rm -rf $(VENV) runs *.egg-info
