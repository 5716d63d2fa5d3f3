#!/usr/bin/env bash
# The TensorFlow-free pass of `make test`, in a virtualenv without
# TensorFlow (.venv-notf: PY=.venv-notf/bin/python):
#   1. the modules marked `all_backends` under JAX and, at the same time,
#      under PyTorch (two processes; each spends much of its time compiling
#      or waiting at barriers);
#   2. after the PyTorch pass, still beside the JAX one, the demo
#      (examples/digits.py) under JAX, then TensorBoard on its logs with the
#      lineage tab's routes answering (tests/notf_demo.sh).
# Prints the logs and fails if any part failed.
set -u
PY=${PY:-.venv-notf/bin/python}
if "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is None)"; then
  echo "$PY has TensorFlow installed: this pass proves keras-pbt runs without it." >&2
  exit 1
fi
logs=$(mktemp -d)
# The JAX pass takes longest (it compiles every member's steps): the PyTorch
# pass and then the demo run beside it.
KERAS_BACKEND=jax "$PY" -m pytest -q -p no:cacheprovider --disable-warnings tests >"$logs/jax.log" 2>&1 &
jax=$!
KERAS_BACKEND=torch "$PY" -m pytest -q -p no:cacheprovider --disable-warnings tests >"$logs/torch.log" 2>&1
torch_rc=$?
PY="$PY" bash tests/notf_demo.sh >"$logs/demo.log" 2>&1; demo_rc=$?
wait "$jax"; jax_rc=$?
for name in jax torch demo; do
  echo "=== $name, without TensorFlow"
  grep -v -E "^(WARNING: All log messages|I0000|E0000|W0000)" "$logs/$name.log" | tail -n 60
done
rm -rf "$logs"
[ "$jax_rc" -eq 0 ] && [ "$torch_rc" -eq 0 ] && [ "$demo_rc" -eq 0 ]
