"""PBT overhead: the digits population with PBT against the same members without.

Both arms run in this one process, alternating, with the same members (the
demo's MLP), the same data pipeline (each member's own shuffled dataset), the
same devices (one MirroredStrategy per member over its logical CPU device or
GPU) and the same concurrency (one thread per member). The PBT arm is
`keras_pbt.Population.fit`; the plain arm calls `model.fit` in threads with no
callback. Both arms are timed from the making of the members' input
pipelines to the end of training (`Population.fit` makes them; so would a
user's own `fit`). Besides the wall times, each arm's process CPU time is
printed: on a machine other jobs load, it moves far less than the wall time.
The PBT arm's time is broken down by wrapping the library's own functions
with timers (`timers.py`; wall and thread CPU seconds): ranking, decisions,
snapshot copies, applying hyperparameters (and retraces), summaries, and
waiting at the barrier, and Python's garbage collections (every arm). Each arm
starts after a full collection, so that none pays for the garbage of the arm
before it.

    python benchmarks/overhead.py [--size 8] [--epochs 20] [--repeats 3]
    KERAS_BACKEND=jax python benchmarks/overhead.py ...   (or torch)
"""

import argparse
import collections
import gc
import os
import platform
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras_pbt  # noqa: E402
import timers  # noqa: E402



def instrument():
    from keras_pbt.core import policy
    from keras_pbt.runtime import callback
    from keras_pbt.runtime import hyperparameters
    from keras_pbt.runtime import snapshot
    from keras_pbt.storage import store
    from keras_pbt.storage import summary

    # The callback decides through the BoundaryPlan: ranking once, then deciding.
    timers.wrap(policy.BoundaryPlan, "with_reports", "rank (BoundaryPlan.with_reports)")
    timers.wrap(policy.BoundaryPlan, "decide", "decide (BoundaryPlan.decide)")
    timers.wrap(snapshot, "capture", "snapshot capture")
    timers.wrap(snapshot, "restore", "snapshot restore")
    callback.snapshot_lib = snapshot
    timers.wrap(store.InMemoryStore, "wait_for_interval", "barrier wait")
    timers.wrap(store.InMemoryStore, "snapshot", "snapshot fetch (a parent's)")
    timers.wrap(store.InMemoryStore, "report", "store report")
    timers.wrap(store.InMemoryStore, "histories", "store histories (asynchronous)")
    timers.wrap(policy, "comparable_reports", "comparable reports (asynchronous)")
    timers.wrap(callback.PBTCallback, "_record", "lineage record")
    timers.wrap(summary.MemberSummaryWriter, "write", "summaries")
    original = timers.wrap(hyperparameters.HyperparameterApplier, "apply",
                           "apply hparams (incl. make_train_function)")
    timed = hyperparameters.HyperparameterApplier.apply

    def counting_apply(self, values, force=False):
        retraced = timed(self, values, force)
        if retraced:
            timers.count("train functions rebuilt (each retraces at its next step)")
        return retraced

    counting_apply.__wrapped__ = original
    hyperparameters.HyperparameterApplier.apply = counting_apply
    timers.wrap(callback.PBTCallback, "_boundary", "boundary total")
    timers.watch_gc()


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
        # Timed from here, as `Population.fit` is timed with its pipelines:
        # a user training without PBT makes them too.
        t = time.perf_counter()
        steps, vsteps, _ = data_lib.check_fit_arguments(x, y, (xv, yv), 32, True, 1024, {})
        inputs = [(data_lib.member_pipeline(m.strategy, x, y, batch_size=32, seed=m.seed), steps,
                   data_lib.validation_pipeline(m.strategy, (xv, yv), 32), vsteps)
                  for m in pop.members]
        pipelines = time.perf_counter() - t

        def fit(m, data, steps, vdata, vsteps):
            with keras_pbt.population.devices.fit_scope(m.strategy):  # the member's device (JAX, PyTorch)
                m.model.fit(data, steps_per_epoch=steps, validation_data=vdata,
                            validation_steps=vsteps, epochs=args.epochs, verbose=0, shuffle=False)

        threads = [threading.Thread(target=fit, args=(m,) + i) for m, i in zip(pop.members, inputs)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t, pipelines

    def pbt_arm(seed, mode):
        pop = population(seed, synchronous=mode == "sync")
        t = time.perf_counter()
        pop.fit(x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=32, verbose=0)
        elapsed = time.perf_counter() - t
        exploits = sum(r.action == "exploit" for r in pop.lineage)
        return elapsed, exploits

    load_before = os.getloadavg()
    plain_arm(99)  # warm-up: thread pools, first traces
    arms = ["plain"] + modes
    wall, cpu = {a: [] for a in arms}, {a: [] for a in arms}
    pipelines, exploits = [], {m: [] for m in modes}
    breakdown = {a: [collections.Counter(), collections.Counter(), collections.Counter()]
                 for a in arms}
    for r in range(args.repeats):
        # Rotate the order so that no arm always runs first.
        for arm in arms[r % len(arms):] + arms[:r % len(arms)]:
            gc.collect()  # the garbage of the arm before is not this arm's cost
            timers.take()
            c = time.process_time()
            if arm == "plain":
                elapsed, made = plain_arm(r)
                pipelines.append(made)
            else:
                elapsed, n = pbt_arm(r, arm)
                exploits[arm].append(n)
            for total, part in zip(breakdown[arm], timers.take()):
                total.update(part)
            cpu[arm].append(time.process_time() - c)
            wall[arm].append(elapsed)
            print(f"repeat {r}: {arm:5s} {elapsed:7.2f} s wall, {cpu[arm][-1]:7.2f} s CPU", flush=True)
    load_after = os.getloadavg()
    import keras

    med = {a: float(np.median(wall[a])) for a in arms}
    med_cpu = {a: float(np.median(cpu[a])) for a in arms}
    print(f"backend: {keras.backend.backend()}")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, "
          f"devices {sorted({d for m in population(0).members for d in m.devices})}")
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
    print(f"{args.size} members x {args.epochs} epochs, {args.repeats} repeats, arms in rotating order")
    print(f"no PBT:          {med['plain']:6.2f} s (runs {[round(v, 2) for v in wall['plain']]}; "
          f"of which its pipelines {[round(v, 2) for v in pipelines]})")
    plain_without = [w - p for w, p in zip(wall["plain"], pipelines)]
    for mode in modes:
        print(f"PBT, {mode:5s}:     {med[mode]:6.2f} s (runs {[round(v, 2) for v in wall[mode]]}; "
              f"exploits {exploits[mode]})  ratio {med[mode] / med['plain']:.3f}")
        pairs = [b / a for a, b in zip(wall["plain"], wall[mode])]
        print(f"  per-repeat ratios {[round(v, 3) for v in pairs]}; median {np.median(pairs):.3f}")
        print(f"  process CPU time ratio {med_cpu[mode] / med_cpu['plain']:.3f} "
              f"(CPU s: no PBT {[round(v, 2) for v in cpu['plain']]}, "
              f"PBT {[round(v, 2) for v in cpu[mode]]})")
        print(f"  ratio with the plain arm's pipelines left out of its time (as before): "
              f"{med[mode] / float(np.median(plain_without)):.3f}")
    for arm in arms:
        w, c, n = breakdown[arm]
        name = "plain arm" if arm == "plain" else f"{arm} PBT arm"
        print(f"breakdown of the {name}, per run (seconds summed over threads):")
        for line in timers.report(w, c, n, args.repeats):
            print(line)
        if arm != "plain":
            print(f"  per member: boundary {w['boundary total'] / args.repeats / args.size:.3f} s, "
                  f"barrier {w['barrier wait'] / args.repeats / args.size:.3f} s per run")


if __name__ == "__main__":
    main()
