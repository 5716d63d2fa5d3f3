"""Speed-up of 2 members on 2 devices trained at once against one after another.

Both arms run in this one process, side by side, on the same data and models:
each member is a digits MLP built inside its own MirroredStrategy over one
logical CPU device (or GPU). Prints the wall times and their ratio.

    python benchmarks/concurrency.py [--epochs 10] [--repeats 3]
"""

import argparse
import os
import platform
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_pbt  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    devices = keras_pbt.population.devices.available_devices(num_cpu=2)[:2]
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")

    def members():
        out = []
        for d in devices:
            strategy = keras_pbt.population.devices.member_strategy([d])
            with strategy.scope():
                m = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                                      keras.layers.Dense(10)])
                m.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=["accuracy"])
            out.append(m)
        return out

    def fit(m):
        m.fit(x, y, epochs=args.epochs, batch_size=32, verbose=0)

    for m in members():  # warm-up: tracing, thread pools
        m.fit(x[:64], y[:64], epochs=1, verbose=0)
    serial, concurrent = [], []
    for _ in range(args.repeats):
        ms = members()
        t = time.perf_counter()
        for m in ms:
            fit(m)
        serial.append(time.perf_counter() - t)
        ms = members()
        threads = [threading.Thread(target=fit, args=(m,)) for m in ms]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        concurrent.append(time.perf_counter() - t)
    s, c = float(np.median(serial)), float(np.median(concurrent))
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, devices {devices}")
    print(f"one after another: {s:.2f} s (median of {args.repeats}: {[round(v, 2) for v in serial]})")
    print(f"concurrently:      {c:.2f} s (median of {args.repeats}: {[round(v, 2) for v in concurrent]})")
    print(f"speed-up: {s / c:.2f}x")


if __name__ == "__main__":
    main()
