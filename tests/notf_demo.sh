#!/usr/bin/env bash
# The demo on JAX without TensorFlow, then TensorBoard (from the same
# virtualenv, so also without TensorFlow) on its log directory: the lineage
# tab must be listed and enabled, and its routes must answer with the
# run's lineage records. Called by tests/other_backends.sh.
#
#   PY=.venv-notf/bin/python bash tests/notf_demo.sh
#
# DEMO_ARGS sizes the demo. Default: 4 members, 6 epochs, the size CI can
# afford on 2 cores beside the PyTorch pass (the demo's own 8 members x 20
# epochs took 3.5 minutes under JAX on a loaded machine); DEMO_ARGS=" "
# runs the full demo.
set -euo pipefail
PY=${PY:-.venv-notf/bin/python}
DEMO_ARGS=${DEMO_ARGS:---size 4 --epochs 6}
TMP="$(mktemp -d /tmp/keras-pbt-notf-demo.XXXXXX)"
TB_PID=""
cleanup() {
    if [ -n "$TB_PID" ]; then kill "$TB_PID" 2>/dev/null || true; wait "$TB_PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

start=$(date +%s)
# shellcheck disable=SC2086
KERAS_BACKEND=jax "$PY" examples/digits.py --logdir "$TMP/runs/digits" --verbose 0 $DEMO_ARGS | tail -n 12
echo "demo on JAX: $(( $(date +%s) - start )) s"

PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$PY" -m tensorboard.main --logdir "$TMP/runs/digits" --host 127.0.0.1 --port "$PORT" \
    > "$TMP/tensorboard.log" 2>&1 &
TB_PID=$!
KERAS_BACKEND=jax "$PY" - "$PORT" "$TMP/runs/digits" <<'PY'
import importlib.util, json, sys, time, urllib.parse, urllib.request

import keras_pbt

assert importlib.util.find_spec("tensorflow") is None, "TensorFlow is installed here"
base = f"http://127.0.0.1:{sys.argv[1]}"
get = lambda path: json.load(urllib.request.urlopen(base + path, timeout=10))
deadline = time.monotonic() + 120
while True:
    try:
        listing = get("/data/plugins_listing")
        if listing.get("pbt_lineage", {}).get("enabled"):
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        raise SystemExit(f"the lineage tab is not enabled after 120 s: {locals().get('listing')}")
    time.sleep(1)
experiments = get("/data/plugin/pbt_lineage/experiments")["experiments"]
written = keras_pbt.read_lineage(sys.argv[2])
assert len(experiments) == 1, experiments
assert len(experiments[0]["runs"]) == len({str(r.member_id) for r in written}), experiments
answer = get("/data/plugin/pbt_lineage/lineage?experiment="
             + urllib.parse.quote(experiments[0]["name"]))
served = {(str(r["member"]), r["step"], r["action"]) for r in answer["records"]}
assert served == {(str(r.member_id), r.step, r.action) for r in written} and not answer["errors"]
assert answer["best"] is not None, answer
print(f"TensorBoard without TensorFlow: the lineage tab serves the {len(written)} records "
      f"({answer['num_exploits']} exploits) the JAX demo wrote")
PY
