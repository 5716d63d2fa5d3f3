"""The tasks of the search-quality benchmark, and random search on them.

A task fixes everything every arm shares: the data and its splits, the
model, the search space, the epochs, the batch size and the interval at
which PBT decides (and at which learning curves are recorded). No arm may
change any of it.

Splits (per seed, the same for every arm):

* `train`: what every arm trains on;
* `val`: what PBT ranks on at every boundary (random search records its
  learning curve on it);
* `select`: held out from training and ranking; the unbiased final choice
  (`Population.best_model(validation_data=...)`) uses it;
* `test`: scored once, on the model each arm hands back.

Random search trains each configuration alone with a plain `model.fit` and
records its accuracy on every split. Results are cached on disk per task,
seed, epochs and configuration (`benchmarks/cache/`), since the same 32
trainings serve every PBT arm.

Tasks:

* `mnist1d-cnn`: MNIST-1D (Greydanus 2020), generated offline with
  `mnist1d.data.make_dataset(get_dataset_args())`: 4,000 training
  sequences of length 40 (split per seed into 3,000 train, 500 val, 500
  select) and the official 1,000 test sequences. The paper's CNN (three
  Conv1D of 25 channels, kernels 5/3/3, stride 2, then a Dense 10), AdamW
  with `learning_rate`, `weight_decay` and `beta_1` tuned; batch 100 (the
  paper's). The paper reports 94 +- 2 % test accuracy after 6,000 steps.
* `digits-mlp`, `digits-cnn`: sklearn's digits (1,797 8x8 images), split per
  seed 55/15/10/20 % into train/val/select/test; the demo's 64-64-10 MLP
  and a small CNN, SGD with `learning_rate` and `momentum` tuned.
"""

import dataclasses
import json
import os
import sys
from typing import Callable, Dict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import keras_pbt  # noqa: E402

CACHE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cache")
SPLITS = ("train", "val", "select", "test")


@dataclasses.dataclass(frozen=True)
class Task:
    """Everything the arms of one benchmark task share.

    Attributes:
        name: the task's name (`"mnist1d-cnn"`).
        description: one line for the tables.
        load: `fn(seed) -> dict split -> (x, y)`.
        build: `fn(hp) -> compiled keras.Model`.
        space: the search space, dict name -> spec.
        epochs: epochs per configuration / member.
        batch_size: batch size of every arm.
        interval: epochs between PBT decisions (and learning-curve points).
    """

    name: str
    description: str
    load: Callable
    build: Callable
    space: Dict
    epochs: int
    batch_size: int
    interval: int


# ---------------------------------------------------------------- MNIST-1D

_MNIST1D = {}


def mnist1d_arrays():
    """(x, y, x_test, y_test) of MNIST-1D, generated offline once per process."""
    if not _MNIST1D:
        from mnist1d.data import get_dataset_args
        from mnist1d.data import make_dataset  # never get_dataset: it downloads

        data = make_dataset(get_dataset_args())
        _MNIST1D["arrays"] = (
            data["x"].astype("float32")[..., None], data["y"].astype("int32"),
            data["x_test"].astype("float32")[..., None], data["y_test"].astype("int32"),
        )
    return _MNIST1D["arrays"]


def load_mnist1d(seed):
    x, y, xt, yt = mnist1d_arrays()
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return {"train": (x[:3000], y[:3000]), "val": (x[3000:3500], y[3000:3500]),
            "select": (x[3500:], y[3500:]), "test": (xt, yt)}


def build_mnist1d_cnn(hp):
    """The MNIST-1D paper's ConvBase: 3 x Conv1D(25, stride 2, padding 1) + Dense(10)."""
    import keras

    layers = [keras.Input((40, 1))]
    for kernel in (5, 3, 3):
        layers += [keras.layers.ZeroPadding1D(1),
                   keras.layers.Conv1D(25, kernel, strides=2, activation="relu")]
    model = keras.Sequential(layers + [keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile(
        keras.optimizers.AdamW(hp["learning_rate"], weight_decay=hp["weight_decay"],
                               beta_1=hp["beta_1"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


MNIST1D_SPACE = {
    "learning_rate": keras_pbt.LogUniform(1e-4, 1e-1),
    "weight_decay": keras_pbt.LogUniform(1e-5, 1e-1),
    "beta_1": keras_pbt.Uniform(0.5, 0.99),
}


# ------------------------------------------------------------------ digits


def load_digits_splits(seed):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = (x / 16.0).astype("float32"), y.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    cuts = [int(f * len(x)) for f in (0.55, 0.70, 0.80)]
    parts = np.split(np.arange(len(x)), cuts)
    return {name: (x[idx], y[idx]) for name, idx in zip(SPLITS, parts)}


def _images(load):
    def load_images(seed):
        return {k: (x.reshape((-1, 8, 8, 1)), y) for k, (x, y) in load(seed).items()}
    return load_images


def build_digits_cnn(hp):
    """Conv 16 3x3 -> Conv 32 3x3 -> Flatten -> Dense 10 on 8x8x1 images."""
    import digits
    import keras

    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    return digits.compile_sgd(model, hp)


def tasks():
    """name -> `Task`."""
    import digits

    return {
        "mnist1d-cnn": Task(
            "mnist1d-cnn", "MNIST-1D, the paper's CNN, AdamW (learning_rate, weight_decay, beta_1)",
            load_mnist1d, build_mnist1d_cnn, MNIST1D_SPACE, epochs=40, batch_size=100, interval=4),
        "digits-mlp": Task(
            "digits-mlp", "digits, 64-64-10 MLP (examples/digits.py), SGD (learning_rate, momentum)",
            load_digits_splits, digits.build, digits.SPACE, epochs=20, batch_size=32, interval=2),
        "digits-cnn": Task(
            "digits-cnn", "digits, CNN Conv16-Conv32-Dense10, SGD (learning_rate, momentum)",
            _images(load_digits_splits), build_digits_cnn, digits.SPACE, epochs=20,
            batch_size=32, interval=2),
    }


# ------------------------------------------------------------ configurations


def draw_configs(space, n, seed):
    """`n` configurations from a seeded generator (the first 8 seed PBT too)."""
    rng = np.random.default_rng([seed, 1])
    return [keras_pbt.sample_space(space, rng) for _ in range(n)]


def weight_seeds(n, seed):
    """Initial-weight seeds: the first 8 are those `Population(seed=seed)`
    gives its members when `initial_hparams` is passed, so PBT and random
    search 1x start from the same weights as well as the same values."""
    rng = np.random.default_rng([seed, 0])
    return [int(rng.integers(2**31)) for _ in range(n)]


def accuracy(model, x, y, batch_size=500):
    """Accuracy of an eager forward pass (no traced predict function per model)."""
    logits = np.concatenate([np.asarray(model(x[i:i + batch_size], training=False))
                             for i in range(0, len(x), batch_size)])
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def scores(model, data):
    """dict split -> accuracy of a trained model, for val, select and test."""
    return {k: accuracy(model, *data[k]) for k in ("val", "select", "test")}


# ------------------------------------------------------------ random search


def _cache_path(task, seed):
    return os.path.join(CACHE_DIR, f"random_{task.name}_seed{seed}_e{task.epochs}.json")


def random_search(task, seed, n, data=None, log=print):
    """Trains the first `n` configurations of `seed` alone, each with plain `fit`.

    Returns:
        A list of dicts, one per configuration in draw order: `hparams`,
        `val`, `select`, `test` (final accuracies) and `curve` (validation
        accuracy every `task.interval` epochs).
    """
    import keras

    path = _cache_path(task, seed)
    cached = []
    if os.path.exists(path):
        with open(path) as f:
            cached = json.load(f)
    configs = draw_configs(task.space, n, seed)
    seeds = weight_seeds(n, seed)
    if len(cached) >= n:
        return cached[:n]
    data = data or task.load(seed)
    results = list(cached)
    for i in range(len(cached), n):
        keras.utils.set_random_seed(seeds[i])
        model = task.build(dict(configs[i]))
        history = model.fit(*data["train"], validation_data=data["val"], epochs=task.epochs,
                            batch_size=task.batch_size, validation_freq=task.interval, verbose=0)
        row = dict(hparams=configs[i], curve=[float(v) for v in history.history["val_accuracy"]],
                   **scores(model, data))
        results.append(row)
        log(f"  random {task.name} seed {seed} config {i}: val {row['val']:.4f} "
            f"test {row['test']:.4f}")
        os.makedirs(CACHE_DIR, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(results, f)
        os.replace(path + ".tmp", path)
    return results


def main(argv=None):
    """Fills the random-search cache: `python benchmarks/search_tasks.py TASK SEEDS N`."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("task")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--configs", type=int, default=32)
    args = parser.parse_args(argv)
    keras_pbt.population.devices.available_devices(num_cpu=4)
    task = tasks()[args.task]
    for seed in [int(s) for s in args.seeds.split(",")]:
        random_search(task, seed, args.configs, log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
