"""PBT fit time per Keras backend, side by side: the demo and a small tabular population.

Each run is its own process (one backend per process, as users run it),
and the backends alternate run by run (the order rotates every repeat), so
a loaded machine slows each about alike. Reported per backend and task:
the medians of wall time (process start to end, imports included), PBT fit
time (`Population.elapsed`), and on JAX the compile time (JAX's own
monitoring events: tracing, lowering and XLA compilation, summed over the
members' threads) and the number of XLA compilations.

Tasks:
* `digits`: examples/digits.py as `make demo` runs it (8 members, 20
  epochs, 4 CPU devices, synchronous, logdir).
* `cancer`: 6 members on `load_breast_cancer` (standardised, 455 train /
  114 validation), Dense 16 + Dense 1, Adam, learning rate only, 20
  epochs, batch 32, judged every epoch on `val_loss`.

    python benchmarks/backend_speed.py --repeats 3 \
        --python tensorflow=.venv/bin/python --python jax=.venv-notf/bin/python \
        --python torch=.venv-notf/bin/python

A backend's interpreter defaults to this one (`sys.executable`).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

START = time.monotonic()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
# A run is `backend` or `backend:n`: n CPU devices for the members (the
# population's `Devices(num_cpu=...)`; the default is min(members, 4)).
TASKS = ("digits", "cancer")


def _jax_compile_listener(totals):
    import jax

    names = {"/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
             "/jax/core/compile/backend_compile_duration"}

    def listen(event, duration, **_):
        if event in names:
            totals["compile_s"] += duration
            if event.endswith("backend_compile_duration"):
                totals["compiles"] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)


def _cancer(logdir, cpu_devices):
    import keras
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    import keras_pbt

    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order].astype("float32"), y[order].astype("float32")
    x = (x - x.mean(0)) / x.std(0)
    split = int(0.8 * len(x))

    def build(hp):
        model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(1)])
        model.compile(keras.optimizers.Adam(hp["learning_rate"]),
                      keras.losses.BinaryCrossentropy(from_logits=True))
        return model

    pop = keras_pbt.Population(build, {"learning_rate": keras_pbt.LogUniform(1e-4, 1e-1)},
                               population_size=6, monitor="val_loss", interval=1,
                               devices=keras_pbt.Devices(num_cpu=cpu_devices), logdir=logdir, seed=0)
    pop.fit(x[:split], y[:split], validation_data=(x[split:], y[split:]), epochs=20, batch_size=32,
            verbose=0)
    return pop


def _digits(logdir, cpu_devices):
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import digits

    return digits.main(["--logdir", logdir, "--verbose", "0", "--cpu-devices", str(cpu_devices or 4)])


def child(task, cpu_devices):
    totals = {"compile_s": 0.0, "compiles": 0}
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        _jax_compile_listener(totals)
    with tempfile.TemporaryDirectory() as logdir:
        pop = (_digits if task == "digits" else _cancer)(logdir, cpu_devices)
    out = {"backend": backend + (f":{cpu_devices}" if cpu_devices else ""), "task": task,
           "fit_s": pop.elapsed, "devices": len({d for m in pop.members for d in m.devices}),
           "wall_s": time.monotonic() - START,
           "tf_loaded": "tensorflow" in sys.modules}
    if backend == "jax":
        out.update(totals)
    print("@@" + json.dumps(out))


def parent(args):
    pythons = dict(p.split("=", 1) for p in args.python)
    rows = []
    for rep in range(args.repeats):
        order = list(args.backends[rep % len(args.backends):]) + list(args.backends[:rep % len(args.backends)])
        for task in args.tasks:
            for backend in order:
                name, _, n = backend.partition(":")
                env = dict(os.environ, KERAS_BACKEND=name, TF_CPP_MIN_LOG_LEVEL="3",
                           PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
                load = os.getloadavg()[0]
                proc = subprocess.run([pythons.get(name, sys.executable), __file__, "--child", task]
                                      + (["--cpu-devices", n] if n else []),
                                      capture_output=True, text=True, env=env, cwd=ROOT)
                line = next((x for x in proc.stdout.splitlines() if x.startswith("@@")), None)
                if line is None:
                    raise SystemExit(f"{backend} {task} failed:\n{proc.stderr[-3000:]}")
                row = json.loads(line[2:])
                row.update(rep=rep, load=load)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\nmedians over {args.repeats} runs; load average (1 min) before each run: "
          f"{min(r['load'] for r in rows):.1f}-{max(r['load'] for r in rows):.1f}")
    print("task | backend[:CPU devices] | wall s | PBT fit s | fit / TF | JAX compile s (compiles)")
    print("--- | --- | --- | --- | --- | ---")
    for task in args.tasks:
        base = None
        for backend in args.backends:
            sel = [r for r in rows if r["task"] == task and r["backend"] == backend]
            if not sel:
                continue
            fit = statistics.median(r["fit_s"] for r in sel)
            wall = statistics.median(r["wall_s"] for r in sel)
            base = fit if backend == "tensorflow" else base
            ratio = f"{fit / base:.2f}" if base else "-"
            comp = (f"{statistics.median(r['compile_s'] for r in sel):.1f} "
                    f"({statistics.median(r['compiles'] for r in sel):.0f})" if "compiles" in sel[0] else "-")
            print(f"{task} | {backend} | {wall:.1f} | {fit:.1f} | {ratio} | {comp}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=TASKS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS),
                        help="backend or backend:n (n CPU devices), e.g. tensorflow jax jax:1 torch")
    parser.add_argument("--cpu-devices", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--python", action="append", default=[],
                        help="backend=interpreter, e.g. jax=.venv-notf/bin/python")
    parser.add_argument("--out", help="also write every run as JSON")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.cpu_devices)
    else:
        parent(args)


if __name__ == "__main__":
    main()
