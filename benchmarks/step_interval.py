"""Step-interval overhead: `fit` with a step-interval PBTCallback against the same `fit` without.

One member (a population of one never exploits, so this measures the hook and
the boundary bookkeeping, not copies), the digits MLP, alternating arms in one
process. Each run builds a fresh model and times its whole `fit`, first trace
included, in both arms: what a user sees for one `fit` call. Goal: <= 2% slower.

    python benchmarks/step_interval.py [--epochs 20] [--interval 100] [--repeats 5]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--interval", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import digits
    import numpy as np

    import keras_pbt

    (x, y), _ = digits.load_data(0)
    hp = {"learning_rate": 0.05, "momentum": 0.9}

    def run(with_callback, i):
        model = digits.build(hp)
        callbacks = []
        if with_callback:
            store = keras_pbt.InMemoryStore(seed=0)
            callbacks = [keras_pbt.PBTCallback(store, f"m{i}", digits.SPACE, monitor="loss",
                                               interval_steps=args.interval)]
        t = time.perf_counter()
        model.fit(x, y, epochs=args.epochs, batch_size=32, verbose=0, callbacks=callbacks)
        return time.perf_counter() - t

    run(False, -1)  # warm-up: TensorFlow's thread pools and kernels
    run(True, -1)
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


if __name__ == "__main__":
    main()
