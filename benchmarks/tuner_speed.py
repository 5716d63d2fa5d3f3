"""Wall time of the same PBT population through `PBTTuner` and through `Population`.

Both arms run in this one process, alternating, on the same data, model and
schedule: 8 digits MLP members (Dense 64 relu, Dense 10; SGD with a tuned
learning rate and momentum), 12 epochs each with a decision every 2 epochs,
batch size 32, each member on one logical CPU device (or GPU) under its own
`MirroredStrategy`: `Population(devices=...)` and `PBTTuner(devices=...)`
(one worker thread per device). The tuner's hypermodel declares the same
space with `hp.Float`. Each time runs from the constructor (which builds
the members, or populates the tuner's space) to the end of `fit` /
`search`, and both write the lineage to TensorBoard (the tuner always
does; the population is given a `logdir`). The tuner also writes its
trial files and a checkpoint per segment (keras_pbt.storage.checkpoint's format,
fsynced); the population writes no checkpoint. Prints every run with its
process CPU time, the medians, their ratio, the load average, and a
breakdown of each arm per run (`timers.py`: wall and thread CPU seconds
summed over the worker or member threads, calls, and the cost per call) of
what the tuner does around its segments: builds, restores of a parent's
checkpoint, the `fit` of each segment, captures, checkpoint writes and
their fsyncs, keras-tuner's trial and oracle files, lineage and TensorBoard
writes, waiting for a segment, Python's garbage collections. Each arm starts
after a full collection, so that none pays for the garbage of the other.

    python benchmarks/tuner_speed.py [--repeats 3] [--members 8] [--epochs 12]
                                     [--no-population-logdir] [--no-breakdown]
"""

import argparse
import collections
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras_pbt  # noqa: E402
import timers  # noqa: E402


def instrument():
    """Timers around what each arm does besides training (see timers.py)."""
    import keras_tuner

    from keras_pbt.runtime import callback
    from keras_pbt.runtime import snapshot
    from keras_pbt.storage import checkpoint
    from keras_pbt.storage import store
    from keras_pbt.storage import summary
    from keras_pbt.tuner import oracle
    from keras_pbt.tuner import records
    from keras_pbt.tuner import snapshots
    from keras_pbt.tuner import tuner

    timers.wrap(keras_tuner.HyperModel, "fit", "tuner: segment fit (model.fit)")
    timers.wrap(tuner.PBTTuner, "_try_build", "tuner: build (incl. the build lock)")
    timers.wrap(tuner.PBTTuner, "_find_roles", "tuner: roles (3 builds at start)")
    timers.wrap(tuner.PBTTuner, "_restore", "tuner: restore a parent's checkpoint")
    timers.wrap(snapshots, "load", "tuner:   checkpoint read + verify")
    timers.wrap(snapshots, "save", "tuner: segment checkpoint write")
    timers.wrap(checkpoint, "atomic_write", "tuner:   atomic writes (tmp, fsync, rename)")
    timers.wrap(checkpoint.os, "fsync", "fsync (file or directory)")
    timers.wrap(tuner.PBTTuner, "_idle_wait", "tuner: idle wait for a segment")
    timers.wrap(oracle.PBTOracle, "create_trial", "tuner: oracle.create_trial")
    timers.wrap(oracle.PBTOracle, "update_trial", "tuner: oracle.update_trial")
    timers.wrap(oracle.PBTOracle, "end_trial", "tuner: oracle.end_trial")
    timers.wrap(keras_tuner.Oracle, "save", "tuner:   oracle.json writes")
    timers.wrap(keras_tuner.Oracle, "_save_trial", "tuner:   trial.json writes")
    timers.wrap(tuner.PBTTuner, "save", "tuner: tuner.save (oracle + tuner json)")
    timers.wrap(records.LineageLog, "add", "tuner: lineage record (jsonl + TensorBoard)")
    timers.wrap(snapshot, "capture", "snapshot capture")
    timers.wrap(snapshot, "restore", "snapshot restore")
    timers.wrap(summary.MemberSummaryWriter, "write", "TensorBoard write")
    timers.wrap(summary.MemberSummaryWriter, "flush", "TensorBoard flush")
    timers.wrap(callback.PBTCallback, "_boundary", "population: boundary total")
    timers.wrap(store.InMemoryStore, "wait_for_interval", "population:   barrier wait")
    timers.watch_gc()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--interval", type=int, default=2)
    parser.add_argument("--no-population-logdir", action="store_true",
                        help="train the population without TensorBoard logs (the tuner "
                             "always writes them)")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="no timers around the library's functions")
    args = parser.parse_args()
    if not args.no_breakdown:
        instrument()
    devices = keras_pbt.population.devices.available_devices(num_cpu=args.members)[:args.members]

    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    x, y, xv, yv = x[:1437], y[:1437], x[1437:], y[1437:]

    def model(learning_rate, momentum):
        m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10)])
        m.compile(keras.optimizers.SGD(learning_rate, momentum=momentum),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
        return m

    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 0.3),
             "momentum": keras_pbt.Uniform(0.0, 0.95)}

    def population(seed):
        logdir = tempfile.mkdtemp(prefix="tuner_speed_pop_")
        try:
            start = time.monotonic()
            pop = keras_pbt.Population(
                lambda hp: model(hp["learning_rate"], hp["momentum"]), space,
                population_size=args.members, interval=args.interval, devices=devices,
                logdir=None if args.no_population_logdir else logdir, seed=seed)
            pop.fit(x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=32, verbose=0)
            return time.monotonic() - start, sum(r.action == "exploit" for r in pop.lineage)
        finally:
            shutil.rmtree(logdir, ignore_errors=True)

    def tuner(seed):
        def build(hp):
            return model(hp.Float("learning_rate", 1e-3, 0.3, sampling="log"),
                         hp.Float("momentum", 0.0, 0.95))

        directory = tempfile.mkdtemp(prefix="tuner_speed_")
        try:
            start = time.monotonic()
            t = keras_pbt.PBTTuner(build, objective="val_accuracy", population_size=args.members,
                                   interval=args.interval, devices=devices, seed=seed,
                                   directory=directory, project_name="speed")
            t.search(x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=32,
                     verbose=0)
            elapsed = time.monotonic() - start
            builds = sum(w.builds for w in t.workers)
            return elapsed, sum(r.action == "exploit" for r in t.oracle.lineage()), builds
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    print(f"{platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; devices {devices}")
    load_before = os.getloadavg()
    wall = {"Population": [], "PBTTuner": []}
    cpu = {"Population": [], "PBTTuner": []}
    breakdown = {arm: [collections.Counter() for _ in range(3)] for arm in wall}
    for r in range(args.repeats):
        # Alternate the order so that neither arm always runs first.
        for arm in ("Population", "PBTTuner")[::1 if r % 2 == 0 else -1]:
            gc.collect()  # the garbage of the arm before is not this arm's cost
            timers.take()
            c = time.process_time()
            if arm == "Population":
                seconds, exploits = population(r)
                extra = f"{exploits} exploits"
            else:
                seconds, exploits, builds = tuner(r)
                extra = f"{exploits} exploits, {builds} models built"
            cpu[arm].append(time.process_time() - c)
            wall[arm].append(seconds)
            for total, part in zip(breakdown[arm], timers.take()):
                total.update(part)
            print(f"run {r}: {arm:10s} {seconds:6.2f} s, {cpu[arm][-1]:6.2f} s CPU ({extra})",
                  flush=True)
    p, t = statistics.median(wall["Population"]), statistics.median(wall["PBTTuner"])
    pc, tc = statistics.median(cpu["Population"]), statistics.median(cpu["PBTTuner"])
    ratios = [b / a for a, b in zip(wall["Population"], wall["PBTTuner"])]
    print(f"load average (1, 5, 15 min): before {load_before}, after {os.getloadavg()}")
    print(f"median: Population {p:.2f} s, PBTTuner {t:.2f} s, ratio {t / p:.2f}x "
          f"(per repeat {[round(v, 2) for v in ratios]})")
    print(f"process CPU time: Population {pc:.2f} s, PBTTuner {tc:.2f} s, ratio {tc / pc:.2f}x")
    if not args.no_breakdown:
        for arm in wall:
            print(f"breakdown of {arm}, per run (seconds summed over its threads):")
            for line in timers.report(*breakdown[arm], runs=args.repeats):
                print(line)


if __name__ == "__main__":
    main()
