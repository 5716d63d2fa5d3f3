"""CPU time of one snapshot capture and one restore of a digits member.

The member of `benchmarks/overhead.py` (Dense 64 relu, Dense 10; SGD with
momentum, so the optimizer has slots) under its own `MirroredStrategy` on
one logical CPU device, trained one epoch, then captured and restored
`--calls` times in one thread. Prints the thread CPU time per call (what a
boundary takes from the cores the other members train on; wall time on a
loaded machine adds waiting). Written against the snapshot functions'
oldest signature, so that an older checkout can be measured the same way
(its directory first on PYTHONPATH):

    python benchmarks/snapshot_cost.py [--calls 300]
    PYTHONPATH=<checkout of an older commit> python benchmarks/snapshot_cost.py
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _snapshot_module():
    try:
        from keras_pbt.runtime import snapshot
    except ImportError:  # before the layout by job
        from keras_pbt import snapshot
    return snapshot


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    import keras_pbt

    snapshot = _snapshot_module()
    rng = np.random.default_rng(0)
    x, y = rng.random((320, 64), dtype="float32"), rng.integers(0, 10, 320)

    def member():
        strategy = tf.distribute.MirroredStrategy(
            ["/device:CPU:0"], cross_device_ops=tf.distribute.ReductionToOneDevice())
        with strategy.scope():
            model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                                      keras.layers.Dense(10)])
            model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
        return model

    a, b = member(), member()
    snap = snapshot.capture(a, "a", 1)
    snapshot.restore(b, snap)
    capture, restore = [], []
    for _ in range(args.rounds):  # alternated rounds; the median round is printed
        t = time.thread_time()
        for _ in range(args.calls):
            snapshot.capture(a, "a", 1)
        capture.append(1e3 * (time.thread_time() - t) / args.calls)
        t = time.thread_time()
        for _ in range(args.calls):
            snapshot.restore(b, snap)
        restore.append(1e3 * (time.thread_time() - t) / args.calls)
    print(f"keras_pbt from {os.path.dirname(os.path.dirname(keras_pbt.__file__))}")
    print(f"capture {statistics.median(capture):.3f} ms CPU per call "
          f"(rounds {[round(v, 3) for v in capture]}); "
          f"restore {statistics.median(restore):.3f} ms (rounds {[round(v, 3) for v in restore]}); "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
