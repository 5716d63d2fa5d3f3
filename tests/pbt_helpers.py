"""Small helpers shared by the TF tests: tiny models, threaded members."""

import importlib.util
import os
import threading
import time

import keras
import numpy as np

X1 = np.array([[1.0], [-0.5], [2.0], [0.7], [-1.3], [1.1], [0.4], [-0.8]], "float32")
Y1 = np.array([[0.3], [0.9], [-0.4], [1.2], [0.1], [-0.6], [0.8], [0.2]], "float32")


def one_weight_model(optimizer, w0=0.5):
    """`y = w * x` with MSE: the gradient of a step is `2 (w x - y) x`."""
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(w0)),
    ])
    model.compile(optimizer, "mse")
    return model


def mlp(seed=0, optimizer=None, units=16):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(units, activation="relu"),
        keras.layers.Dense(3),
    ])
    model.compile(
        optimizer or keras.optimizers.SGD(0.05, momentum=0.5),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def blobs(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = rng.normal(0, 2, (3, 8))
    x = (centers[y] + rng.normal(0, 1.0, (n, 8))).astype("float32")
    return x, y


class FailAt(keras.callbacks.Callback):
    """Raises `error` at the start of epoch `epoch`, at most `times` times (a member's fault)."""

    def __init__(self, epoch, times, error=RuntimeError("boom in member code")):
        super().__init__()
        self.epoch, self.left, self.error = epoch, times, error

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch and self.left > 0:
            self.left -= 1
            raise self.error


def fit_in_threads(jobs, timeout=300):
    """Runs `model.fit(**kwargs)` for each `(model, kwargs)` in its own thread.

    Returns the exceptions raised, one per job (None where fit returned).
    Fails the test (AssertionError naming the jobs) when a job is still
    running `timeout` seconds after the start: a hung member is a failure,
    never a success.
    """
    errors = [None] * len(jobs)

    def run(i, model, kwargs):
        try:
            model.fit(**kwargs)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            errors[i] = e

    threads = [
        threading.Thread(target=run, args=(i, m, kw), daemon=True) for i, (m, kw) in enumerate(jobs)
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    assert not hung, f"job {', '.join(map(str, hung))} of {len(jobs)} still running after {timeout:g} s"
    return errors


def load_example(name):
    """Imports `examples/<name>.py` (the examples are scripts, not a package)."""
    path = os.path.join(os.path.dirname(__file__), os.pardir, "examples", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def interruptible():
    """`preexec_fn` for a child process that a test stops with SIGINT (Ctrl-C).

    A job started in the background by a non-interactive shell (`make test &`)
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt;
    the child gets the default disposition back, as in a terminal.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
