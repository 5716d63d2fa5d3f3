"""What `Population(checkpoint_dir=...)` costs, and what the tuner's state files cost.

Two measurements, for issue 21 (should a population checkpoint by default?
what does writing the tuner's state atomically cost per segment?):

1. `population`: the digits demo's population (8 members over 4 logical CPU
   devices, SGD learning rate and momentum, a decision every epoch)
   trained with and without `checkpoint_dir`, alternating in this one
   process. Also, inside the checkpointed runs, the seconds each member
   spent writing its files (`member_checkpoint.save_member`: capture,
   encode, write, two `fsync`s), against the fit's wall time.
2. `tuner-state`: a `PBTOracle` with no model at all driven through
   segments by hand (create, update, end, as a worker's calls arrive at the
   chief): the seconds its state writes take per segment. Run it once with
   this checkout and once with an older one on PYTHONPATH to compare
   keras-tuner's in-place writes with the atomic ones.

    python benchmarks/checkpoint_cost.py population [--repeats 3] [--epochs 10]
    python benchmarks/checkpoint_cost.py tuner-state [--members 8] [--segments 10]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def population(args):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
    import digits

    import keras_pbt
    from keras_pbt.population import member_checkpoint

    spent = []
    save = member_checkpoint.save_member

    def timed_save(*a, **k):
        start = time.perf_counter()
        try:
            return save(*a, **k)
        finally:
            spent.append(time.perf_counter() - start)

    member_checkpoint.save_member = timed_save
    (x, y), (xv, yv) = digits.load_data(0)
    times = {"none": [], "checkpoint": []}
    shares, sizes = [], []
    for repeat in range(args.repeats):
        for arm in ("none", "checkpoint") if repeat % 2 == 0 else ("checkpoint", "none"):
            directory = tempfile.mkdtemp(prefix="pbt-ck-")
            spent.clear()
            pop = keras_pbt.Population(digits.build, digits.SPACE, population_size=args.members,
                                       monitor="val_accuracy", devices=keras_pbt.Devices(num_cpu=4),
                                       seed=repeat)
            start = time.monotonic()
            pop.fit(x, y, validation_data=(xv, yv), epochs=args.epochs, batch_size=32, verbose=0,
                    checkpoint_dir=directory if arm == "checkpoint" else None)
            wall = time.monotonic() - start
            times[arm].append(wall)
            if arm == "checkpoint":
                per_member = sum(spent) / args.members
                shares.append(per_member / wall)
                sizes.append(sum(os.path.getsize(os.path.join(r, f))
                                 for r, _, fs in os.walk(directory) for f in fs))
                print(f"{arm:>10}: {wall:6.1f} s; {len(spent)} member saves, "
                      f"{1000 * statistics.mean(spent):.1f} ms each; a member spent "
                      f"{per_member:.2f} s writing ({100 * per_member / wall:.1f} % of the fit); "
                      f"{sizes[-1] / 1e6:.2f} MB on disk", flush=True)
            else:
                print(f"{arm:>10}: {wall:6.1f} s", flush=True)
            shutil.rmtree(directory, ignore_errors=True)
    ratio = statistics.median(times["checkpoint"]) / statistics.median(times["none"])
    pairs = [c / n for c, n in zip(times["checkpoint"], times["none"])]
    print(f"median wall: none {statistics.median(times['none']):.1f} s, checkpoint "
          f"{statistics.median(times['checkpoint']):.1f} s, ratio {ratio:.3f} "
          f"(per repeat {[round(p, 3) for p in pairs]}); writing share of the fit, median "
          f"{100 * statistics.median(shares):.1f} %")


def tuner_state(args):
    import keras_tuner as kt
    from keras_tuner.engine.base_tuner import BaseTuner

    from keras_pbt.tuner import PBTOracle

    hp = kt.HyperParameters()
    hp.Float("lr", 1e-3, 1e-1, sampling="log")
    directory = tempfile.mkdtemp(prefix="pbt-state-")
    oracle = PBTOracle(objective=kt.Objective("score", "max"), hyperparameters=hp,
                       population_size=args.members, max_epochs=args.segments, seed=0)
    BaseTuner(oracle=oracle, directory=directory, project_name="p")
    oracle.verbose = 0
    per_segment = []
    for segment in range(args.segments):
        start = time.perf_counter()
        trials = [oracle.create_trial(f"w{m}") for m in range(args.members)]
        for m, trial in enumerate(trials):
            oracle.update_trial(trial.trial_id, {"score": float(m + segment), "pbt/step": 10})
            trial.status = "COMPLETED"
            oracle.end_trial(trial)
        per_segment.append((time.perf_counter() - start) / args.members)
    shutil.rmtree(directory, ignore_errors=True)
    import keras_pbt

    print(f"{keras_pbt.__file__}: {1000 * statistics.median(per_segment):.2f} ms of oracle calls "
          f"per segment (median over {args.segments} generations of {args.members}; "
          f"min {1000 * min(per_segment):.2f}, max {1000 * max(per_segment):.2f})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["population", "tuner-state"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--segments", type=int, default=10)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    population(args) if args.what == "population" else tuner_state(args)


if __name__ == "__main__":
    main()
