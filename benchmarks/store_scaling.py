"""Store scaling: 2 to 256 members reporting concurrently to one InMemoryStore.

Each member is a thread that, per interval, reports, passes the synchronous
barrier, and decides with the pure policy (truncation, explore) — the work a
PBTCallback does at a boundary minus the model. Prints decisions per second and
the slowest single report+barrier+decision.

    python benchmarks/store_scaling.py [--intervals 20] [--rounds 1]

To compare with another version of the store (e.g. the one before a change:
`git show HEAD~1:keras_pbt/storage/store.py > /tmp/store_old.py`), pass its file:
both run in turns in the same process, so a busy machine slows both alike,
and the table shows medians over the rounds and the ratios.

    python benchmarks/store_scaling.py --baseline /tmp/store_old.py --rounds 3

`--store-only` leaves out the policy's decision (members keep their
hyperparameters): what remains is the store's own cost.
"""

import argparse
import datetime
import importlib.util
import os
import platform
import statistics
import sys
import threading
import time

import numpy as np

import keras_pbt
from keras_pbt.core.policy import PBTPolicy
from keras_pbt.core.selection import Report

SIZES = (2, 4, 8, 16, 32, 64, 128, 256)


def run(store_cls, n, intervals, decide=True):
    store = store_cls(seed=0)
    space = {"learning_rate": keras_pbt.LogUniform(1e-4, 1e-1), "momentum": keras_pbt.Uniform(0.5, 0.99)}
    policy = PBTPolicy(space, mode="max", seed=0)
    for m in range(n):
        store.register(m)
    slowest = [0.0] * n
    barrier = threading.Barrier(n)

    def member(m):
        rng = np.random.default_rng([0, m])
        hp = keras_pbt.sample_space(space, rng)
        barrier.wait()
        for k in range(1, intervals + 1):
            t = time.perf_counter()
            store.report(Report(m, k * 100, float(rng.random()), hp, k))
            reports = store.wait_for_interval(m, k, timeout=60)
            if decide:
                hp = policy.decide(m, reports, k, rng).hparams
            slowest[m] = max(slowest[m], time.perf_counter() - t)

    threads = [threading.Thread(target=member, args=(m,)) for m in range(n)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    return n * intervals / elapsed, max(slowest)


def load_store(path):
    spec = importlib.util.spec_from_file_location("baseline_store", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.InMemoryStore


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--intervals", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs per size (and per store); the table shows medians")
    parser.add_argument("--baseline", help="a store.py to compare with, run in turns")
    parser.add_argument("--store-only", action="store_true",
                        help="report and barrier only, no policy decision")
    args = parser.parse_args()
    print("$ python " + " ".join(sys.argv))
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; "
          f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.intervals} intervals, median of {args.rounds} round(s)"
          + ("; store only (no decision)" if args.store_only else ""))
    stores = {"current": keras_pbt.InMemoryStore}
    if args.baseline:
        stores = {"baseline": load_store(args.baseline), "current": keras_pbt.InMemoryStore}
    results = {}
    for n in SIZES:
        runs = {name: [] for name in stores}
        for r in range(args.rounds):
            names = list(stores) if r % 2 == 0 else list(reversed(stores))  # alternate who goes first
            for name in names:
                runs[name].append(run(stores[name], n, args.intervals, not args.store_only))
        results[n] = {name: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
                      for name, v in runs.items()}
    if not args.baseline:
        print("members | decisions/s | slowest report+barrier+decision")
        for n in SIZES:
            rate, slow = results[n]["current"]
            print(f"{n} | {rate:,.0f} | {slow * 1e3:.1f} ms")
        return
    print(f"baseline: {args.baseline}")
    print("members | decisions/s baseline | decisions/s current | ratio | "
          "slowest baseline | slowest current | ratio")
    for n in SIZES:
        (rb, sb), (rc, sc) = results[n]["baseline"], results[n]["current"]
        print(f"{n} | {rb:,.0f} | {rc:,.0f} | {rc / rb:.2f}x | "
              f"{sb * 1e3:.1f} ms | {sc * 1e3:.1f} ms | {sb / sc:.2f}x")


if __name__ == "__main__":
    main()
