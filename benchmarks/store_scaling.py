"""Store scaling: 2 to 256 members reporting concurrently to one InMemoryStore.

Each member is a thread that, per interval, reports, passes the synchronous
barrier, and decides with the pure policy (truncation, explore) — the work a
PBTCallback does at a boundary minus the model. Prints decisions per second and
the slowest single report+barrier+decision.

    python benchmarks/store_scaling.py [--intervals 20]
"""

import argparse
import threading
import time

import numpy as np

import keras_pbt
from keras_pbt.policy import PBTPolicy
from keras_pbt.selection import Report


def run(n, intervals):
    store = keras_pbt.InMemoryStore(seed=0)
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
            d = policy.decide(m, reports, k, rng)
            hp = d.hparams
            slowest[m] = max(slowest[m], time.perf_counter() - t)

    threads = [threading.Thread(target=member, args=(m,)) for m in range(n)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    return n * intervals / elapsed, max(slowest)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--intervals", type=int, default=20)
    args = parser.parse_args()
    print("members | decisions/s | slowest report+barrier+decision")
    for n in (2, 4, 8, 16, 32, 64, 128, 256):
        rate, slow = run(n, args.intervals)
        print(f"{n} | {rate:,.0f} | {slow * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
