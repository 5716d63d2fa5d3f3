"""PBT on sklearn's digits: 8 members over the GPUs or 4 logical CPU devices.

Run with `make demo`, or:

    python examples/digits.py --epochs 20 --size 8 --logdir runs/digits

CI runs it smaller, under JAX without TensorFlow: `--size 4 --epochs 6`
(tests/notf_demo.sh).

Prints the population's progress, the best member, the hyperparameter
schedule PBT found for it, and the command to open TensorBoard.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_pbt  # noqa: E402


def load_data(seed=0):
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    return (x[:split], y[:split]), (x[split:], y[split:])


def build(hp):
    import keras

    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])
    return compile_sgd(model, hp)


def compile_sgd(model, hp):
    """Compiles a digits classifier with SGD(hp learning_rate, momentum); returns it."""
    import keras

    model.compile(
        keras.optimizers.SGD(hp["learning_rate"], momentum=hp["momentum"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


SPACE = {
    "learning_rate": keras_pbt.LogUniform(1e-3, 0.3),
    "momentum": keras_pbt.Uniform(0.0, 0.95),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--cpu-devices", type=int, default=4)
    parser.add_argument("--logdir", default="runs/digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--asynchronous", action="store_true")
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)

    (x, y), (xv, yv) = load_data(args.seed)
    pop = keras_pbt.Population(
        build, SPACE, population_size=args.size, monitor="val_accuracy", interval=1,
        synchronous=not args.asynchronous, devices=keras_pbt.Devices(num_cpu=args.cpu_devices),
        logdir=args.logdir, seed=args.seed,
    )
    print(f"{args.size} members on {sorted({d for m in pop.members for d in m.devices})}")
    start = time.monotonic()
    pop.fit(x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=32, verbose=args.verbose)
    elapsed = time.monotonic() - start
    best = pop.best_member
    print(f"\nBest member: {best.member_id} with val_accuracy={best.last_metric:.4f} "
          f"after {args.epochs} epochs ({elapsed:.1f} s)")
    print("Its hyperparameter schedule (step: learning_rate, momentum; taken from):")
    for entry in keras_pbt.ancestry(pop.lineage, best.member_id):
        hp = entry.hparams
        print(f"  step {entry.step:>5}: learning_rate={hp['learning_rate']:.4g} "
              f"momentum={hp['momentum']:.3f}   ({entry.action} in member {entry.member_id})")
    print(f"\nOpen TensorBoard: tensorboard --logdir {args.logdir} --host 127.0.0.1")
    return pop


if __name__ == "__main__":
    main()
