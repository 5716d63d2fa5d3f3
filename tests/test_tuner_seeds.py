"""Each member of a `PBTTuner` search shuffles its data with its own seed, also
when it trains on a model another member built (a worker keeps its model)."""

import keras
import keras_tuner as kt

import keras_pbt
from keras_pbt.tuner import worker as worker_lib
from tests.pbt_helpers import X1
from tests.pbt_helpers import Y1
from tests.pbt_helpers import one_weight_model


class RecordingHyperModel(kt.HyperModel):
    def __init__(self, log):
        super().__init__()
        self.log = log

    def build(self, hp):
        return one_weight_model(keras.optimizers.SGD(
            hp.Float("learning_rate", 1e-3, 1.0, sampling="log")))

    def fit(self, hp, model, *args, **kwargs):
        self.log.append(("fit", hp.values["pbt/member"]))
        return model.fit(*args, **kwargs)


def test_every_member_shuffles_with_its_own_seed_on_a_kept_model(tmp_path, monkeypatch):
    log = []
    make = worker_lib.Worker._data

    def recording_data(self, x, y, sample_weight, batch_size, seed, steps):
        log.append(("pipeline", seed))  # the seed the training pipeline shuffles with
        return make(self, x, y, sample_weight, batch_size, seed, steps)

    monkeypatch.setattr(worker_lib.Worker, "_data", recording_data)
    tuner = keras_pbt.PBTTuner(RecordingHyperModel(log), objective=kt.Objective("loss", "min"),
                               population_size=3, seed=5,
                               directory=str(tmp_path), project_name="seeds", devices=["/cpu:0"])
    tuner.search(X1, Y1, batch_size=2, epochs=3, verbose=0)
    (worker,) = tuner.workers
    assert worker.reuses >= 1  # members trained on a model another one built
    # A fit's pipeline is made inside it (before the next fit) or is the latest one.
    used, fits = None, []
    for kind, value in log:
        if kind == "pipeline":
            used = value
            if fits:
                fits[-1][1] = value
        else:
            fits.append([value, used])
    assert len(fits) == 9
    assert all(seed == 5 * 1000 + member for member, seed in fits), fits
    assert {seed for _, seed in fits} == {5000, 5001, 5002}
