"""How often a process of the demo or of the population tests crashes.

Issue 21: the digits demo died with a segmentation fault in 1 of 48 runs
(TensorFlow 2.21, 8 members under their own `MirroredStrategy` on 4 logical
CPU devices), in graph construction while the members traced their steps at
once. `keras_pbt.runtime.trace_lock` makes them trace one at a time. This
script runs, each in a fresh `python -X faulthandler` process (so a crash
prints every thread's stack), one job after another until `--minutes` have
passed, alternating the arms so both see the same load:

* `demo`: `examples/digits.py` with the trace lock (the default);
* `demo-no-lock`: the same with `serial_tracing` switched off (as before the lock);
* `tests`: `pytest tests/test_population.py` (the population tests);
* `fits` / `fits-no-lock`: the demo's population (8 members, 4 logical CPU
  devices, 2 epochs) fitted `--fits` times in one process, a new population
  each time: more fit starts (where the crash was) per minute of a loaded
  machine than a process per fit, as TensorFlow is imported once.

A run counts as a crash when the process is killed by a signal or prints
`Fatal Python error`; its stderr is kept under `--keep`. Prints one line per
run and the counts per arm.

    nice -n 10 python benchmarks/segfault_rate.py --minutes 45 \
        --arms fits,fits-no-lock,demo,demo-no-lock,tests --demo-args "--epochs 2"
"""

import argparse
import collections
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The demo's main with the lock switched off, in its own process.
NO_LOCK = ("import sys; sys.path.insert(0, 'examples'); "
           "from keras_pbt.backend import tensorflow_backend; "
           "tensorflow_backend.serial_tracing = False; "
           "import digits; digits.main(sys.argv[1:])")


# Several populations of the demo fitted one after another in one process.
FITS = """
import sys
sys.path.insert(0, "examples")
from keras_pbt.backend import tensorflow_backend
tensorflow_backend.serial_tracing = {lock}
import keras
import digits
import keras_pbt
(x, y), (xv, yv) = digits.load_data(0)
for i in range({fits}):
    pop = keras_pbt.Population(digits.build, digits.SPACE, population_size=8, seed=i,
                               monitor="val_accuracy", devices=keras_pbt.Devices(num_cpu=4))
    pop.fit(x, y, validation_data=(xv, yv), epochs=2, batch_size=32, verbose=0)
    print("fit", i, "done", flush=True)
    del pop
    keras.backend.clear_session()
"""


def command(arm, demo_args, logdir, fits=8):
    python = [sys.executable, "-X", "faulthandler"]
    demo = shlex.split(demo_args) + ["--logdir", logdir, "--verbose", "0"]
    if arm == "demo":
        return python + ["examples/digits.py"] + demo
    if arm == "demo-no-lock":
        return python + ["-c", NO_LOCK] + demo
    if arm in ("fits", "fits-no-lock"):
        return python + ["-c", FITS.format(lock=arm == "fits", fits=fits)]
    if arm == "tests":
        return python + ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                         "tests/test_population.py"]
    raise ValueError(f"Unknown arm. Received: arm={arm!r}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=45)
    parser.add_argument("--arms", default="demo,demo-no-lock")
    parser.add_argument("--demo-args", default="--epochs 3")
    parser.add_argument("--fits", type=int, default=8)
    parser.add_argument("--keep", default=os.path.join(tempfile.gettempdir(), "pbt-crashes"))
    args = parser.parse_args()
    arms = args.arms.split(",")
    os.makedirs(args.keep, exist_ok=True)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    print(f"{time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} CPUs; arms {arms}; demo args {args.demo_args!r}", flush=True)
    runs, crashes, walls = collections.Counter(), collections.Counter(), collections.defaultdict(list)
    starts = collections.Counter()  # fit starts (a crashed fit counts as started)
    failures = collections.Counter()
    deadline = time.monotonic() + 60 * args.minutes
    i = 0
    while time.monotonic() < deadline:
        arm = arms[i % len(arms)]
        i += 1
        with tempfile.TemporaryDirectory(prefix="pbt-segv-") as logdir:
            start = time.monotonic()
            proc = subprocess.run(command(arm, args.demo_args, logdir, args.fits), cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            wall = time.monotonic() - start
        err = proc.stderr.decode(errors="replace")
        crashed = proc.returncode < 0 or "Fatal Python error" in err
        runs[arm] += 1
        walls[arm].append(wall)
        done = proc.stdout.decode(errors="replace").count(" done\n")
        starts[arm] += (done + (proc.returncode != 0)) if arm.startswith("fits") else 1
        what = "ok"
        if crashed:
            crashes[arm] += 1
            name = (signal.Signals(-proc.returncode).name if proc.returncode < 0
                    else f"exit {proc.returncode}")
            path = os.path.join(args.keep, f"{arm}-{runs[arm]}.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write(proc.stdout.decode(errors="replace") + "\n----\n" + err)
            what = f"CRASH ({name}), stderr in {path}"
        elif proc.returncode != 0:
            failures[arm] += 1
            path = os.path.join(args.keep, f"{arm}-{runs[arm]}-failed.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write(proc.stdout.decode(errors="replace") + "\n----\n" + err)
            what = f"failed (exit {proc.returncode}, no crash), output in {path}"
        print(f"{arm:>13} #{runs[arm]:3d}: {wall:6.1f} s, load {os.getloadavg()[0]:4.1f}: {what}",
              flush=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M')} load {os.getloadavg()[0]:.1f}")
    for arm in dict.fromkeys(arms):
        mean = sum(walls[arm]) / max(1, len(walls[arm]))
        print(f"{arm}: {crashes[arm]} crashes in {runs[arm]} runs ({starts[arm]} population "
              f"fits started; {failures[arm]} other failures), {mean:.0f} s a run")


if __name__ == "__main__":
    main()
