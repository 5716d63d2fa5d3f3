"""Search quality: does PBT hand the user a better model than the tuners a
Keras user would try instead, at what compute? (issues 12 and 19)

For each task of `search_tasks.py` and each seed, every arm gets the same
splits, space, epochs and batch size, and reports the task's metric of the
model it hands back on val / select / test and its compute in trained
epochs (1x = 8 configurations x the task's epochs):

* `random 1x`: the first 8 configurations of the seed, each trained alone
  with plain `fit` (PBT starts from the same 8 values and the same initial
  weights); `random 4x`: 32 configurations. Random search chooses on val
  and select together.
* `hyperband`: keras-tuner's `Hyperband(max_epochs=epochs, factor=3)`;
  `bayesopt`: `BayesianOptimization(max_trials=8)`; each hands back
  `get_best_models(1)[0]`, and `+select` the best on select of its 8 best
  (`search_baselines.py`).
* the PBT arms of `search_arms.ARMS` (default `pbt`, the defaults), 8
  members, synchronous, ranked on `val`, at every interval of `--intervals`
  (epochs between decisions); each hands back `pop.best_model()` (arm
  `<arm> i<interval>`) and `pop.best_model(validation_data=select)`
  (`<arm> i<interval> +select`), see `search_pbt.py`; the interval
  `iterated` is `keras_pbt.Iterated()` (Iterated PBT's restarts).

Everything is cached in `$KERAS_PBT_BENCH_CACHE` (default
`benchmarks/cache/`): baselines by task and seed, PBT runs by task, seed,
interval, arm description and `--label` (the library code they measure).
Seeds and arms can be filled by several invocations, then `--report-only`
prints the tables from the cache without training anything.

    python benchmarks/search_quality.py [--tasks mnist1d-cnn,friedman1-mlp,digits-mlp,digits-cnn]
        [--seeds 0,1,2,3,4] [--arms pbt] [--intervals 1,2,4,iterated] [--label dev]
        [--baselines random,hyperband,bayesopt] [--baselines-only | --pbt-only | --report-only]
        [--fresh] [--toy]
"""

import argparse
import datetime
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import numpy as np  # noqa: E402

import keras_pbt  # noqa: E402
import search_arms  # noqa: E402
import search_baselines  # noqa: E402
import search_pbt  # noqa: E402
import search_report  # noqa: E402
import search_tasks  # noqa: E402

SIZE = search_tasks.SIZE
FACTOR = 4  # random search's larger budget, in multiples of PBT's compute
BASELINES = ("random",) + search_baselines.KERAS_TUNER_ARMS
GOALS_AGAINST = {"mnist1d-cnn": ["random 4x", "hyperband", "bayesopt"]}

TARGET_Q = 1.19
TOY_INTERVAL = 4  # steps between PBT boundaries (the paper's)
TOY_STEPS = 400
TOY_NOISE = 0.1  # standard deviation of explore's Gaussian noise on h
# The toy itself is examples/paper_toy.py. Its members' step sizes differ
# (0.05, 0.06): equal ones tie the two members' Q at every boundary (the
# problem is symmetric), and keras-pbt only copies a strictly better member,
# so PBT would never exploit.


def _interval(text):
    return int(text) if text.isdigit() else text


def run_name(name, interval, label, labels):
    return f"{name} i{interval}" + (f" [{label}]" if len(labels) > 1 else "")


def seed_row(task, seed, opts, log, run=True):
    """One seed of one task: each arm's chosen metrics and compute, each PBT
    run's cache entry, the time of each piece; runs what is missing when `run`."""
    data = task.load(seed) if run else None
    row = {"seed": seed, "arms": {}, "runs": {}, "times": {}}
    arms, times, mode = row["arms"], row["times"], task.mode
    if "random" in opts.baselines:
        trials = search_baselines.random_search(task, seed, SIZE * FACTOR, data, log, opts.fresh,
                                                run=run and opts.do_baselines)
        for n, arm in ((SIZE, "random 1x"), (SIZE * FACTOR, f"random {FACTOR}x")):
            if len(trials) >= n:
                arms[arm] = dict(search_report.choose_random(trials[:n], mode),
                                 compute=sum(t["epochs"] for t in trials[:n]))
                times[arm] = sum(t["time"] for t in trials[:n])
        if len(trials) >= SIZE:
            row["best_alone"] = search_report.best_alone(trials[:SIZE], mode)
    for kind in search_baselines.KERAS_TUNER_ARMS:
        if kind not in opts.baselines:
            continue
        out = search_baselines.keras_tuner_arm(task, seed, kind, data, log, opts.fresh,
                                               run=run and opts.do_baselines)
        if out is not None:
            arms[kind] = dict(out["chosen"], compute=out["compute"])
            arms[f"{kind} +select"] = dict(out["select"], compute=out["compute"])
            times[kind] = out["time"]
    for name in opts.arms:
        arm = search_arms.ARMS[name]
        for interval in arm.intervals or opts.intervals:
            for label in opts.labels:
                info = search_pbt.pbt_run(task, seed, name, arm, interval, label, data, log,
                                          opts.fresh, run=run and opts.do_pbt)
                if info is None:
                    continue
                run_id = run_name(name, interval, label, opts.labels)
                row["runs"][run_id] = info
                times[run_id] = info["time"]
                for choice, got in info["finals"].items():
                    arms[f"{run_id} {choice}".strip()] = dict(got, compute=info["compute"])
    return row


def arm_order(rows):
    first = ["random 1x", f"random {FACTOR}x"] + [
        f"{k}{s}" for k in search_baselines.KERAS_TUNER_ARMS for s in ("", " +select")]
    rest = []
    for row in rows:
        rest += [a for a in row["arms"] if a not in first and a not in rest]
    return first, rest


def report(task, rows):
    """Prints the markdown of one task: arms, goals, per seed, diagnosis, times."""
    base, pbt = arm_order(rows)
    runs = []
    for row in rows:
        runs += [r for r in row["runs"] if r not in runs]
    print(f"\n#### {task.name}: {task.description}\n")
    print(f"{task.epochs} epochs, batch {task.batch_size}, monitor `{task.monitor}` (mode "
          f"{task.mode}), metric {task.metric}; 1x = {SIZE} x {task.epochs} = "
          f"{SIZE * task.epochs} epochs; seeds {[row['seed'] for row in rows]}. The "
          f"{task.metric} of the model each arm hands back; `val` is the split PBT ranks on.\n")
    print(search_report.arm_table(rows, base + pbt, task.mode, SIZE * task.epochs))
    if pbt:
        against = GOALS_AGAINST.get(task.name, ["random 1x"])
        print(f"\nGoals of issue 19 ({task.metric}, mean over seeds):\n")
        print(search_report.goal_table(rows, pbt, task.mode, against))
    print(f"\nTest {task.metric} per seed:\n")
    print(search_report.per_seed_table(rows, base + pbt))
    if runs:
        print("\nDiagnosis (lineage of each PBT run):\n")
        print(search_report.diagnosis(rows, runs))
    times = {}
    for row in rows:
        for piece, seconds in row["times"].items():
            times.setdefault(piece, []).append(seconds)
    print("\nWall time of each piece (seconds):\n")
    print(search_report.time_table(times))
    labels = {}
    for row in rows:
        for info in row["runs"].values():
            labels.setdefault(info["label"], set()).add((info["fingerprint"], info["commit"]))
    for label, made in labels.items():
        print(f"\nLabel `{label}`: keras_pbt " + ", ".join(f"{f} ({c})" for f, c in sorted(made)))


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


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    available = search_tasks.tasks()
    parser.add_argument("--tasks", default=",".join(available))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--arms", default="pbt", help=f"PBT arms, from {sorted(search_arms.ARMS)}")
    parser.add_argument("--intervals", default="1,2,4",
                        help="epochs between PBT decisions, or 'iterated' (keras_pbt.Iterated())")
    parser.add_argument("--baselines", default=",".join(BASELINES))
    parser.add_argument("--label", default="dev",
                        help="the library code the PBT runs measure; several (a,b) to report")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--baselines-only", action="store_true", help="run no PBT arm")
    group.add_argument("--pbt-only", action="store_true", help="run no baseline")
    group.add_argument("--report-only", action="store_true", help="train nothing: the cache")
    parser.add_argument("--fresh", action="store_true", help="retrain what runs, ignoring the cache")
    parser.add_argument("--toy", action="store_true", help="also the paper's toy example")
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds takes integers. Received: --seeds {args.seeds!r}")
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.arms = [a for a in args.arms.split(",") if a]
    args.intervals = [_interval(i) for i in args.intervals.split(",") if i]
    odd = [i for i in args.intervals if not isinstance(i, int) and i != "iterated"]
    if odd:
        parser.error(f"--intervals takes ints and 'iterated'. Received: --intervals {odd!r}")
    args.baselines = [b for b in args.baselines.split(",") if b]
    args.labels = [x for x in args.label.split(",") if x]
    bad = {"--tasks": set(args.tasks) - set(available), "--arms": set(args.arms) - set(search_arms.ARMS),
           "--baselines": set(args.baselines) - set(BASELINES)}
    for flag, unknown in bad.items():
        if unknown:
            parser.error(f"{flag} names {sorted(unknown)}, unknown. Received: {flag} "
                         f"{getattr(args, flag[2:])!r}")
    if not args.seeds or not args.labels:
        parser.error(f"--seeds and --label must not be empty. Received: --seeds {args.seeds!r}, "
                     f"--label {args.label!r}")
    if len(args.labels) > 1 and not args.report_only:
        parser.error(f"Several labels only with --report-only. Received: --label {args.label!r}")
    args.do_baselines = not args.pbt_only
    args.do_pbt = not args.baselines_only
    return args


def main(argv=None):
    args = parse(argv)
    # Read the library's code as it is now, when this process imports it.
    library = f"keras_pbt {search_pbt.library_fingerprint()} ({search_pbt.library_commit()})"
    keras_pbt.population.devices.available_devices(num_cpu=search_pbt.CPU_DEVICES)
    print("command: python " + " ".join(sys.argv if argv is None else ["search_quality.py"] + argv))
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the start")
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; {library}")
    print(f"cache: ${search_tasks.CACHE_ENV}" if os.environ.get(search_tasks.CACHE_ENV)
          else "cache: benchmarks/cache")
    start = time.perf_counter()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    every = search_tasks.tasks()
    for name in args.tasks:
        rows = [seed_row(every[name], seed, args, log, run=not args.report_only)
                for seed in args.seeds]
        report(every[name], rows)
    if args.toy:
        toy(args.seeds)
    print(f"\nTotal {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f} "
          "at the end.")


if __name__ == "__main__":
    main()
