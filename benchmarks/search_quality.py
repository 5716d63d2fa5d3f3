"""Search quality: PBT against random search for the same training compute.

On sklearn's digits, split per seed into train / validation / test (60/20/20),
for two models (the demo's 64-64-10 MLP and a small CNN on the 8x8x1
images), both trained with SGD(learning_rate, momentum) over the demo's
search space:

* PBT: `keras_pbt.Population` of 8 members x E epochs (1x compute: 8E
  member-epochs), ranked on validation accuracy every epoch, synchronous.
* Random search 1x: 8 configurations x E epochs, plain `model.fit`.
* Random search 4x: 32 configurations x E epochs (4x the compute).

The 32 configurations are drawn with `keras_pbt.sample_space` from a seeded
generator; random search 1x uses the first 8 of them and PBT starts from the
same 8 (`initial_hparams`), so PBT and random 1x differ only by exploit and
explore. Random search keeps the configuration with the best final
validation accuracy; PBT keeps its best member. Both selected models are then
scored on the held-out test split: validation accuracy of a selected model is
optimistically biased (PBT selects on it every epoch), test accuracy is the
honest figure. Compute counts training epochs only: PBT also evaluates every
member on validation every epoch, which random search does only at the end.

The goal (issue 6): PBT at 1x compute matches or beats random search at 4x,
judged on the mean over seeds of test (and of validation) accuracy.

The paper's toy example (Jaderberg et al. 2017, Fig. 2): two members with
theta = (0.9, 0.9) ascend the surrogate 1.2 - (h0 theta0^2 + h1 theta1^2)
with h = (1, 0) and (0, 1); the true objective is Q = 1.2 - |theta|^2. PBT
(exploit every 4 steps, explore by Gaussian noise on h) against the same
members trained alone: intervals and steps until the best member reaches
Q >= 1.19.

    python benchmarks/search_quality.py [--seeds 0,1,2] [--epochs 20] [--models mlp,cnn] [--skip-toy]
"""

import argparse
import datetime
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import numpy as np  # noqa: E402

import keras_pbt  # noqa: E402

SIZE = 8  # PBT members = random-search configurations at 1x compute
FACTOR = 4  # random search's larger budget, in multiples of PBT's compute
BATCH_SIZE = 32
CPU_DEVICES = 4

TARGET_Q = 1.19
TOY_INTERVAL = 4  # steps between PBT boundaries (the paper's)
TOY_STEPS = 400
TOY_NOISE = 0.1  # standard deviation of explore's Gaussian noise on h
# The toy itself is examples/paper_toy.py. Its members' step sizes differ
# (0.05, 0.06): equal ones tie the two members' Q at every boundary (the
# problem is symmetric), and keras-pbt only copies a strictly better member,
# so PBT would never exploit. An exploit copies the optimizer's learning-rate
# variable with its state, so after the first one both step with one size.


# ------------------------------------------------------------------ digits


def split_digits(seed):
    """Digits in [0, 1], shuffled with `seed`: dict train/val/test -> (x, y)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = (x / 16.0).astype("float32"), y.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    a, b = int(0.6 * len(x)), int(0.8 * len(x))
    return {"train": (x[:a], y[:a]), "val": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}


def build_cnn(hp):
    """Conv 16 3x3 -> Conv 32 3x3 -> Flatten -> Dense 10 on 8x8x1 images."""
    import keras

    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    import digits

    return digits.compile_sgd(model, hp)


def models():
    """name -> (description, build, input shape)."""
    import digits

    return {
        "mlp": ("64-64-10 MLP (examples/digits.py)", digits.build, (64,)),
        "cnn": ("CNN: Conv16 3x3 -> Conv32 3x3 -> Flatten -> Dense10", build_cnn, (8, 8, 1)),
    }


def reshape(data, shape):
    return {k: (x.reshape((-1,) + shape), y) for k, (x, y) in data.items()}


def accuracy(model, x, y):
    logits = np.asarray(model(x, training=False))
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def scores(model, data):
    """(validation accuracy, test accuracy) of a trained model."""
    return accuracy(model, *data["val"]), accuracy(model, *data["test"])


def draw_configs(space, n, seed):
    rng = np.random.default_rng([seed, 1])
    return [keras_pbt.sample_space(space, rng) for _ in range(n)]


def random_search(build, configs, data, epochs, seed):
    """Trains each configuration alone; returns its (val, test) scores in order."""
    import keras

    results = []
    for i, hp in enumerate(configs):
        keras.utils.set_random_seed(seed * 1000 + i)
        model = build(hp)
        model.fit(*data["train"], epochs=epochs, batch_size=BATCH_SIZE, verbose=0)
        results.append(scores(model, data))
    return results


def select(results):
    """The (val, test) of the configuration with the best validation accuracy
    (the first drawn among ties)."""
    return max(results, key=lambda r: r[0])


def pbt(build, space, configs, data, epochs, seed):
    """PBT from `configs`; returns the best member's (val, test) and the exploit count."""
    import keras

    keras.utils.set_random_seed(seed)
    pop = keras_pbt.Population(
        build, space, size=len(configs), monitor="val_accuracy", interval_epochs=1,
        synchronous=True, num_cpu_devices=CPU_DEVICES, seed=seed, initial_hparams=configs,
        verbose=0,
    )
    pop.fit(*data["train"], validation_data=data["val"], epochs=epochs, batch_size=BATCH_SIZE)
    exploits = sum(r.action == "exploit" for r in pop.lineage)
    return scores(pop.best_model(), data), exploits


def run_seed(build, shape, space, seed, epochs):
    """One seed of one model: a dict arm -> (val, test), plus exploits and times."""
    data = reshape(split_digits(seed), shape)
    configs = draw_configs(space, SIZE * FACTOR, seed)
    start = time.perf_counter()
    pbt_scores, exploits = pbt(build, space, configs[:SIZE], data, epochs, seed)
    pbt_time = time.perf_counter() - start
    start = time.perf_counter()
    trials = random_search(build, configs, data, epochs, seed)
    random_time = time.perf_counter() - start
    return {
        "PBT 1x": pbt_scores,
        "random 1x": select(trials[:SIZE]),
        f"random {FACTOR}x": select(trials),
        "exploits": exploits,
        "pbt time": pbt_time,
        "random time": random_time,
    }


ARMS = ("PBT 1x", "random 1x", f"random {FACTOR}x")


def print_table(name, description, rows, epochs):
    """The model's markdown table, its means and whether the goal is met."""
    print(f"\n### {name}: {description}\n")
    n_val, n_test = (len(y) for _, y in (split_digits(0)[k] for k in ("val", "test")))
    print(f"{epochs} epochs, batch {BATCH_SIZE}; PBT {SIZE} members (1x), random search "
          f"{SIZE} (1x) and {SIZE * FACTOR} ({FACTOR}x) configurations. Accuracy of the selected "
          f"model; {n_val} validation and {n_test} test images (one image = "
          f"{1 / n_test:.4f}).\n")
    header = ["seed"] + [f"{arm} {split}" for arm in ARMS for split in ("val", "test")]
    print("| " + " | ".join(header + ["PBT exploits"]) + " |")
    print("|" + "---|" * (len(header) + 1))
    for seed, row in rows.items():
        cells = [f"{v:.4f}" for arm in ARMS for v in row[arm]]
        print(f"| {seed} | " + " | ".join(cells + [str(row["exploits"])]) + " |")
    means = {arm: np.mean([row[arm] for row in rows.values()], axis=0) for arm in ARMS}
    cells = [f"**{v:.4f}**" for arm in ARMS for v in means[arm]]
    print("| mean | " + " | ".join(cells + [""]) + " |\n")
    big = f"random {FACTOR}x"
    for i, split in ((1, "test"), (0, "val")):
        pbt_mean, big_mean = means["PBT 1x"][i], means[big][i]
        ahead = sum(row["PBT 1x"][i] >= row[big][i] for row in rows.values())
        print(f"Goal (PBT 1x >= random {FACTOR}x, {split} accuracy): "
              f"{'MET' if pbt_mean >= big_mean else 'NOT MET'}: mean {pbt_mean:.4f} vs "
              f"{big_mean:.4f} ({pbt_mean - big_mean:+.4f}); PBT 1x >= random {FACTOR}x in "
              f"{ahead}/{len(rows)} seeds.")
    pbt_time = np.mean([row["pbt time"] for row in rows.values()])
    random_time = np.mean([row["random time"] for row in rows.values()]) / (SIZE * FACTOR)
    print(f"Wall time per seed: PBT {pbt_time:.1f} s; random search {random_time:.1f} s per "
          f"configuration (one after another).")


# ------------------------------------------------------------- toy example


def toy_run(seed, with_pbt):
    """Q of every member after every interval: an array (members, intervals)."""
    import paper_toy

    return paper_toy.run(with_pbt, TOY_STEPS, TOY_INTERVAL, TOY_NOISE, seed)


def first_reach(q):
    """1-based interval at which the best member first has Q >= TARGET_Q, or None."""
    hits = np.flatnonzero(q.max(axis=0) >= TARGET_Q)
    return int(hits[0]) + 1 if len(hits) else None


def toy(seeds):
    import paper_toy

    print(f"\n### Toy example (Jaderberg et al. 2017, Fig. 2): steps to Q >= {TARGET_Q}\n")
    print(f"2 members, h = (1, 0) and (0, 1), SGD step sizes {paper_toy.LEARNING_RATES}, "
          f"PBT boundary every {TOY_INTERVAL} steps, explore |h + N(0, {TOY_NOISE}^2)| clipped at "
          f"1, at most {TOY_STEPS} steps.\n")
    alone = toy_run(seeds[0], with_pbt=False)  # no randomness: the same for every seed
    print("| seed | PBT intervals | PBT steps | PBT best final Q | alone |")
    print("|---|---|---|---|---|")
    reached = []
    for seed in seeds:
        q = toy_run(seed, with_pbt=True)
        n = first_reach(q)
        reached.append(n)
        intervals, steps = (n, n * TOY_INTERVAL) if n else (f"not reached in {q.shape[1]}", "-")
        alone_text = (f"not reached in {TOY_STEPS} steps (best Q "
                      f"{alone.max():.4f})" if first_reach(alone) is None
                      else f"reached at step {first_reach(alone) * TOY_INTERVAL}")
        print(f"| {seed} | {intervals} | {steps} | {q[:, -1].max():.4f} | {alone_text} |")
    done = [n for n in reached if n]
    print(f"\nPBT reached Q >= {TARGET_Q} in {len(done)}/{len(seeds)} seeds"
          + (f", after {np.mean(done):.1f} intervals ({np.mean(done) * TOY_INTERVAL:.0f} steps) "
             "on average." if done else "."))


# -------------------------------------------------------------------- main


def machine():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"{os.cpu_count()} cores, {platform.machine()}, "
            f"{f'{len(gpus)} GPU(s)' if gpus else 'no GPU'}; TensorFlow {tf.__version__}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--skip-toy", action="store_true")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    names = [m for m in args.models.split(",") if m]
    available = models()
    if not seeds or set(names) - set(available):
        parser.error(f"--seeds needs at least one int and --models names from {sorted(available)}. "
                     f"Received: --seeds {args.seeds!r} --models {args.models!r}")
    keras_pbt.devices.available_devices(num_cpu_devices=CPU_DEVICES)

    print("command: python " + " ".join(sys.argv if argv is None else ["search_quality.py"] + argv))
    print(f"machine: {machine()}")
    print(f"keras_pbt {keras_pbt.__version__} from {os.path.dirname(keras_pbt.__file__)}")
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    import digits

    start = time.perf_counter()
    for name in names:
        description, build, shape = available[name]
        rows = {seed: run_seed(build, shape, digits.SPACE, seed, args.epochs) for seed in seeds}
        print_table(name, description, rows, args.epochs)
    if not args.skip_toy:
        toy(seeds)
    print(f"\nTotal {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
