#!/usr/bin/env bash
# Runs the modules marked `all_backends` under JAX and under PyTorch at the
# same time (two processes; each spends much of its time compiling or
# waiting at barriers), prints both logs, and fails if either failed.
# Called by `make test` after the TensorFlow suite: PY=.venv/bin/python.
set -u
PY=${PY:-.venv/bin/python}
logs=$(mktemp -d)
KERAS_BACKEND=jax "$PY" -m pytest -q -p no:cacheprovider --disable-warnings tests >"$logs/jax.log" 2>&1 &
jax=$!
KERAS_BACKEND=torch "$PY" -m pytest -q -p no:cacheprovider --disable-warnings tests >"$logs/torch.log" 2>&1 &
torch=$!
wait "$jax"; jax_rc=$?
wait "$torch"; torch_rc=$?
for name in jax torch; do
  echo "=== KERAS_BACKEND=$name"
  grep -v -E "^(WARNING: All log messages|I0000|E0000|W0000)" "$logs/$name.log" | tail -n 60
done
rm -rf "$logs"
[ "$jax_rc" -eq 0 ] && [ "$torch_rc" -eq 0 ]
