"""PBT overhead: the digits population with PBT against the same members without.

Both arms run in this one process, alternating, with the same members (the
demo's MLP), the same data pipeline (each member's own shuffled dataset), the
same devices (one MirroredStrategy per member over its logical CPU device or
GPU) and the same concurrency (one thread per member). The PBT arm is
`keras_pbt.Population.fit`; the plain arm calls `model.fit` in threads with no
callback. The PBT arm's time is broken down by wrapping the library's own
functions with timers: decisions, snapshot copies, retraces (make_train_function
and the next step that traces), summaries, and waiting at the barrier.

    python benchmarks/overhead.py [--size 8] [--epochs 20] [--repeats 3]
    KERAS_BACKEND=jax python benchmarks/overhead.py ...   (or torch)
"""

import argparse
import collections
import os
import platform
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import keras_pbt  # noqa: E402

TIMES = collections.Counter()
COUNTS = collections.Counter()
_LOCK = threading.Lock()


def _timed(owner, name, label):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            with _LOCK:
                TIMES[label] += time.perf_counter() - t
                COUNTS[label] += 1

    setattr(owner, name, wrapper)


def instrument():
    from keras_pbt.runtime import callback
    from keras_pbt.runtime import hyperparameters
    from keras_pbt.core import policy
    from keras_pbt.runtime import snapshot
    from keras_pbt.storage import store
    from keras_pbt.storage import summary

    _timed(policy.PBTPolicy, "decide", "decide")
    _timed(policy.PBTPolicy, "parent_candidates", "decide")
    _timed(snapshot, "capture", "snapshot capture")
    _timed(snapshot, "restore", "snapshot restore")
    callback.snapshot_lib = snapshot
    _timed(store.InMemoryStore, "wait_for_interval", "barrier wait")
    _timed(summary.MemberSummaryWriter, "write", "summaries")
    _timed(hyperparameters.HyperparameterApplier, "apply", "apply hparams (incl. make_train_function)")
    original = hyperparameters.HyperparameterApplier.apply

    def counting_apply(self, values, force=False):
        retraced = original(self, values, force)
        if retraced:
            with _LOCK:
                COUNTS["rebuilds"] += 1
        return retraced

    hyperparameters.HyperparameterApplier.apply = counting_apply
    _timed(callback.PBTCallback, "_boundary", "boundary total")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-devices", type=int, default=4)
    parser.add_argument("--modes", default="sync,async",
                        help="PBT arms to run beside the plain one: sync, async or both")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"sync", "async"}:
        parser.error(f"--modes must list sync and/or async. Received: {args.modes!r}")
    keras_pbt.population.devices.available_devices(num_cpu=args.cpu_devices)
    import digits
    import numpy as np

    from keras_pbt.population import data as data_lib

    (x, y), (xv, yv) = digits.load_data(0)
    instrument()

    def population(seed, synchronous=True):
        return keras_pbt.Population(digits.build, digits.SPACE, population_size=args.size, seed=seed,
                                    synchronous=synchronous,
                                    devices=keras_pbt.Devices(num_cpu=args.cpu_devices))

    def plain_arm(seed):
        pop = population(seed)  # same members, strategies and data; PBT is not used
        steps, vsteps, _ = data_lib.check_fit_arguments(x, y, (xv, yv), 32, True, 1024, {})
        inputs = [(data_lib.member_pipeline(m.strategy, x, y, batch_size=32, seed=m.seed), steps,
                   data_lib.validation_pipeline(m.strategy, (xv, yv), 32), vsteps)
                  for m in pop.members]

        def fit(m, data, steps, vdata, vsteps):
            with keras_pbt.population.devices.fit_scope(m.strategy):  # the member's device (JAX, PyTorch)
                m.model.fit(data, steps_per_epoch=steps, validation_data=vdata,
                            validation_steps=vsteps, epochs=args.epochs, verbose=0, shuffle=False)

        threads = [threading.Thread(target=fit, args=(m,) + i) for m, i in zip(pop.members, inputs)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t

    def pbt_arm(seed, mode):
        pop = population(seed, synchronous=mode == "sync")
        t = time.perf_counter()
        pop.fit(x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=32, verbose=0)
        elapsed = time.perf_counter() - t
        exploits = sum(r.action == "exploit" for r in pop.lineage)
        return elapsed, exploits

    plain_arm(99)  # warm-up: thread pools, first traces
    plains, pbts, exploits = [], {m: [] for m in modes}, {m: [] for m in modes}
    times = {m: collections.Counter() for m in modes}
    counts = {m: collections.Counter() for m in modes}
    arms = ["plain"] + modes
    for r in range(args.repeats):
        # Rotate the order so that no arm always runs first.
        for mode in arms[r % len(arms):] + arms[:r % len(arms)]:
            if mode == "plain":
                plains.append(plain_arm(r))
                continue
            TIMES.clear()
            COUNTS.clear()
            elapsed, n = pbt_arm(r, mode)
            times[mode].update(TIMES)
            counts[mode].update(COUNTS)
            pbts[mode].append(elapsed)
            exploits[mode].append(n)
    p = float(np.median(plains))
    import keras

    print(f"backend: {keras.backend.backend()}")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, "
          f"devices {sorted({d for m in population(0).members for d in m.devices})}")
    print(f"{args.size} members x {args.epochs} epochs, {args.repeats} repeats, arms in rotating order")
    print(f"no PBT:          {p:6.2f} s (runs {[round(v, 2) for v in plains]})")
    for mode in modes:
        q = float(np.median(pbts[mode]))
        print(f"PBT, {mode:5s}:     {q:6.2f} s (runs {[round(v, 2) for v in pbts[mode]]}; "
              f"exploits {exploits[mode]})  ratio {q / p:.3f}")
        pairs = [b / a for a, b in zip(plains, pbts[mode])]
        print(f"  per-repeat ratios {[round(v, 3) for v in pairs]}")
    for mode in modes:
        print(f"breakdown of the {mode} PBT arm, per run (CPU-thread seconds summed over members):")
        for label, seconds in times[mode].most_common():
            print(f"  {label:45s} {seconds / args.repeats:8.3f} s  ({counts[mode][label] // args.repeats} calls)")
        print(f"  train functions rebuilt (each retraces at its next step): "
              f"{counts[mode]['rebuilds'] / args.repeats:g} per run")


if __name__ == "__main__":
    main()
