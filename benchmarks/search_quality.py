"""Search quality: does PBT hand the user a better model than random search?

For each task of `search_tasks.py` (MNIST-1D's CNN first, then digits' MLP
and CNN) and each seed, every arm gets the same training compute, splits,
space, epochs and batch size:

* random search 1x: the first 8 configurations of the seed, each trained
  alone with plain `fit` (PBT starts from the same 8 values and the same
  initial weights);
* random search 4x: 32 configurations (4x the compute);
* PBT runs of 8 members (1x), deciding every `task.interval` epochs,
  synchronous, ranked on `val`:
  * `pbt`: the defaults (truncation, latest value, perturb/resample);
  * `pbt-mean`: ranked by the mean of the latest 3 evaluations (`ranking="mean"`);
  * `pbt-fire`: half the population ranked by improvement rate (`selection="fire"`);
  * `pb2`: explore by PB2's GP bandit (`explore="pb2"`).

Each PBT run hands back two models: its best member by the last ranked
report (`pop.best_model()`, arm `<run>`), and the best member on the
held-out `select` split (`pop.best_model(validation_data=select)`, arm
`<run> +select`). Random search chooses on `val` and `select` together. The
model each arm hands back is scored once on `test`.

The diagnosis reads each PBT run's lineage: whether the configuration that
ends best when trained alone (by test accuracy) was replaced, and how many
distinct initial configurations survive at each boundary.

Random-search trainings and PBT runs are cached in `benchmarks/cache/`
(keyed by task, seed, epochs and run), so seeds can be filled in several
invocations; `--fresh` ignores the cache.

The paper's toy example (Jaderberg et al. 2017, Fig. 2) is run too.

    python benchmarks/search_quality.py [--tasks mnist1d-cnn,digits-mlp,digits-cnn]
        [--seeds 0,1,2,3,4] [--runs pbt,pbt-mean,pbt-fire,pb2] [--skip-toy] [--fresh]
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import numpy as np  # noqa: E402

import keras_pbt  # noqa: E402
import search_report  # noqa: E402
import search_tasks  # noqa: E402

SIZE = 8  # PBT members = random-search configurations at 1x compute
FACTOR = 4  # random search's larger budget, in multiples of PBT's compute
CPU_DEVICES = 4
RUNS = {
    "pbt": keras_pbt.Policy(),
    "pbt-mean": keras_pbt.Policy(ranking="mean"),
    "pbt-fire": keras_pbt.Policy(selection="fire"),
    "pb2": keras_pbt.Policy(explore="pb2"),
}

TARGET_Q = 1.19
TOY_INTERVAL = 4  # steps between PBT boundaries (the paper's)
TOY_STEPS = 400
TOY_NOISE = 0.1  # standard deviation of explore's Gaussian noise on h
# The toy itself is examples/paper_toy.py. Its members' step sizes differ
# (0.05, 0.06): equal ones tie the two members' Q at every boundary (the
# problem is symmetric), and keras-pbt only copies a strictly better member,
# so PBT would never exploit.


# --------------------------------------------------------------------- PBT


def _run_path(task, seed, run):
    return os.path.join(search_tasks.CACHE_DIR,
                        f"pbt_{task.name}_seed{seed}_e{task.epochs}_{run}.json")


def pbt_run(task, seed, run, data, fresh=False):
    """One PBT run: every final member's scores, both choices, lineage summary."""
    import keras

    path = _run_path(task, seed, run)
    if os.path.exists(path) and not fresh:
        with open(path) as f:
            return json.load(f)
    configs = search_tasks.draw_configs(task.space, SIZE, seed)
    keras.utils.set_random_seed(seed)
    pop = keras_pbt.Population(
        task.build, task.space, population_size=SIZE, monitor="val_accuracy", synchronous=True,
        interval=task.interval, policy=RUNS[run], devices=keras_pbt.Devices(num_cpu=CPU_DEVICES),
        seed=seed, initial_hparams=configs,
    )
    start = time.perf_counter()
    pop.fit(*data["train"], validation_data=data["val"], epochs=task.epochs,
            batch_size=task.batch_size, validation_freq=task.interval, verbose=0)
    elapsed = time.perf_counter() - start
    members = {m.member_id: search_tasks.scores(m.model, data) for m in pop.members}
    chosen = pop.best_model(validation_data=data["select"], batch_size=500)
    out = {
        "members": {str(k): v for k, v in members.items()},
        "last": str(pop.best_member.member_id),
        "select": str(next(m.member_id for m in pop.members if m.model is chosen)),
        "exploits": sum(r.action == "exploit" for r in pop.lineage),
        "time": elapsed,
        **search_report.lineage_summary(pop.lineage, SIZE, task.epochs // task.interval),
    }
    out["replaced"] = {str(k): v for k, v in out["replaced"].items()}
    os.makedirs(search_tasks.CACHE_DIR, exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f)
    return out


def run_seed(task, seed, runs, fresh=False, log=print):
    """One seed of one task: dict with each arm's chosen scores and each run's lineage."""
    data = task.load(seed)
    trials = search_tasks.random_search(task, seed, SIZE * FACTOR, data, log=log)
    alone = trials[:SIZE]
    arms = {"random 1x": search_report.choose_random(alone),
            f"random {FACTOR}x": search_report.choose_random(trials)}
    row = {"seed": seed, "arms": arms, "runs": {},
           "best_alone": int(np.argmax([t["test"] for t in alone]))}
    for run in runs:
        info = pbt_run(task, seed, run, data, fresh)
        row["runs"][run] = info
        arms[run] = info["members"][info["last"]]
        arms[f"{run} +select"] = info["members"][info["select"]]
        log(f"  {task.name} seed {seed} {run}: test {arms[run]['test']:.4f}, +select "
            f"{arms[f'{run} +select']['test']:.4f} ({info['exploits']} exploits, "
            f"{info['time']:.0f} s)")
    return row


def report(task, rows, runs):
    arms = ["random 1x", f"random {FACTOR}x"] + [a for r in runs for a in (r, f"{r} +select")]
    print(f"\n### {task.name}: {task.description}\n")
    print(f"{task.epochs} epochs, batch {task.batch_size}, PBT decisions every {task.interval} "
          f"epochs; PBT {SIZE} members (1x), random search {SIZE} (1x) and {SIZE * FACTOR} "
          f"({FACTOR}x); seeds {[row['seed'] for row in rows]}. Accuracy of the model each arm "
          "hands back; `val` is the split PBT ranks on.\n")
    print(search_report.arm_table(rows, arms, "random 1x", f"random {FACTOR}x"))
    print("\nTest accuracy per seed:\n")
    print(search_report.per_seed_table(rows, arms))
    print("\nDiagnosis (lineage of each PBT run):\n")
    print(search_report.diagnosis(rows, runs))
    best = max(max(m["test"] for m in row["runs"][r]["members"].values())
               for row in rows for r in runs)
    print(f"\nBest test accuracy of any final PBT member: {best:.4f}.")


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
    parser.add_argument("--tasks", default="mnist1d-cnn,digits-mlp,digits-cnn")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--skip-toy", action="store_true")
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--pbt-only", action="store_true",
                        help="only fill the cache with the PBT runs (no random search, no report)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    available = search_tasks.tasks()
    names = [t for t in args.tasks.split(",") if t]
    runs = [r for r in args.runs.split(",") if r]
    if not seeds or set(names) - set(available) or set(runs) - set(RUNS):
        parser.error(f"--seeds needs ints, --tasks names from {sorted(available)}, --runs from "
                     f"{sorted(RUNS)}. Received: --seeds {args.seeds!r} --tasks {args.tasks!r} "
                     f"--runs {args.runs!r}")
    keras_pbt.population.devices.available_devices(num_cpu=CPU_DEVICES)
    print("command: python " + " ".join(sys.argv if argv is None else ["search_quality.py"] + argv))
    print(f"machine: {machine()}")
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}")
    start = time.perf_counter()
    if args.pbt_only:
        for name in names:
            for seed in seeds:
                data = available[name].load(seed)
                for run in runs:
                    info = pbt_run(available[name], seed, run, data, args.fresh)
                    print(f"{name} seed {seed} {run}: {info['exploits']} exploits, "
                          f"{info['time']:.0f} s", flush=True)
        return
    for name in names:
        task = available[name]
        rows = [run_seed(task, seed, runs, args.fresh, log=lambda s: print(s, file=sys.stderr))
                for seed in seeds]
        report(task, rows, runs)
    if not args.skip_toy:
        toy(seeds)
    print(f"\nTotal {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
