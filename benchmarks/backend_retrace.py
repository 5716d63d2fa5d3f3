"""What a retrace costs on the current Keras backend, against an assign.

Run: KERAS_BACKEND=jax .venv/bin/python benchmarks/backend_retrace.py
     (also tensorflow, torch). The demo's digits MLP; times one `fit` of
a few steps after (a) assigning a new learning rate and momentum through
PBT's applier (what an exploit costs) and (b) forcing a retrace of the
train step (what a value moving to or from zero costs), median of repeats.
"""

import argparse
import statistics
import time

import keras
from sklearn.datasets import load_digits

from keras_pbt.runtime.hyperparameters import HyperparameterApplier


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile(keras.optimizers.SGD(0.05, momentum=0.5),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    applier = HyperparameterApplier(model, ["learning_rate", "momentum"])
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    model.optimizer.momentum = 0.5
    applier = HyperparameterApplier(model, ["learning_rate", "momentum"])
    applier.apply({"learning_rate": 0.05, "momentum": 0.5}, force=True)

    def timed(change):
        out = []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            change(i)
            model.train_on_batch(x[:32], y[:32])
            out.append(time.perf_counter() - t0)
        return statistics.median(out)

    model.train_on_batch(x[:32], y[:32])
    plain = timed(lambda i: None)
    assign = timed(lambda i: applier.apply({"learning_rate": 0.05 + i * 1e-3, "momentum": 0.5 + i * 0.01}))
    retrace = timed(lambda i: model.make_train_function(force=True))
    print(f"backend={keras.backend.backend()} step={plain * 1e3:.2f} ms "
          f"assign+step={assign * 1e3:.2f} ms retrace+step={retrace * 1e3:.1f} ms "
          f"(retrace/step {retrace / plain:.0f}x)")


if __name__ == "__main__":
    main()
