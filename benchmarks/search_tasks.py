"""The tasks of the search-quality benchmark: data, splits, model, space.

A task fixes everything every arm shares: the data and its splits, the
model, the search space, the epochs, the batch size, the monitored metric
and its mode. No arm may change any of it. The tasks were fixed before any
run of issue 19 and are not changed after a result is seen.

Splits (per seed, the same for every arm):

* `train`: what every arm trains on;
* `val`: what PBT ranks on at every boundary and keras-tuner's objective
  reads (random search records its learning curve on it);
* `select`: held out from training and ranking; the unbiased final choice
  (`Population.best_model(validation_data=...)`) uses it;
* `test`: scored once, on the model each arm hands back.

Tasks:

* `mnist1d-cnn`: MNIST-1D (Greydanus 2020), generated offline with
  `mnist1d.data.make_dataset(get_dataset_args())`: 4,000 training
  sequences of length 40 (split per seed into 3,000 train, 500 val, 500
  select) and the official 1,000 test sequences. The paper's CNN (three
  Conv1D of 25 channels, kernels 5/3/3, stride 2, then a Dense 10), AdamW
  with `learning_rate`, `weight_decay` and `beta_1` tuned; 30 epochs of
  batch 100 (issue 19's held-out configuration; issue 12 used 40).
* `digits-mlp`, `digits-cnn`: sklearn's digits (1,797 8x8 images), split per
  seed 55/15/10/20 % into train/val/select/test; the demo's 64-64-10 MLP
  and a small CNN, SGD with `learning_rate` and `momentum` tuned; 20 epochs
  of batch 32.
* `friedman1-mlp`: regression, `sklearn.datasets.make_friedman1(n_samples=
  2000, n_features=10, noise=1.0, random_state=seed)` split 1,000 train /
  250 val / 250 select / 500 test, inputs and target standardised with the
  train split's mean and deviation; a 64-64-1 MLP, AdamW with
  `learning_rate` and `weight_decay` tuned, mean squared error;
  `monitor="val_loss"` (mode min); 30 epochs of batch 32. The test metric
  is the MSE on the standardised target (lower is better; the noise alone
  gives about 0.04).
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from typing import Callable, Dict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import keras_pbt  # noqa: E402

CACHE_ENV = "KERAS_PBT_BENCH_CACHE"
SPLITS = ("train", "val", "select", "test")
SIZE = 8  # PBT members = random-search configurations at 1x compute


def cache_dir():
    """The cache directory: `$KERAS_PBT_BENCH_CACHE`, else `benchmarks/cache`."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "cache")


def read_json(path):
    """The JSON at `path`, or None if there is none."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_json(path, value):
    """Writes atomically (temp file + rename): readers never see half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


@contextlib.contextmanager
def claim(path):
    """Claims the cache entry `path` for this process while it is computed.

    Several processes (yours, another session's) may fill one cache: a
    piece claimed by a live process is left to it. A claim left by a
    process that died is taken over.

    Yields:
        True when this process holds the claim, False when another live
        process does (the caller then skips the piece).
    """
    lock = path + ".lock"
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            with open(lock) as f:
                owner = int(f.read().strip() or 0)
            os.kill(owner, 0)
            alive = owner != os.getpid()
        except (OSError, ValueError):
            alive = False
        if alive:
            yield False
            return
        fd = os.open(lock, os.O_CREAT | os.O_TRUNC | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield True
    finally:
        try:
            os.remove(lock)
        except OSError:
            pass


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
        data: how the data is made (part of the cache key).
        monitor: what PBT ranks on and keras-tuner's objective reads.
        mode: `"max"` or `"min"`.
        metric: the name of the metric the tables show (`"accuracy"`,
            `"mse"`), computed by `score`.
    """

    name: str
    description: str
    load: Callable
    build: Callable
    space: Dict
    epochs: int
    batch_size: int
    data: str
    monitor: str = "val_accuracy"
    mode: str = "max"
    metric: str = "accuracy"

    @property
    def key(self):
        """8 hex digits that change whenever the task's definition does."""
        text = json.dumps([self.name, self.epochs, self.batch_size, self.data, self.monitor,
                           self.mode, self.metric, {k: repr(v) for k, v in self.space.items()}])
        return hashlib.sha1(text.encode()).hexdigest()[:8]

    def score(self, model, x, y, batch_size=500):
        """`metric` of an eager forward pass (no traced predict function per model)."""
        out = np.concatenate([np.asarray(model(x[i:i + batch_size], training=False))
                              for i in range(0, len(x), batch_size)])
        if self.metric == "accuracy":
            return float(np.mean(np.argmax(out, axis=-1) == y))
        return float(np.mean((out.reshape(len(y)) - y) ** 2))

    def scores(self, model, data):
        """dict split -> `metric` of a trained model, for val, select and test."""
        return {k: self.score(model, *data[k]) for k in ("val", "select", "test")}


def better(a, b, mode):
    """True when score `a` is at least as good as `b`."""
    return a >= b if mode == "max" else a <= b


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


def load_digits_images(seed):
    return {k: (x.reshape((-1, 8, 8, 1)), y) for k, (x, y) in load_digits_splits(seed).items()}


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


# --------------------------------------------------------------- Friedman 1

FRIEDMAN_SIZES = (1000, 250, 250, 500)  # train, val, select, test


def load_friedman1(seed):
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=sum(FRIEDMAN_SIZES), n_features=10, noise=1.0,
                          random_state=seed)
    n = FRIEDMAN_SIZES[0]
    x = (x - x[:n].mean(axis=0)) / x[:n].std(axis=0)
    y = (y - y[:n].mean()) / y[:n].std()
    parts = np.split(np.arange(len(x)), np.cumsum(FRIEDMAN_SIZES)[:-1])
    return {name: (x[idx].astype("float32"), y[idx].astype("float32"))
            for name, idx in zip(SPLITS, parts)}


def build_friedman1_mlp(hp):
    """Dense 64 relu -> Dense 64 relu -> Dense 1, AdamW, mean squared error."""
    import keras

    model = keras.Sequential([
        keras.Input((10,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(1),
    ])
    model.compile(keras.optimizers.AdamW(hp["learning_rate"], weight_decay=hp["weight_decay"]),
                  "mse")
    return model


FRIEDMAN1_SPACE = {
    "learning_rate": keras_pbt.LogUniform(1e-4, 1e-1),
    "weight_decay": keras_pbt.LogUniform(1e-5, 1e-1),
}


def tasks():
    """name -> `Task`, in the order the benchmark runs them."""
    import digits

    return {
        "mnist1d-cnn": Task(
            "mnist1d-cnn", "MNIST-1D, the paper's CNN, AdamW (learning_rate, weight_decay, beta_1)",
            load_mnist1d, build_mnist1d_cnn, MNIST1D_SPACE, epochs=30, batch_size=100,
            data="mnist1d make_dataset(get_dataset_args()), 3000/500/500 + official 1000 test"),
        "friedman1-mlp": Task(
            "friedman1-mlp", "make_friedman1 regression, 64-64-1 MLP, AdamW (learning_rate, "
            "weight_decay), val_loss (min)",
            load_friedman1, build_friedman1_mlp, FRIEDMAN1_SPACE, epochs=30, batch_size=32,
            data=f"make_friedman1(n_samples=2000, noise=1.0, random_state=seed) {FRIEDMAN_SIZES}"
                 " standardised on train",
            monitor="val_loss", mode="min", metric="mse"),
        "digits-mlp": Task(
            "digits-mlp", "digits, 64-64-10 MLP (examples/digits.py), SGD (learning_rate, momentum)",
            load_digits_splits, digits.build, digits.SPACE, epochs=20, batch_size=32,
            data="load_digits / 16, 55/15/10/20 %"),
        "digits-cnn": Task(
            "digits-cnn", "digits, CNN Conv16-Conv32-Dense10, SGD (learning_rate, momentum)",
            load_digits_images, build_digits_cnn, digits.SPACE, epochs=20, batch_size=32,
            data="load_digits / 16 as 8x8x1, 55/15/10/20 %"),
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
