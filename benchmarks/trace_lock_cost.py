"""What tracing one member at a time (`keras_pbt.runtime.trace_lock`) costs a population.

The digits demo's population (8 members over 4 logical CPU devices, a
decision every epoch) trained with the lock (the default on TensorFlow) and
without it (`serial_tracing` switched off), alternating in this one
process. Prints each run's wall time and the time until every member has
finished its first epoch (where all the tracing happens), the medians and
their ratios.

    python benchmarks/trace_lock_cost.py [--repeats 4] [--epochs 5]
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--members", type=int, default=8)
    args = parser.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    import digits
    import keras

    import keras_pbt
    from keras_pbt.backend import tensorflow_backend

    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}",
          flush=True)
    (x, y), (xv, yv) = digits.load_data(0)

    class FirstEpoch(keras.callbacks.Callback):
        def __init__(self, done):
            super().__init__()
            self.done = done

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.done.append(time.monotonic())

    results = {"lock": [], "no lock": []}
    for repeat in range(args.repeats):
        for arm in ("lock", "no lock") if repeat % 2 == 0 else ("no lock", "lock"):
            tensorflow_backend.serial_tracing = arm == "lock"
            pop = keras_pbt.Population(digits.build, digits.SPACE, population_size=args.members,
                                       monitor="val_accuracy",
                                       devices=keras_pbt.Devices(num_cpu=4), seed=repeat)
            done = []
            start = time.monotonic()
            pop.fit(x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=32, verbose=0,
                    callbacks=lambda member: [FirstEpoch(done)])
            wall = time.monotonic() - start
            first = max(done) - start
            results[arm].append((wall, first))
            print(f"{arm:>8}: {wall:6.1f} s, every member past its first epoch at {first:5.1f} s",
                  flush=True)
    tensorflow_backend.serial_tracing = True
    med = {arm: (statistics.median(w for w, _ in r), statistics.median(f for _, f in r))
           for arm, r in results.items()}
    print(f"median wall: lock {med['lock'][0]:.1f} s, no lock {med['no lock'][0]:.1f} s, ratio "
          f"{med['lock'][0] / med['no lock'][0]:.3f}; first epoch: lock {med['lock'][1]:.1f} s, "
          f"no lock {med['no lock'][1]:.1f} s, ratio {med['lock'][1] / med['no lock'][1]:.3f}")


if __name__ == "__main__":
    main()
