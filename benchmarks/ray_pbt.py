"""keras-pbt against Ray Tune's PopulationBasedTraining on the digits demo.

Per seed, both arms run in this one process, one after the other, on the same
task (examples/digits.py: its data split, its 64-64-10 MLP with SGD, its
SPACE), the same budget (--size members/trials x --epochs epochs, batch 32),
the same initial hyperparameters (drawn once per seed from SPACE and given to
both), and the same PBT settings: a boundary every epoch, truncation with
quantile 0.2, perturbation factors 0.8/1.2 clipped into SPACE (keras-pbt clips;
Ray does not, so its arm clips in a custom_explore_fn), resample probability
0.25, monitor val_accuracy (max), synchronous unless --ray-async.

keras-pbt arm: `keras_pbt.Population(...).fit(...)`, members as threads over 4
logical CPU devices (or the GPUs). Its time covers building the population
and fitting it.

Ray arm: a function trainable per trial (own Ray worker process, 1 CPU each,
so --ray-cpus trials at once; default one per core, which on 2 cores was twice
as fast as running 4 trial processes at once, each with its own TensorFlow
runtime and threads) that trains the same model one epoch per
`tune.report`, with a checkpoint at every report holding the weights and the
optimizer's variables (iterations, learning rate, momentum buffers). A trial
that starts from a checkpoint (an exploit, or a restart after pausing) builds
the model from its current config, loads the weights and the optimizer
variables, then sets the config's learning_rate and momentum on the optimizer
before its first step: the model is fresh, so the train function is traced
after that and sees the new momentum (no forced retrace needed). Its time
covers `Tuner.fit` (trial processes start, import TensorFlow and build their
models inside it); `ray.init` is timed once, apart. Synchronous Ray PBT pauses
every trial at every boundary, so each trial restarts from its checkpoint every
epoch; trial actors are reused (`reuse_actors=True`, not Tune's default, which
starts a new process per restart and was slower still) unless
--no-reuse-actors. Ray's logs, results and checkpoints go to a temporary
directory deleted at the end.

Prints, per seed, each arm's wall time, the ratio Ray / keras-pbt and the best
and mean final val_accuracy of each arm, then the medians over seeds.

    python benchmarks/ray_pbt.py [--seeds 0,1,2] [--epochs 20] [--size 8]
                                 [--ray-cpus N] [--ray-async] [--no-reuse-actors]

Needs `pip install "ray[tune]"` (or `pip install -e ".[bench]"`).
"""

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
sys.path.insert(0, EXAMPLES)

import keras_pbt  # noqa: E402

BATCH_SIZE = 32
QUANTILE = 0.2
FACTORS = (0.8, 1.2)
RESAMPLE_PROBABILITY = 0.25
CPU_DEVICES = 4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated ints, one run of each arm per seed")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, default=8, help="members (keras-pbt) = trials (Ray)")
    parser.add_argument("--ray-cpus", type=int, default=None,
                        help="ray.init(num_cpus=...); each trial takes 1 CPU, so this many trials "
                             "run at once. Defaults to the machine's cores (at most --size)")
    parser.add_argument("--ray-async", action="store_true",
                        help="Ray's asynchronous PBT (synch=False) instead of synchronous")
    parser.add_argument("--no-reuse-actors", action="store_true",
                        help="start a new Ray worker process for every exploited trial "
                             "(Tune's default) instead of reusing the trial's actor")
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers. Received: {args.seeds!r}")
    if not args.seeds:
        parser.error("--seeds must name at least one seed")
    if args.epochs < 2:
        parser.error(f"--epochs must be >= 2 (PBT needs a boundary). Received: {args.epochs}")
    if args.size < 2:
        parser.error(f"--size must be >= 2 (PBT needs a population). Received: {args.size}")
    if args.ray_cpus is None:
        args.ray_cpus = min(args.size, os.cpu_count() or 1)
    if args.ray_cpus < 1:
        parser.error(f"--ray-cpus must be >= 1. Received: {args.ray_cpus}")
    return args


def import_ray():
    try:
        import ray
        from ray import tune
    except ImportError:
        sys.exit('This benchmark needs Ray Tune: pip install "ray[tune]" (or pip install -e ".[bench]").')
    return ray, tune


def initial_hparams(space, size, seed):
    """The population's starting hyperparameters, shared by both arms."""
    import numpy as np

    rng = np.random.default_rng([seed, 7])
    return [keras_pbt.core.space.sample_space(space, rng) for _ in range(size)]


# ---------------------------------------------------------------- keras-pbt


def run_keras_pbt(digits, data, hps, seed, epochs, synchronous):
    """Returns (seconds, final val_accuracy per member, exploits)."""
    (x, y), (xv, yv) = data
    start = time.perf_counter()
    pop = keras_pbt.Population(
        digits.build, digits.SPACE, population_size=len(hps), monitor="val_accuracy", interval=1,
        synchronous=synchronous,
        policy=keras_pbt.Policy(quantile=QUANTILE, factors=FACTORS,
                                resample_probability=RESAMPLE_PROBABILITY),
        devices=keras_pbt.Devices(num_cpu=CPU_DEVICES), seed=seed, initial_hparams=hps,
    )
    pop.fit(x, y, validation_data=(xv, yv), epochs=epochs, batch_size=BATCH_SIZE, verbose=0)
    elapsed = time.perf_counter() - start
    exploits = sum(r.action == "exploit" for r in pop.lineage)
    return elapsed, [h["val_accuracy"][-1] for h in pop.history.values()], exploits


# ---------------------------------------------------------------- Ray Tune


def save_state(model, directory, epoch):
    """Weights, optimizer variables and the epoch count, into `directory`.

    Keras 3's `save_weights` writes the optimizer's variables beside the
    layers' (iterations, learning_rate, one momentum buffer per weight).
    """
    model.save_weights(os.path.join(directory, "model.weights.h5"))
    with open(os.path.join(directory, "state.json"), "w") as f:
        json.dump({"epoch": epoch}, f)


def load_state(model, directory):
    """Loads what `save_state` wrote, optimizer state included; returns the epoch count.

    The optimizer must be built first: `load_weights` skips (with a warning)
    the variables of an optimizer that has none yet. It restores the saved
    learning_rate too, so `apply_hparams` must come after.
    """
    model.optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(directory, "model.weights.h5"))
    with open(os.path.join(directory, "state.json")) as f:
        return json.load(f)["epoch"]


def apply_hparams(model, config):
    """Sets the config's hyperparameters on the optimizer.

    Must run before the train function is traced: `momentum` is a Python float
    baked into the trace (a live model would need
    `model.make_train_function(force=True)` after this).
    """
    model.optimizer.learning_rate.assign(config["learning_rate"])
    model.optimizer.momentum = float(config["momentum"])


def ray_trainable(config, data, epochs):
    """One Ray trial: the digits MLP, one `tune.report` with a checkpoint per epoch."""
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    import keras
    from ray import tune

    import digits

    (x, y), (xv, yv) = data
    model = digits.build(config)
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            start = load_state(model, directory)
    apply_hparams(model, config)

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with tempfile.TemporaryDirectory() as directory:
                save_state(self.model, directory, epoch + 1)
                tune.report({"val_accuracy": float(logs["val_accuracy"])},
                            checkpoint=tune.Checkpoint.from_directory(directory))

    model.fit(x, y, batch_size=BATCH_SIZE, epochs=epochs, initial_epoch=start,
              validation_data=(xv, yv), callbacks=[Report()], verbose=0)


def clip_into(space):
    """A custom_explore_fn clipping perturbed values into `space`, as keras-pbt does."""
    def explore(config):
        for name, spec in space.items():
            config[name] = spec.clip(config[name])
        return config
    return explore


def ray_space(space, tune):
    """SPACE as Ray Tune domains, for hyperparam_mutations and param_space."""
    out = {}
    for name, spec in space.items():
        if isinstance(spec, keras_pbt.LogUniform):
            out[name] = tune.loguniform(spec.low, spec.high)
        elif isinstance(spec, keras_pbt.Uniform):
            out[name] = tune.uniform(spec.low, spec.high)
        else:
            raise TypeError(f"no Ray domain for {name}={spec!r}")
    return out


def run_ray(tune, digits, data, hps, seed, epochs, synchronous, reuse_actors, storage):
    """Returns (seconds, final val_accuracy per trial, exploits)."""
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    import numpy as np

    random.seed(seed)  # Ray's PBT draws its explore/exploit coins from `random`
    np.random.seed(seed)
    domains = ray_space(digits.SPACE, tune)
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration", metric="val_accuracy", mode="max",
        perturbation_interval=1, quantile_fraction=QUANTILE,
        resample_probability=RESAMPLE_PROBABILITY,
        perturbation_factors=(FACTORS[1], FACTORS[0]), hyperparam_mutations=domains,
        custom_explore_fn=clip_into(digits.SPACE), synch=synchronous,
    )
    tuner = tune.Tuner(
        tune.with_parameters(ray_trainable, data=data, epochs=epochs),
        param_space=domains,
        tune_config=tune.TuneConfig(
            scheduler=scheduler, num_samples=len(hps), reuse_actors=reuse_actors,
            search_alg=BasicVariantGenerator(points_to_evaluate=[dict(hp) for hp in hps]),
        ),
        run_config=tune.RunConfig(
            name=f"seed{seed}", storage_path=storage, verbose=0,
            stop={"training_iteration": epochs},
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4),
        ),
    )
    start = time.perf_counter()
    results = tuner.fit()
    elapsed = time.perf_counter() - start
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} Ray trial(s) failed; first: {errors[0]!r}")
    if len(results) != len(hps):
        raise RuntimeError(f"Ray ran {len(results)} trials, expected {len(hps)}")
    finals = [r.metrics["val_accuracy"] for r in results]
    iterations = [r.metrics["training_iteration"] for r in results]
    if min(iterations) != epochs:
        raise RuntimeError(f"Ray trials stopped at iterations {iterations}, expected {epochs}")
    return elapsed, finals, getattr(scheduler, "_num_perturbations", -1)  # -1: unknown


def start_ray(ray, num_cpus, temp_dir):
    """A local Ray cluster, quiet, with its session files under `temp_dir`."""
    import logging

    start = time.perf_counter()
    ray.init(
        num_cpus=num_cpus, num_gpus=0, include_dashboard=False, log_to_driver=False,
        logging_level=logging.ERROR, _temp_dir=temp_dir,
        runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3", "RAY_USAGE_STATS_ENABLED": "0"}},
    )
    return time.perf_counter() - start


# ---------------------------------------------------------------- report


def machine_line():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"machine: {os.cpu_count()} CPU cores, {platform.machine()}, "
            f"{f'{len(gpus)} GPU(s)' if gpus else 'no GPU'}")


def versions_line(ray):
    import keras
    import tensorflow as tf

    return (f"versions: ray {ray.__version__}, tensorflow {tf.__version__}, keras {keras.__version__}, "
            f"python {platform.python_version()}")


def print_table(rows):
    header = (f"{'seed':>5} {'keras-pbt s':>11} {'Ray s':>8} {'Ray/kpbt':>8} "
              f"{'kpbt best':>9} {'kpbt mean':>9} {'Ray best':>8} {'Ray mean':>8}")
    print(header)
    print("-" * len(header))

    def line(label, r):
        print(f"{label:>5} {r['kpbt_s']:11.2f} {r['ray_s']:8.2f} {r['ratio']:8.2f} "
              f"{r['kpbt_best']:9.4f} {r['kpbt_mean']:9.4f} {r['ray_best']:8.4f} {r['ray_mean']:8.4f}")

    for r in rows:
        line(str(r["seed"]), r)
    if len(rows) > 1:
        print("-" * len(header))
        line("median", {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "seed"})


def row(seed, kpbt, ray_):
    (k_s, k_acc, _), (r_s, r_acc, _) = kpbt, ray_
    return {"seed": seed, "kpbt_s": k_s, "ray_s": r_s, "ratio": r_s / k_s,
            "kpbt_best": max(k_acc), "kpbt_mean": statistics.fmean(k_acc),
            "ray_best": max(r_acc), "ray_mean": statistics.fmean(r_acc)}


def main(argv=None):
    args = parse_args(argv)
    ray, tune = import_ray()
    keras_pbt.population.devices.available_devices(num_cpu=CPU_DEVICES)
    import digits

    synchronous = not args.ray_async
    temp = tempfile.mkdtemp(prefix="ray_pbt_")
    try:
        init_s = start_ray(ray, args.ray_cpus, os.path.join(temp, "session"))
        print(machine_line())
        print(versions_line(ray))
        print(f"task: digits MLP, {args.size} members/trials x {args.epochs} epochs, batch {BATCH_SIZE}, "
              f"{'synchronous' if synchronous else 'asynchronous'} PBT every epoch, quantile {QUANTILE}, "
              f"factors {FACTORS}, resample {RESAMPLE_PROBABILITY}")
        print(f"keras-pbt: {args.size} threads over {CPU_DEVICES} logical CPU devices (or the GPUs); "
              f"Ray: num_cpus={args.ray_cpus} (1 CPU per trial, so {min(args.ray_cpus, args.size)} at once), "
              f"reuse_actors={not args.no_reuse_actors}, ray.init took {init_s:.2f} s (not counted)")
        rows = []
        for seed in args.seeds:
            data = digits.load_data(seed)
            hps = initial_hparams(digits.SPACE, args.size, seed)
            kpbt = run_keras_pbt(digits, data, hps, seed, args.epochs, synchronous)
            ray_ = run_ray(tune, digits, data, hps, seed, args.epochs, synchronous,
                           not args.no_reuse_actors, os.path.join(temp, "results"))
            rows.append(row(seed, kpbt, ray_))
            print(f"seed {seed}: keras-pbt {kpbt[0]:.2f} s ({kpbt[2]} exploits), "
                  f"Ray {ray_[0]:.2f} s ({ray_[2]} exploits)", flush=True)
        print()
        print_table(rows)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    main()
