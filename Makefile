# Two entry points: `make demo` and `make test`. Both create .venv if absent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test docs bench gpu-check gpu-wheels venv clean wheel-check

# TensorFlow (an extra: `pip install keras-pbt` installs none), the tests,
# the browser test's driver and the examples' data.
$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[tensorflow,test,browser,examples]"
	touch $(STAMP)

# A second virtualenv WITHOUT TensorFlow, for Keras' JAX and PyTorch
# backends: JAX's CPU wheel and PyTorch's CPU build (torch==2.13.0 is the
# CPU wheel these machines keep on disk; a looser pin would download a CUDA
# build). Installing it fails if anything pulled TensorFlow in.
NOTF_VENV  := .venv-notf
NOTF_PY    := $(NOTF_VENV)/bin/python
NOTF_STAMP := $(NOTF_VENV)/.installed
$(NOTF_STAMP): setup.py
	test -x $(NOTF_PY) || $(PYTHON) -m venv $(NOTF_VENV)
	$(NOTF_PY) -m pip install -q --upgrade pip
	$(NOTF_PY) -m pip install -q -e ".[test,examples,backends]"
	$(NOTF_PY) -c "import importlib.util as u, sys; sys.exit('TensorFlow was installed' if u.find_spec('tensorflow') else 0)"
	touch $(NOTF_STAMP)

venv: $(STAMP)

# KERAS_BACKEND=jax make demo (or torch) runs in the TensorFlow-free venv.
ifneq ($(filter jax torch,$(KERAS_BACKEND)),)
demo: $(NOTF_STAMP)
	$(NOTF_PY) examples/digits.py
else
demo: $(STAMP)
	$(PY) examples/digits.py
endif

# The docs site, the whole suite on TensorFlow and, at the same time, the
# TensorFlow-free pass: in the venv without TensorFlow, the modules marked
# `all_backends` on JAX and on PyTorch, and the demo on JAX with TensorBoard
# serving its lineage tab (tests/conftest.py, tests/other_backends.sh,
# tests/notf_demo.sh). Side by side because neither keeps both cores busy
# (barriers, timeouts, subprocess start-ups): run together from a clean clone
# they used about one core on average, 10.5 minutes in all on 2 cores
# (benchmarks/RESULTS.md). The TensorFlow-free pass prints its logs at the end.
test: $(STAMP) $(NOTF_STAMP) docs
	# Debian's chromium for the browser test of the TensorBoard tab (no browser download).
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium)
	@log=$$(mktemp); \
	PY=$(NOTF_PY) bash tests/other_backends.sh >"$$log" 2>&1 & notf=$$!; \
	$(PY) -m pytest -q --durations=20 tests; tf=$$?; \
	wait $$notf; other=$$?; cat "$$log"; rm -f "$$log"; \
	echo "TensorFlow suite: exit $$tf; TensorFlow-free pass: exit $$other"; \
	test $$tf -eq 0 && test $$other -eq 0

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
# KERAS_BACKEND=jax runs it on JAX, without TensorFlow (.venv-notf). On a
# GPU machine that has JAX and CUDA but neither TensorFlow nor a network:
#   make gpu-wheels                                     # here: wheelhouse/, about 37 MiB
#   KERAS_BACKEND=jax make gpu-check GPU_PYTHON=python3 # there: the one command
# installs keras-pbt and the small wheels it lacks (Keras, keras-tuner,
# TensorBoard and theirs; JAX brings NumPy) from wheelhouse/ into GPU_PYTHON
# and runs the check with it.
GPU_CHECK_OUT ?=
GPU_CHECK_LOG ?=
GPU_PYTHON ?=
GPU_CHECK_ARGS = $(if $(GPU_CHECK_OUT),--out $(GPU_CHECK_OUT)) $(if $(GPU_CHECK_LOG),--log $(GPU_CHECK_LOG))
ifneq ($(GPU_PYTHON),)
gpu-check:
	$(GPU_PYTHON) -m pip install -q --no-index --find-links wheelhouse -e .
	$(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)
else ifneq ($(filter jax,$(KERAS_BACKEND)),)
gpu-check: $(NOTF_STAMP)
	$(NOTF_PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)
else
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)
endif

# The wheels a JAX + CUDA machine lacks to run keras-pbt (for Python
# GPU_PYTHON_VERSION, Linux x86-64), without their dependencies on NumPy
# and ml_dtypes, which JAX has.
GPU_PYTHON_VERSION ?= 3.11
GPU_WHEELS = keras keras-tuner tensorboard six namex kt-legacy absl-py rich markdown-it-py mdurl \
	pygments h5py optree packaging requests idna urllib3 certifi charset-normalizer grpcio \
	markdown pillow protobuf tensorboard-data-server werkzeug markupsafe setuptools wheel typing-extensions
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) \
		--platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d wheelhouse $(GPU_WHEELS)
	du -sh wheelhouse

# Builds the wheel, installs it into a fresh venv outside the repository,
# runs the demo from there and checks that TensorBoard serves the lineage
# tab (a few minutes; see the script's header).
wheel-check: $(STAMP)
	PYTHON=$(PY) bash benchmarks/wheel_check.sh

clean:
	rm -rf $(VENV) $(NOTF_VENV) runs *.egg-info
