"""Step-interval overhead: `fit` with a step-interval PBTCallback against the same `fit` without.

One member (a population of one never exploits, so this measures the hook and
the boundary bookkeeping, not copies), the digits MLP, alternating arms in one
process. Each run builds a fresh model and times its whole `fit`, first trace
included, in both arms: what a user sees for one `fit` call. Goal: <= 2% slower.

    python benchmarks/step_interval.py [--epochs 60] [--interval 100] [--repeats 10]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--interval", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    import digits
    import numpy as np

    import keras_pbt

    (x, y), _ = digits.load_data(0)
    hp = {"learning_rate": 0.05, "momentum": 0.9}
    boundary = [0.0, 0]  # seconds, calls: the work at each interval boundary
    original = keras_pbt.PBTCallback._boundary

    def timed_boundary(self, logs, last):
        t = time.perf_counter()
        try:
            return original(self, logs, last)
        finally:
            boundary[0] += time.perf_counter() - t
            boundary[1] += 1

    keras_pbt.PBTCallback._boundary = timed_boundary

    def run(with_callback, i):
        model = digits.build(hp)
        callbacks = []
        if with_callback:
            store = keras_pbt.InMemoryStore(seed=0)
            callbacks = [keras_pbt.PBTCallback(store, f"m{i}", digits.SPACE, monitor="loss",
                                               interval=keras_pbt.Interval(steps=args.interval))]
        t = time.perf_counter()
        model.fit(x, y, epochs=args.epochs, batch_size=32, verbose=0, callbacks=callbacks)
        return time.perf_counter() - t

    run(False, -1)  # warm-up: TensorFlow's thread pools and kernels
    run(True, -1)
    boundary[:] = [0.0, 0]
    plain, hooked = [], []
    for i in range(args.repeats):
        # ABBA order: neither arm always runs first.
        if i % 2:
            hooked.append(run(True, i))
            plain.append(run(False, i))
        else:
            plain.append(run(False, i))
            hooked.append(run(True, i))
    p, h = float(np.median(plain)), float(np.median(hooked))
    print(f"{os.cpu_count()} cores; {args.epochs} epochs of {int(np.ceil(len(x) / 32))} steps, "
          f"interval_steps={args.interval}, {args.repeats} repeats in ABBA order")
    print(f"plain fit:            {p:.3f} s {[round(v, 3) for v in plain]}")
    print(f"with step callback:   {h:.3f} s {[round(v, 3) for v in hooked]}")
    print(f"ratio: {h / p:.4f} (per-repeat {[round(b / a, 4) for a, b in zip(plain, hooked)]})")
    # The same cost measured directly, free of the run-to-run noise above.
    steps = args.epochs * int(np.ceil(len(x) / 32))
    per_step = p / steps
    cb = keras_pbt.PBTCallback(keras_pbt.InMemoryStore(seed=0), "probe", digits.SPACE,
                               monitor="loss", interval=keras_pbt.Interval(steps=args.interval))
    cb._epoch_base, cb._next_step_boundary = 0, float("inf")
    logs = {"loss": 0.5, "accuracy": 0.9}
    n = 200_000
    t = time.perf_counter()
    for batch in range(n):
        cb.on_train_batch_end(batch, logs)
    hook = (time.perf_counter() - t) / n
    per_boundary = boundary[0] / max(boundary[1], 1)
    boundaries_per_fit = boundary[1] / args.repeats
    print(f"the batch hook between boundaries: {hook * 1e6:.2f} us per step "
          f"= {hook / per_step:.4%} of a {per_step * 1e3:.2f} ms step")
    print(f"a boundary (report, decide, snapshot): {per_boundary * 1e3:.2f} ms, "
          f"{boundaries_per_fit:g} per fit = {per_boundary * boundaries_per_fit / p:.3%} of the fit")


if __name__ == "__main__":
    main()
