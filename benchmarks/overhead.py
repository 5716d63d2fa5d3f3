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
    from keras_pbt import callback, hyperparameters, policy, snapshot, store, summary

    _timed(policy.PBTPolicy, "decide", "decide")
    _timed(policy.PBTPolicy, "parent_candidates", "decide")
    _timed(snapshot, "capture", "snapshot capture")
    _timed(snapshot, "restore", "snapshot restore")
    callback.snapshot_lib = snapshot
    _timed(store.InMemoryStore, "wait_for_interval", "barrier wait")
    _timed(summary.MemberSummaryWriter, "write", "summaries")
    _timed(hyperparameters.HyperparameterApplier, "apply", "apply hparams (incl. make_train_function)")
    _timed(callback.PBTCallback, "_boundary", "boundary total")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-devices", type=int, default=4)
    args = parser.parse_args()
    keras_pbt.devices.available_devices(num_cpu_devices=args.cpu_devices)
    import digits
    import numpy as np

    (x, y), (xv, yv) = digits.load_data(0)
    instrument()

    def population(seed):
        return keras_pbt.Population(digits.build, digits.SPACE, size=args.size, seed=seed,
                                    num_cpu_devices=args.cpu_devices, verbose=0)

    def plain_arm(seed):
        pop = population(seed)  # same members, strategies and data; PBT is not used
        inputs = [pop._member_data(m, x, y, 32, True, 1024) + pop._member_validation(m, (xv, yv), 32)
                  for m in pop.members]

        def fit(m, data, steps, vdata, vsteps):
            m.model.fit(data, steps_per_epoch=steps, validation_data=vdata, validation_steps=vsteps,
                        epochs=args.epochs, verbose=0, shuffle=False)

        threads = [threading.Thread(target=fit, args=(m,) + i) for m, i in zip(pop.members, inputs)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t

    def pbt_arm(seed):
        pop = population(seed)
        t = time.perf_counter()
        pop.fit(x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=32)
        elapsed = time.perf_counter() - t
        exploits = sum(r.action == "exploit" for r in pop.lineage)
        return elapsed, exploits

    plain_arm(99)  # warm-up: thread pools, first traces
    plains, pbts, exploits = [], [], []
    TIMES.clear()
    COUNTS.clear()
    for r in range(args.repeats):
        plains.append(plain_arm(r))
        elapsed, n = pbt_arm(r)
        pbts.append(elapsed)
        exploits.append(n)
    p, q = float(np.median(plains)), float(np.median(pbts))
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, "
          f"devices {sorted({d for m in population(0).members for d in m.devices})}")
    print(f"{args.size} members x {args.epochs} epochs, {args.repeats} repeats, alternating arms")
    print(f"no PBT:   {p:.2f} s (runs {[round(v, 2) for v in plains]})")
    print(f"with PBT: {q:.2f} s (runs {[round(v, 2) for v in pbts]}; exploits {exploits})")
    print(f"wall-time ratio PBT / no PBT: {q / p:.3f}")
    print("breakdown of the PBT arm, summed over members and repeats (CPU-thread seconds):")
    for label, seconds in TIMES.most_common():
        print(f"  {label:45s} {seconds / args.repeats:8.3f} s per run  ({COUNTS[label] // args.repeats} calls)")


if __name__ == "__main__":
    main()
