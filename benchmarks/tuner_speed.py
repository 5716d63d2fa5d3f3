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
fsynced); the population writes no checkpoint. Prints every run, the
medians and their ratio.

    python benchmarks/tuner_speed.py [--repeats 3] [--members 8] [--epochs 12]
                                     [--no-population-logdir]
"""

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_pbt  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--interval", type=int, default=2)
    parser.add_argument("--no-population-logdir", action="store_true",
                        help="train the population without TensorBoard logs (the tuner "
                             "always writes them)")
    args = parser.parse_args()
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
    pop_times, tuner_times = [], []
    for r in range(args.repeats):
        seconds, exploits = population(r)
        pop_times.append(seconds)
        print(f"run {r}: Population {seconds:6.2f} s ({exploits} exploits)", flush=True)
        seconds, exploits, builds = tuner(r)
        tuner_times.append(seconds)
        print(f"run {r}: PBTTuner   {seconds:6.2f} s ({exploits} exploits, {builds} models built)",
              flush=True)
    p, t = statistics.median(pop_times), statistics.median(tuner_times)
    print(f"median: Population {p:.2f} s, PBTTuner {t:.2f} s, ratio {t / p:.2f}x")


if __name__ == "__main__":
    main()
