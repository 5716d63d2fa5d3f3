"""keras-tuner + PBT on sklearn's digits: the hypermodel you would give RandomSearch.

    python examples/tuner_digits.py                      # 8 members, 12 epochs, one worker
    python examples/tuner_digits.py --workers 2          # two worker threads on two device slices
    python examples/tuner_digits.py --overwrite          # start again instead of resuming

Interrupt it (Ctrl-C) and run it again: it resumes from the last finished
segment. For keras-tuner's distributed mode, run the same script once per
process with KERASTUNER_TUNER_ID=chief / worker0 / worker1 ...,
KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set, and a shared --directory.

Prints keras-tuner's results summary, the best member's test accuracy, the
hyperparameter schedule its weights were trained with, and the command to
open TensorBoard's PBT lineage tab.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def load_data(seed=0):
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1200], y[:1200]), (x[1200:1500], y[1200:1500]), (x[1500:], y[1500:])


def build_model(hp):
    """A hypermodel exactly as keras-tuner users write one. The tuner finds that
    `units` changes the weights (inherited at an exploit, never explored), that
    `activation`, `dropout` and `nesterov` change the model (explored, rebuilt)
    and that the learning rate and momentum are optimizer values (assigned)."""
    import keras

    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(hp.Int("units", 32, 64, step=32),
                           activation=hp.Choice("activation", ["relu", "tanh"])),
        keras.layers.Dropout(hp.Float("dropout", 0.0, 0.4, step=0.1)),
        keras.layers.Dense(10),
    ])
    model.compile(
        keras.optimizers.SGD(hp.Float("learning_rate", 1e-3, 0.3, sampling="log"),
                             momentum=hp.Float("momentum", 0.0, 0.9, step=0.05),
                             nesterov=hp.Boolean("nesterov")),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--interval", type=int, default=2, help="epochs between PBT decisions")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker threads, one per device slice (logical CPUs without a GPU)")
    parser.add_argument("--directory", default="kt")
    parser.add_argument("--project", default="digits")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    import keras_pbt

    devices = None
    if args.workers > 1:
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            devices = "auto"
        else:
            devices = keras_pbt.configure_cpu_devices(args.workers)

    (x, y), (xv, yv), (xt, yt) = load_data()
    tuner = keras_pbt.PBTTuner(
        build_model,
        objective="val_accuracy",
        population_size=args.population,
        interval=args.interval,
        seed=args.seed,
        devices=devices,
        directory=args.directory,
        project_name=args.project,
        overwrite=args.overwrite,
    )
    start = time.monotonic()
    tuner.search(x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=32, verbose=0)
    elapsed = time.monotonic() - start
    tuner.results_summary(3)

    best_trial = tuner.oracle.get_best_trials(1)[0]
    best_model = tuner.get_best_models(1)[0]
    _, test_accuracy = best_model.evaluate(xt, yt, verbose=0)
    exploits = sum(r.action == "exploit" for r in tuner.oracle.lineage())
    builds = sum(w.builds for w in tuner.workers)
    print(f"\nPBT search: {tuner.training_calls} segments trained in this run in {elapsed:.1f} s "
          f"({builds} models built); {exploits} exploits in all.")
    print(f"Best member {best_trial.hyperparameters['pbt/member']}: val_accuracy="
          f"{best_trial.score:.4f}, test accuracy {test_accuracy:.4f}")
    roles = tuner.roles
    print(f"Inherited with the weights (layout): {list(roles.layout)}; explored, rebuilding "
          f"the model: {list(roles.rebuild)}; explored, assigned: {list(roles.optimizer)}")
    print("Its schedule (optimizer step: values; trained in member, action):")
    for entry in tuner.oracle.schedule(best_trial.hyperparameters["pbt/member"]):
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in entry.hparams.items())
        print(f"  step {entry.step:5d}: {shown}   (member {entry.member_id}, {entry.action}, "
              f"trial {tuner.oracle.trial_of(entry)})")
    print(f"\nOpen TensorBoard: tensorboard --logdir {tuner.logdir} --host 127.0.0.1")


if __name__ == "__main__":
    main()
