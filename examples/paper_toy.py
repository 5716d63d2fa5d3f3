"""The PBT paper's toy problem (Jaderberg et al. 2017, Fig. 2) with `PBTCallback`.

theta starts at (0.9, 0.9); the true objective is Q = 1.2 - |theta|^2. Each
member ascends a surrogate 1.2 - (h0 theta0^2 + h1 theta1^2) whose weights h
are its hyperparameters, held in `keras.Variable`s. Member 0 has h = (1, 0),
member 1 h = (0, 1): alone, each only shrinks one coordinate and stalls at
Q = 0.39; with PBT (exploit every few steps, explore by Gaussian noise on h)
they reach Q = 1.2.

    python examples/paper_toy.py [--steps 200] [--interval 4] [--seed 0]
"""

import argparse
import os
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import keras_pbt  # noqa: E402

SPACE = {"h0": keras_pbt.Uniform(0.0, 1.0), "h1": keras_pbt.Uniform(0.0, 1.0)}
H = ((1.0, 0.0), (0.0, 1.0))
LEARNING_RATES = (0.05, 0.06)  # members must differ, or PBT sees a tie and never exploits


def toy_model(h):
    """A built `keras.Model` whose `train_step` ascends the surrogate; logs the true `Q`.

    Args:
        h: the surrogate's two weights (its hyperparameters `h0`, `h1`).

    Returns:
        The model, with the weights in `model.h0` and `model.h1`.
    """
    import keras
    import tensorflow as tf

    class ToyModel(keras.Model):
        def __init__(self):
            super().__init__()
            self.theta = self.add_weight(shape=(2,), initializer=keras.initializers.Constant(0.9),
                                         name="theta")
            self.h0 = keras.Variable(float(h[0]), trainable=False, name="h0")
            self.h1 = keras.Variable(float(h[1]), trainable=False, name="h1")

        def call(self, x):
            return x

        def train_step(self, data):
            with tf.GradientTape() as tape:
                weighted = self.h0 * self.theta[0] ** 2 + self.h1 * self.theta[1] ** 2
            self.optimizer.apply(tape.gradient(weighted, [self.theta]), [self.theta])
            return {"Q": 1.2 - tf.reduce_sum(self.theta ** 2)}

    return ToyModel()


def gaussian_explore(noise):
    """The paper's explore: `fn(hparams, rng)` adding N(0, noise^2) to each h.

    The result is reflected at 0 (a negative weight would make the surrogate
    unbounded; reflecting, not clipping, keeps a zero weight from staying
    zero half the time, which would leave the copy tied with its parent);
    the space clips it at 1.
    """
    if not noise > 0:
        raise ValueError(f"`noise` must be a positive standard deviation. Received: noise={noise!r}")

    def explore(hparams, rng):
        return {k: abs(v + rng.normal(0.0, noise)) for k, v in hparams.items()}

    return explore


def run(with_pbt, steps=200, interval=4, noise=0.1, seed=0):
    """Trains the two members, in threads, with or without PBT.

    Args:
        with_pbt: exploit and explore every `interval` steps, or train alone.
        steps: SGD steps per member.
        interval: steps per epoch, and so per PBT boundary.
        noise: explore's standard deviation.
        seed: the store's seed.

    Returns:
        A NumPy array (members, epochs): each member's Q after each epoch.
    """
    import keras

    store = keras_pbt.InMemoryStore(seed=seed, synchronous=True, timeout=60)
    q = [[] for _ in H]
    jobs = []
    for i, (h, lr) in enumerate(zip(H, LEARNING_RATES)):
        model = toy_model(h)
        model.compile(keras.optimizers.SGD(lr))
        callbacks = [keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs, q=q[i]: q.append(float(logs["Q"])))]
        if with_pbt:
            callbacks.insert(0, keras_pbt.PBTCallback(
                store, i, SPACE, monitor="Q", mode="max",
                policy=keras_pbt.Policy(quantile=0.5, explore_fn=gaussian_explore(noise)),
                setters={"h0": model.h0, "h1": model.h1}))
        x = np.zeros((interval, 1), "float32")  # one epoch = one interval of steps
        jobs.append((model, dict(x=x, epochs=steps // interval, batch_size=1, verbose=0,
                                 callbacks=callbacks)))
    errors = []

    def fit(model, kwargs):
        try:
            model.fit(**kwargs)
        except Exception as error:  # noqa: BLE001 - re-raised in the caller
            errors.append(error)

    threads = [threading.Thread(target=fit, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return np.array(q)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--interval", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for with_pbt in (False, True):
        q = run(with_pbt, args.steps, args.interval, seed=args.seed)
        print(f"{'PBT  ' if with_pbt else 'alone'}: final Q per member {np.round(q[:, -1], 4).tolist()}")


if __name__ == "__main__":
    main()
