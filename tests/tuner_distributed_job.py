"""One process of a distributed PBTTuner search (chief or worker), for
test_tuner_distributed.py and test_tuner_chief_crash.py.

Role and server come from keras-tuner's own environment variables
(KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT).
Usage: python tuner_distributed_job.py <directory>

Test-only controls (environment variables read by this script, never by
the library):

- PBT_TEST_POPULATION: population size (default 4).
- PBT_TEST_WAIT: see `GatedTuner`.
- PBT_TEST_KILL_CHIEF="<file>:<status>:<n>:<phase>": the chief SIGKILLs
  itself at the n-th write (counted in this process) of a state file named
  `<file>` (`trial.json` or `oracle.json`) that matches `<status>`:
  a trial's status (`RUNNING`, `COMPLETED`), `last` (a COMPLETED trial of a
  member's last segment), `ended` (an `oracle.json` that lists more ended
  trials than when this process started) or `any`. `<phase>` is `before`
  (nothing written), `during` (half of the new file written to a temporary
  file beside it, as an interrupted `atomic_write` leaves it; the old file
  stays) or `after` (written, then killed before anything else).

Each worker appends `[member, segment, trial_id]` to
`<directory>/trained_<tuner_id>.jsonl` for every segment it trained to the
end (its checkpoint written); a segment handed out again and not trained
again (its checkpoint was there) is not appended.
"""

import json
import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner as kt  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_pbt  # noqa: E402

POPULATION = int(os.environ.get("PBT_TEST_POPULATION", "4"))
MAX_EPOCHS = 5


class HyperModel(kt.HyperModel):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def build(self, hp):
        model = keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(16, activation=hp.Choice("activation", ["relu", "tanh"])),
            keras.layers.Dense(10),
        ])
        model.compile(
            keras.optimizers.SGD(hp.Float("learning_rate", 1e-3, 0.5, sampling="log"),
                                 momentum=hp.Float("momentum", 0.0, 0.9, step=0.1)),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    def fit(self, hp, model, *args, **kwargs):
        history = model.fit(*args, **kwargs)
        with open(self.log, "a", encoding="utf-8") as f:
            f.write(json.dumps([hp.values["pbt/member"], hp.values["pbt/segment"]]) + "\n")
        return history


def _lines(path):
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


class GatedTuner(keras_pbt.PBTTuner):
    """Test control through keras-tuner's public `pre_create_trial` hook.

    PBT_TEST_WAIT="<mine>:<other log>:<lines>": once this worker has trained
    `<mine>` segments, it waits (once) until the other worker's log has
    `<lines>` lines before asking for another trial.
    """

    def pre_create_trial(self):
        gate = os.environ.get("PBT_TEST_WAIT")
        if gate and not getattr(self, "_gate_passed", False):
            mine, other, lines = gate.split(":")
            if self.training_calls == int(mine):
                other = os.path.join(self.directory, other)
                while _lines(other) < int(lines):
                    time.sleep(0.2)
                self._gate_passed = True
        super().pre_create_trial()

    def run_trial(self, trial, *args, **kwargs):
        calls = self.training_calls
        logs = super().run_trial(trial, *args, **kwargs)
        if self.training_calls > calls:
            v = trial.hyperparameters.values
            path = os.path.join(self.directory, f"trained_{os.environ['KERASTUNER_TUNER_ID']}.jsonl")
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps([v["pbt/member"], v["pbt/segment"], trial.trial_id]) + "\n")
        return logs


def kill_at_state_write(spec):
    """Makes this process SIGKILL itself at a state write (PBT_TEST_KILL_CHIEF)."""
    from keras_pbt.tuner import state_files

    name, status, n, phase = spec.split(":")
    write = state_files.write_json
    seen = {"count": 0, "ended": None}

    def matches(path, obj):
        if os.path.basename(path) != name:
            return False
        if name == "oracle.json":
            ended = len(obj.get("end_order", []))
            if seen["ended"] is None:
                seen["ended"] = ended
            return status == "any" or (status == "ended" and ended > seen["ended"])
        if status == "last":
            values = obj["hyperparameters"]["values"]
            return obj["status"] == "COMPLETED" and values["pbt/segment"] == MAX_EPOCHS - 1
        return status in ("any", obj["status"])

    def killing_write(path, obj):
        if matches(path, obj):
            seen["count"] += 1
            if seen["count"] == int(n):
                if phase == "during":
                    text = json.dumps(obj)
                    tmp = os.path.join(os.path.dirname(path), ".tmp-killed.part")
                    with open(tmp, "w", encoding="utf-8") as f:
                        f.write(text[: len(text) // 2])
                        f.flush()
                        os.fsync(f.fileno())
                if phase == "after":
                    write(path, obj)
                os.kill(os.getpid(), signal.SIGKILL)
        return write(path, obj)

    state_files.write_json = killing_write


def wait_for_workers(directory, spec):
    """PBT_TEST_READY="<run>:<id>,<id>": waits until every named worker of this run
    has started, so none asks the chief for its first trial after the others
    finished the search (the chief would have stopped serving)."""
    run, names = spec.split(":")

    def path(name):
        return os.path.join(directory, f"ready_{run}_{name}")
    open(path(os.environ["KERASTUNER_TUNER_ID"]), "w").close()
    while not all(os.path.exists(path(name)) for name in names.split(",")):
        time.sleep(0.2)


def main(directory):
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    if os.environ.get("PBT_TEST_KILL_CHIEF") and "chief" in tuner_id:
        kill_at_state_write(os.environ["PBT_TEST_KILL_CHIEF"])
    if os.environ.get("PBT_TEST_READY"):
        wait_for_workers(directory, os.environ["PBT_TEST_READY"])
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    hypermodel = HyperModel(os.path.join(directory, f"ran_{tuner_id}.jsonl"))
    start = time.monotonic()
    tuner = GatedTuner(
        hypermodel, objective="val_loss", population_size=POPULATION,
        policy=keras_pbt.Policy(quantile=0.5), seed=4, directory=directory, project_name="dist",
    )
    tuner.max_idle_sleep = 0.1
    tuner.search(x[:256], y[:256], validation_data=(x[1400:1560], y[1400:1560]),
                 epochs=MAX_EPOCHS, verbose=0)
    with open(os.path.join(directory, f"done_{tuner_id}.json"), "w", encoding="utf-8") as f:
        json.dump({"training_calls": tuner.training_calls, "idle_sleeps": tuner.idle_sleeps[0],
                   "wall": time.monotonic() - start,
                   "cpu": sum(os.times()[:2])}, f)


if __name__ == "__main__":
    main(sys.argv[1])
