"""One command that proves the population on a GPU machine (`make gpu-check`).

Phases, each with a timeout (a hang is reported as HANG, a dead process as
CRASH), then one summary table; the exit status is non-zero if a phase
failed, hung, crashed or did not run.

* `devices`: one physical GPU is split into logical GPUs with memory limits
  (several GPUs are used as they are); an op runs on each device.
* `population_reduce`: 4 Mirrored members, `Devices(per_member=2)`, trained
  concurrently with `ReductionToOneDevice` (the library's choice); step
  rate of each member.
* `population_nccl`: the same with `NcclAllReduce` per member: does it crash
  or hang? A measurement of the alternative: it never fails the check.
* `population_shared`: 4 one-device members all on the first device (several
  members sharing one GPU).
* `next_step`: mixed precision (`mixed_float16`, `LossScaleOptimizer`) and
  `jit_compile=True`: after a learning-rate or momentum change the next
  weight equals the hand-computed update (`gpu_check_phases.sgd_reference`).
* `exploit_copy`: capture + restore on the device (and through the host)
  against the device's own copy bandwidth, at about 10M, 100M and 1B
  parameters. Goal: >= 50% of it at 100M.
* `memory`: peak host (and device) memory of 8 members with snapshots, as a
  multiple of the members' own state; published snapshots alive per member.
* `overhead`: wall time with / without PBT, same members and devices, small
  ResNet on synthetic images. Goal: <= 1.05x.

`KERAS_BACKEND=jax` runs the check on JAX, where TensorFlow need not be
installed: members have one device each and share the GPU(s); the two
MirroredStrategy phases are skipped (TensorFlow only).

Without a GPU it says so and runs every phase at tiny size on 4 logical CPU
devices (NCCL is skipped), all in one process, each phase in a thread with a
timeout; with a GPU each phase runs in its own process. The phases
themselves are in benchmarks/gpu_check_phases.py.

    python benchmarks/gpu_check.py [--phases a,b] [--budget 470] [--out result.json] [--log FILE]
"""

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "@@gpu_check "
# phase -> (timeout on GPU, timeout on CPU, logical GPUs wanted, fraction of GPU memory)
PHASES = {
    "devices": (60, 60, 4, 0.9),
    "memory": (90, 90, 4, 0.9),  # early: in the one CPU process, little else has run yet
    "population_reduce": (100, 90, 4, 0.9),
    "population_nccl": (60, 30, 4, 0.9),
    "population_shared": (100, 90, 4, 0.9),
    "next_step": (90, 90, 1, 0.5),
    "exploit_copy": (150, 60, 2, 0.9),
    "overhead": (150, 120, 4, 0.9),
}
MEASUREMENT_ONLY = {"population_nccl"}
# KERAS_BACKEND=jax runs the check on JAX, with no TensorFlow needed.
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
JAX_TIMEOUT_SCALE = 2.0  # its outcome is reported, never a failure
STARTUP = 180  # seconds a child may take to import TensorFlow and set up devices (a busy CI machine)


# ---------------------------------------------------------------- child side

def configure(mode, n_logical, gpu_mem_mb):
    """Devices for one child: GPUs (on TensorFlow one is split into logical
    GPUs; on JAX members share it) or 4 CPU devices."""
    if BACKEND == "jax":
        import jax

        from keras_pbt.population import devices

        if mode == "cpu":
            return devices.configure_cpu_devices(4)
        if jax.default_backend() != "gpu":
            raise RuntimeError(f"a GPU is present but JAX {jax.__version__} sees none "
                               f"(devices: {jax.devices()}): install a CUDA build of jaxlib")
        return [f"{d.platform}:{d.id}" for d in jax.devices("gpu")]
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if mode == "gpu" and not gpus:
        info = dict(tf.sysconfig.get_build_info())
        raise RuntimeError(f"a GPU is present but TensorFlow {tf.__version__} sees none (built for "
                           f"CUDA {info.get('cuda_version')}, cuDNN {info.get('cudnn_version')})")
    if gpus:
        if len(gpus) == 1 and n_logical > 1:
            limit = int(gpu_mem_mb / n_logical)
            tf.config.set_logical_device_configuration(
                gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=limit)] * n_logical)
        else:
            for g in gpus:
                tf.config.experimental.set_memory_growth(g, True)
        return [d.name for d in tf.config.list_logical_devices("GPU")]
    from keras_pbt.population import devices

    return devices.configure_cpu_devices(4)


def child(args):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import gpu_check_phases

    phases = args.phases.split(",")
    try:
        devices = configure(args.mode, max(PHASES[p][2] for p in phases), args.gpu_mem_mb)
    except Exception as e:  # noqa: BLE001 - reported per phase
        for p in phases:
            emit({"phase": p, "status": "FAIL", "seconds": 0.0, "detail": f"{type(e).__name__}: {e}"})
        return
    ctx = {"mode": args.mode, "devices": devices}
    for p in phases:
        box = {}

        def run(p=p, box=box):
            try:
                box["out"] = getattr(gpu_check_phases, f"phase_{p}")(ctx) or {}
            except BaseException as e:  # noqa: BLE001 - reported in the table
                box["error"] = f"{type(e).__name__}: {str(e)[:400]}"
                traceback.print_exc()

        t = time.perf_counter()
        th = threading.Thread(target=run, daemon=True, name=f"phase-{p}")
        th.start()
        th.join(PHASES[p][0 if args.mode == "gpu" else 1] * args.timeout_scale)
        seconds = time.perf_counter() - t
        if th.is_alive():
            emit({"phase": p, "status": "HANG", "seconds": seconds, "detail": "timed out"})
            os._exit(3)  # a hung thread cannot be stopped: the parent goes on in a new process
        out = box.get("out", {})
        status = out.get("status") or ("FAIL" if "error" in box or not out.get("ok", True) else "PASS")
        emit({"phase": p, "status": status, "seconds": seconds, "goal": out.get("goal", "n/a"),
              "detail": box.get("error") or out.get("detail", ""), "data": out.get("data", {})})


def emit(record):
    print(MARK + json.dumps(record, default=str), flush=True)


# --------------------------------------------------------------- parent side

def gpu_info():
    """`(total MiB, name)` of GPU 0 from nvidia-smi, or None without one."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    name, _, mem = out[0].rpartition(",")
    try:
        return float(mem), name.strip()
    except ValueError:  # "[N/A]": assume 16 GB, the smallest GPU worth checking on
        return 16000.0, name.strip()


def show(record):
    print(f"{record['phase']}: {record['status']} ({record['seconds']:.1f} s) {record.get('detail', '')}",
          flush=True)


def run_group(group, mode, mem_mb, timeout, scale, log=None):
    """Runs `group` in one child process; each phase's record is shown as it comes."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--mode", mode, "--phases",
           ",".join(group), "--gpu-mem-mb", str(mem_mb), "--timeout-scale", str(scale)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    records = []
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT)

        def read():
            for line in proc.stdout:
                if line.startswith(MARK):
                    records.append(json.loads(line[len(MARK):]))
                    show(records[-1])

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            rc, hung = proc.wait(timeout), False
        except subprocess.TimeoutExpired:
            proc.kill()
            rc, hung = proc.wait(), True
        reader.join(10)
        err.seek(0)
        text = err.read()
        tail = " | ".join(text.strip().splitlines()[-3:])[-400:]
    if log:
        with open(log, "a") as f:
            f.write(f"==== phases {','.join(group)}: exit {rc}{' (killed)' if hung else ''}\n{text}\n")
    missing = [p for p in group if p not in {r["phase"] for r in records}]
    if missing:  # the process died or hung inside the first of them
        records.append({"phase": missing[0], "status": "HANG" if hung else "CRASH",
                        "seconds": timeout if hung else 0,
                        "detail": f"{f'killed after {timeout:.0f} s' if hung else f'exit {rc}'}: {tail}"})
        show(records[-1])
    return records


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole check; phases past it are NOT RUN. "
                             "Defaults to 470 with a GPU (8 minutes in all), 1200 without")
    parser.add_argument("--out", help="also write the results to this JSON file")
    parser.add_argument("--log", help="append every child process's stderr (TensorFlow's log) to this file")
    parser.add_argument("--timeout-scale", type=float, default=1.0,
                        help="multiplies every phase's timeout (tests/test_gpu_check.py: a hang)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--gpu-mem-mb", type=float, default=16000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = [p for p in args.phases.split(",") if p not in PHASES]
    if unknown:
        parser.error(f"unknown phases {unknown}; known: {list(PHASES)}. Received: --phases={args.phases}")
    if args.child:
        return child(args)
    if BACKEND == "jax":
        # JAX compiles every member's steps (Keras jits per model): the
        # phases take longer on a CPU than TensorFlow's traces.
        args.timeout_scale *= JAX_TIMEOUT_SCALE
    phases = args.phases.split(",")
    gpu = gpu_info()
    mode = "gpu" if gpu else "cpu"
    budget = args.budget if args.budget is not None else 470 if gpu else 1200
    start = time.monotonic()
    print(f"$ python {' '.join(sys.argv)}\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; "
          f"{platform.node()}, {os.cpu_count()} cores; "
          + (f"GPU: {gpu[1]}, {gpu[0]:.0f} MiB" if gpu else
             "no GPU found (nvidia-smi): every phase runs at tiny size on 4 logical CPU devices"), flush=True)
    results = {}
    print(f"Keras backend: {BACKEND}", flush=True)
    if BACKEND not in ("tensorflow", "jax"):
        parser.error(f"the GPU check runs on Keras' TensorFlow or JAX backend. "
                     f"Received: KERAS_BACKEND={BACKEND}")
    if importlib.util.find_spec(BACKEND) is None:
        for p in phases:
            results[p] = {"phase": p, "status": "NOT RUN", "seconds": 0,
                          "detail": f"{BACKEND} is not installed for {sys.executable}"}
        phases = []
    remaining = list(phases)
    while remaining:
        left = budget - (time.monotonic() - start)
        group = remaining if mode == "cpu" else remaining[:1]
        if left < 15:
            break
        limit = min(left, sum(PHASES[p][0 if gpu else 1] for p in group) * args.timeout_scale + STARTUP)
        mem_mb = gpu[0] * PHASES[group[0]][3] if gpu else 0
        for record in run_group(group, mode, mem_mb, limit, args.timeout_scale, args.log):
            results[record["phase"]] = record
        if gpu and results.get("devices", {}).get("status") not in (None, "PASS"):
            break  # TensorFlow cannot use the GPU: nothing else can run
        remaining = [p for p in remaining if p not in results]
    for p in phases:
        results.setdefault(p, {"phase": p, "status": "NOT RUN", "seconds": 0,
                               "detail": "the budget ran out or the devices phase failed"})
    print(f"\nphase | status | seconds | goal | detail  (total {time.monotonic() - start:.0f} s)")
    for p in args.phases.split(","):
        r = results[p]
        print(f"{p} | {r['status']} | {r['seconds']:.1f} | {r.get('goal', 'n/a')} | {r.get('detail', '')}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": sys.argv, "mode": mode, "gpu": gpu, "results": results}, f, indent=1)
    bad = [p for p, r in results.items() if p not in MEASUREMENT_ONLY and r["status"] not in ("PASS", "SKIP")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
