#!/usr/bin/env bash
# Builds keras-pbt's wheel, installs it into a fresh venv outside the
# repository, runs the digits demo from outside the repository, and checks
# that TensorBoard lists the lineage plugin and serves its front end.
#
#   make wheel-check            # or: bash benchmarks/wheel_check.sh
#
# Not a unit test (a few minutes). No network: the wheel is built without
# build isolation, by PYTHON's own setuptools (set WHEEL_CHECK_ISOLATION=1 to
# let pip fetch the [build-system] requirements from the package index), and
# the fresh venv reaches the dependencies (TensorFlow, Keras, keras-tuner,
# TensorBoard, scikit-learn) through a path file pointing at PYTHON's
# site-packages, after its own. keras-pbt itself comes from the wheel only:
# the script fails if it is imported from anywhere else.
#
# Environment: PYTHON (default .venv/bin/python, else python3) must have the
# dependencies; EPOCHS (default 3) and SIZE (default 4) size the demo;
# KEEP=1 keeps the temporary directory.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
EPOCHS="${EPOCHS:-3}"
SIZE="${SIZE:-4}"
TMP="$(mktemp -d /tmp/keras-pbt-wheel-check.XXXXXX)"
TB_PID=""
cleanup() {
    if [ -n "$TB_PID" ]; then kill "$TB_PID" 2>/dev/null || true; wait "$TB_PID" 2>/dev/null || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
step() { echo "== $*"; }

step "build the wheel ($PYTHON)"
ISOLATION="--no-build-isolation"
[ "${WHEEL_CHECK_ISOLATION:-0}" = 1 ] && ISOLATION=""
# A copy of the tracked files, so the build leaves nothing in the repository.
mkdir "$TMP/src"
git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | (cd "$REPO" && xargs -0 cp --parents -t "$TMP/src" 2>/dev/null || true)
"$PYTHON" -m pip wheel -q --no-deps $ISOLATION -w "$TMP/dist" "$TMP/src"
WHEEL="$(ls "$TMP"/dist/keras_pbt-*.whl)"
echo "$WHEEL"
"$PYTHON" - "$WHEEL" <<'PY'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["keras_pbt/__init__.py", "keras_pbt/population/population.py", "keras_pbt_tensorboard/plugin.py",
        "keras_pbt_tensorboard/static/index.js"]
missing = [n for n in need if n not in names]
assert not missing, f"the wheel lacks {missing}"
assert any(n.endswith(".dist-info/entry_points.txt") for n in names), "no entry points"
assert any("LICENSE" in n for n in names), "the wheel carries no LICENSE"
assert not any(n.startswith(("tests/", "examples/", "benchmarks/")) for n in names), "test files in the wheel"
print(f"the wheel holds {len(names)} files")
PY

step "fresh venv in $TMP/venv"
BASE="$("$PYTHON" -c 'import sys; print(sys.base_prefix)')/bin/python3"
"$BASE" -m venv "$TMP/venv"
VPY="$TMP/venv/bin/python"
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
DEPS="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$DEPS" > "$SITE/zz_keras_pbt_deps.pth"
# --no-index: the dependencies must already be satisfied (pip checks them).
"$VPY" -m pip install -q --no-index "$WHEEL"

step "run examples/digits.py from outside the repository"
mkdir "$TMP/work"
cp "$REPO/examples/digits.py" "$TMP/work/"
cd "$TMP/work"
"$VPY" - "$TMP/venv" <<'PY'
import os, sys
import keras_pbt, keras_pbt_tensorboard
for module in (keras_pbt, keras_pbt_tensorboard):
    assert module.__file__.startswith(sys.argv[1]), f"{module.__name__} imported from {module.__file__}"
print("keras_pbt from", os.path.dirname(keras_pbt.__file__))
PY
"$VPY" digits.py --epochs "$EPOCHS" --size "$SIZE" --logdir runs/digits --verbose 2 | tail -n 15

step "TensorBoard lists the plugin"
PORT="$("$VPY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$VPY" -m tensorboard.main --logdir runs/digits --host 127.0.0.1 --port "$PORT" \
    > "$TMP/tensorboard.log" 2>&1 &
TB_PID=$!
"$VPY" - "$PORT" <<'PY'
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
deadline = time.monotonic() + 120
while True:
    try:
        listing = json.load(urllib.request.urlopen(base + "/data/plugins_listing", timeout=5))
        break
    except OSError:
        if time.monotonic() > deadline:
            raise SystemExit("TensorBoard did not answer within 120 s")
        time.sleep(0.5)
assert "pbt_lineage" in listing, f"pbt_lineage not listed: {sorted(listing)}"
# The tab is enabled once the data provider has read the runs' lineage.
deadline = time.monotonic() + 60
while not listing["pbt_lineage"].get("enabled") and time.monotonic() < deadline:
    time.sleep(1)
    listing = json.load(urllib.request.urlopen(base + "/data/plugins_listing", timeout=5))
assert listing["pbt_lineage"].get("enabled"), f"pbt_lineage not enabled: {listing['pbt_lineage']}"
js = urllib.request.urlopen(base + "/data/plugin/pbt_lineage/index.js", timeout=5)
assert js.status == 200 and b"export" in js.read(), "index.js not served"
print("plugins_listing:", sorted(listing), "; pbt_lineage enabled, index.js served")
PY
echo "wheel check passed"
