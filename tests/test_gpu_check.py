"""`make gpu-check` on a machine without a GPU: the smoke path of every phase.

benchmarks/gpu_check.py runs in a subprocess, as `make gpu-check` does. With
no GPU it must say so, run every phase at tiny size on logical CPU devices,
print one table row per phase with its status and exit 0; a phase that
outlives its timeout must be reported as HANG with a non-zero exit, not
leave the script stuck.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")
PHASES = ["devices", "memory", "population_reduce", "population_nccl", "population_shared",
          "next_step", "exploit_copy", "overhead"]
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")

pytestmark = pytest.mark.skipif(shutil.which("nvidia-smi") is not None,
                                reason="a GPU machine runs the GPU path, not the smoke path")


def _run(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def _table(stdout):
    rows = {}
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("phase | status |"))
    for line in lines[start + 1:]:
        cells = [c.strip() for c in line.split("|")]
        rows[cells[0]] = cells
    return rows


@pytest.mark.all_backends  # on JAX too: the GPU machine has JAX and no TensorFlow
def test_cpu_smoke_path_passes_every_phase(tmp_path):
    if BACKEND == "torch":
        pytest.skip("the GPU check runs on TensorFlow or JAX")
    out = tmp_path / "result.json"
    # JAX compiles every member's steps: its phase timeouts are twice
    # TensorFlow's (benchmarks/gpu_check.py), and so is the whole run's.
    proc = _run("--out", str(out), timeout=1200 if BACKEND == "jax" else 600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no GPU found" in proc.stdout
    rows = _table(proc.stdout)
    assert list(rows) == PHASES
    mirrored = ["population_reduce", "population_nccl"]  # TensorFlow's MirroredStrategy
    skipped = mirrored if BACKEND == "jax" else ["population_nccl"]
    for phase in PHASES:
        want = "SKIP" if phase in skipped else "PASS"
        assert rows[phase][1] == want, rows[phase]
    if BACKEND == "jax":
        assert "Keras backend: jax" in proc.stdout
        assert all(rows[p][4] == "TensorFlow only (MirroredStrategy): KERAS_BACKEND=jax"
                   for p in mirrored)
    else:
        assert rows["population_nccl"][4] == "no GPU: NCCL needs GPUs"
    result = json.loads(out.read_text())
    assert result["mode"] == "cpu" and result["gpu"] is None
    memory = result["results"]["memory"]["data"]
    # The store replaces a member's snapshot: at most one published snapshot
    # of a member alive at a time (a restoring loser may briefly hold one more).
    assert 1 <= memory["most_alive"] <= 2
    assert memory["state_bytes"] > 0 and memory["host_peak_bytes"] > 0
    for phase in ["population_shared"] + (["population_reduce"] if BACKEND != "jax" else []):
        rates = result["results"][phase]["data"]["rates"]
        assert sorted(rates) == ["0", "1", "2", "3"] and all(r > 0 for r in rates.values())


def test_a_phase_past_its_timeout_is_a_hang_not_a_stuck_script():
    # next_step trains six models for several seconds; with its timeout
    # scaled to 0.9 s it is still running when the timeout ends, exactly as a
    # hung phase would be.
    proc = _run("--phases", "next_step", "--timeout-scale", "0.01", timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _table(proc.stdout)
    assert list(rows) == ["next_step"]
    assert rows["next_step"][1] == "HANG", rows["next_step"]
    assert rows["next_step"][4] == "timed out"
