"""One process of a distributed PBTTuner search (chief or worker), for test_tuner_distributed.py.

Role and server come from keras-tuner's own environment variables
(KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP, KERASTUNER_ORACLE_PORT).
Usage: python tuner_distributed_job.py <directory>
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner as kt  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_pbt  # noqa: E402

POPULATION = 4
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


def main(directory):
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
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
