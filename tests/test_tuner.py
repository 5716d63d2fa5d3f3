"""PBTTuner on real (tiny) Keras models: the same hypermodel as RandomSearch,
keras-tuner's result methods, checkpoints with optimizer state, resume, device slices."""

import glob
import os
import threading

import keras
import keras_tuner as kt
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

import keras_pbt
from keras_pbt.lineage import PLUGIN_NAME
from keras_pbt.lineage import loads
from keras_pbt.store import Snapshot
from keras_pbt.tuner import checkpoint
from tests.pbt_helpers import X1
from tests.pbt_helpers import Y1


def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return x[:320], y[:320], x[1400:1560], y[1400:1560]


class DigitsHyperModel(kt.HyperModel):
    """Written as keras-tuner users write one; counts its training calls."""

    def __init__(self, interrupt_at=None):
        super().__init__()
        self.calls = 0
        self.finished = []  # (member, segment) of every fit that returned
        self.interrupt_at = interrupt_at
        self.threads = set()
        self.devices = set()

    def build(self, hp):
        model = keras.Sequential([
            keras.Input((64,)),
            keras.layers.Dense(hp.Int("units", 16, 32, step=16),
                               activation=hp.Choice("activation", ["relu", "tanh"])),
            keras.layers.Dropout(hp.Float("dropout", 0.0, 0.3, step=0.1)),
            keras.layers.Dense(10),
        ])
        model.compile(
            keras.optimizers.SGD(hp.Float("learning_rate", 1e-3, 0.5, sampling="log"),
                                 momentum=hp.Float("momentum", 0.0, 0.9, step=0.1),
                                 nesterov=hp.Boolean("nesterov")),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    def fit(self, hp, model, *args, **kwargs):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt("interrupted by the test")
        self.threads.add(threading.current_thread().name)
        self.devices.add(model.weights[0].value.device)
        history = model.fit(*args, batch_size=hp.Int("batch_size", 16, 64, step=16), **kwargs)
        if "pbt/member" in hp.values:
            self.finished.append((hp.values["pbt/member"], hp.values["pbt/segment"]))
        return history


def read_logdir(logdir, member):
    scalars, records = {}, []
    for path in sorted(glob.glob(os.path.join(logdir, f"member_{member}", "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == PLUGIN_NAME:
                    records += loads(tf.make_ndarray(value.tensor).item())
                else:
                    scalars.setdefault(value.tag, []).append(event.step)
    return scalars, records


def test_random_search_and_pbt_tune_the_same_hypermodel(tmp_path, capsys):
    x, y, xv, yv = digits()
    hypermodel = DigitsHyperModel()
    random_search = kt.RandomSearch(hypermodel, objective="val_accuracy", max_trials=2,
                                    directory=str(tmp_path), project_name="random", seed=0)
    random_search.search(x, y, epochs=1, validation_data=(xv, yv), verbose=0)
    assert len(random_search.oracle.trials) == 2 and hypermodel.calls == 2

    tuner = keras_pbt.PBTTuner(hypermodel, objective="val_accuracy", population_size=4,
                               max_epochs=3, interval_epochs=1, quantile=0.25,
                               frozen=["units"], seed=11, directory=str(tmp_path),
                               project_name="pbt")  # seed 11: every member has units=16
    tuner.search(x, y, validation_data=(xv, yv), verbose=0)
    assert hypermodel.calls == 2 + 12 and tuner.training_calls == 12
    trials = tuner.oracle.trials
    assert len(trials) == 12 and {t.status for t in trials.values()} == {"COMPLETED"}

    capsys.readouterr()
    tuner.results_summary(4)
    out = capsys.readouterr().out
    assert out.count("Trial ") == 4 and "pbt/parent_trial" in out and "learning_rate:" in out

    best_trial = tuner.oracle.get_best_trials(1)[0]
    assert best_trial.hyperparameters.values["pbt/segment"] == 2  # a member at the end
    best_model = tuner.get_best_models(1)[0]
    _, accuracy = best_model.evaluate(xv, yv, verbose=0)
    assert accuracy == pytest.approx(best_trial.score, abs=1e-6)   # the trained weights
    assert tuner.get_best_hyperparameters(1)[0].values == best_trial.hyperparameters.values
    assert best_model.optimizer.learning_rate.numpy() == pytest.approx(
        best_trial.hyperparameters.values["learning_rate"])
    # batch_size, declared in HyperModel.fit, joined the space and is explored too.
    assert "batch_size" in tuner.oracle.policy().space

    # trial.json of a segment reads sensibly and its directory holds the checkpoint.
    later = [t for t in trials.values() if t.hyperparameters.values["pbt/segment"] > 0]
    for t in later:
        v = t.hyperparameters.values
        parent = trials[v["pbt/parent_trial"]].hyperparameters.values
        assert parent["pbt/segment"] == v["pbt/segment"] - 1
        if v["pbt/action"] == "keep":
            assert parent["pbt/member"] == v["pbt/member"]
        assert checkpoint.exists(tuner.get_trial_dir(t.trial_id))
    lineage = tuner.oracle.lineage()
    assert [r.action for r in lineage].count("init") == 4
    assert {r.hparams["units"] for r in lineage} == {16}
    # The worst member copies the best at both decisions (a tie would keep, but
    # the worst and the best of 160 validation digits do not tie).
    assert sum(r.action == "exploit" for r in lineage) == 2
    for r in lineage:
        if r.action == "exploit":
            assert r.hparams["units"] == r.hparams_before["units"]  # frozen: same species
    scalars, records = read_logdir(tuner.logdir, 0)
    assert [r.interval for r in records] == [0, 1, 2, 3]
    # Numeric and boolean values become scalars, as in the callback path (not the string choice).
    assert sorted(scalars) == ["pbt/hparams/batch_size", "pbt/hparams/dropout",
                               "pbt/hparams/learning_rate", "pbt/hparams/momentum",
                               "pbt/hparams/nesterov", "pbt/hparams/units", "pbt/val_accuracy"]
    assert scalars["pbt/hparams/learning_rate"][0] == 0
    assert scalars["pbt/val_accuracy"] == sorted(scalars["pbt/val_accuracy"])
    assert len(scalars["pbt/val_accuracy"]) == 3


class OneWeight(kt.HyperModel):
    def build(self, hp):
        model = keras.Sequential([
            keras.Input((1,)),
            keras.layers.Dense(1, use_bias=False, kernel_initializer=keras.initializers.Constant(0.5)),
        ])
        model.compile(keras.optimizers.SGD(hp.Float("lr", 1e-3, 1.0, sampling="log"),
                                           momentum=hp.Float("momentum", 0.0, 0.9)), "mse")
        return model


def test_a_child_trains_from_its_parents_weights_and_slots_with_its_own_hyperparameters(tmp_path):
    tuner = keras_pbt.PBTTuner(OneWeight(), objective="loss", population_size=2, max_epochs=2,
                               directory=str(tmp_path), project_name="p")
    parent = OneWeight().build(_hp(lr=0.1, momentum=0.5))
    parent.fit(X1, Y1, batch_size=8, epochs=3, verbose=0, shuffle=False)
    snap = keras_pbt.snapshot.capture(parent, 0, 3, {"lr": 0.1, "momentum": 0.5})
    checkpoint.save(tuner.get_trial_dir("07"), snap)
    w_p = float(snap.weights[0].ravel()[0])
    v_p = float(snap.optimizer[-1].ravel()[0])   # the momentum slot
    assert v_p != 0.0

    lr, momentum = 0.03, 0.8
    child = tuner._build(_hp(lr=lr, momentum=momentum), None)
    tuner._restore(child, "07", None)
    assert float(child.weights[0].numpy().ravel()[0]) == pytest.approx(w_p)
    assert int(child.optimizer.iterations.numpy()) == 3
    child.fit(X1, Y1, batch_size=8, epochs=1, verbose=0, shuffle=False)
    g = float(np.mean(2 * (w_p * X1 - Y1) * X1))
    expected = w_p + (momentum * v_p - lr * g)          # Keras SGD: v = m v - lr g; w += v
    stale = w_p + (0.5 * v_p - 0.1 * g)
    got = float(child.weights[0].numpy().ravel()[0])
    assert got == pytest.approx(expected, rel=1e-5)
    assert abs(got - stale) > 1e-3


def _hp(**values):
    hp = kt.HyperParameters()
    hp.values.update(values)
    return hp


def test_checkpoint_files_have_no_pickle_and_detect_corruption(tmp_path):
    snap = Snapshot(1, 7, (np.arange(6, dtype="float32").reshape(2, 3),),
                    (np.array(7, "int64"),), {"lr": 0.1}, 0.5,
                    (("weight", "kernel", (2, 3), "float32"), ("optimizer", "iteration", (), "int64")))
    checkpoint.save(tmp_path, snap)
    with np.load(tmp_path / checkpoint.ARRAYS, allow_pickle=False) as data:
        assert sorted(data.files) == ["o0", "w0"]
    back = checkpoint.load(tmp_path)
    assert back.step == 7 and back.layout == snap.layout and back.checksum() == snap.checksum()
    arrays = dict(np.load(tmp_path / checkpoint.ARRAYS))
    arrays["w0"] = arrays["w0"] + 1
    np.savez(tmp_path / checkpoint.ARRAYS, **arrays)
    with pytest.raises(ValueError, match="corrupted"):
        checkpoint.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "nothing")


def test_resume_after_an_interruption_trains_no_finished_segment_again(tmp_path):
    x, y, xv, yv = digits()
    kwargs = dict(objective="val_loss", population_size=3, max_epochs=3, quantile=0.34,
                  frozen=["units"], seed=2, directory=str(tmp_path), project_name="resume")
    first = DigitsHyperModel(interrupt_at=5)
    tuner = keras_pbt.PBTTuner(first, **kwargs)
    with pytest.raises(KeyboardInterrupt):
        tuner.search(x, y, validation_data=(xv, yv), verbose=0)
    assert first.calls == 5 and len(first.finished) == 4
    lineage_before = [r.to_dict() for r in tuner.oracle.lineage()]

    second = DigitsHyperModel()
    tuner = keras_pbt.PBTTuner(second, overwrite=False, **kwargs)
    tuner.search(x, y, validation_data=(xv, yv), verbose=0)
    # 9 segments in all: 4 finished before, the interrupted one and 4 more now.
    assert second.calls == 5
    assert not set(first.finished) & set(second.finished)
    assert sorted(first.finished + second.finished) == [(m, s) for m in range(3) for s in range(3)]
    lineage = tuner.oracle.lineage()
    assert [r.to_dict() for r in lineage[:len(lineage_before)]] == lineage_before
    for m in range(3):
        assert [r.interval for r in lineage if r.member == m] == [0, 1, 2, 3]
        _, records = read_logdir(tuner.logdir, m)     # two runs' event files, one story
        assert [r.interval for r in records] == [0, 1, 2, 3]
    assert {t.status for t in tuner.oracle.trials.values()} == {"COMPLETED"}

    # The PBT lineage tab reads the tuner's run (both processes' event files).
    from tests.test_tensorboard_plugin_routes import _get_json
    from tests.test_tensorboard_plugin_routes import _make_client

    client, _ = _make_client(tuner.logdir, "python")
    shown = _get_json(client, "/data/plugin/pbt_lineage/lineage?experiment=.")
    assert [m["id"] for m in shown["members"]] == [0, 1, 2]
    assert len(shown["records"]) == 12 and shown["monitor"] == "val_loss"
    assert shown["num_exploits"] == sum(r.action == "exploit" for r in lineage)


def test_workers_on_device_slices_share_one_oracle(tmp_path):
    x, y, xv, yv = digits()
    hypermodel = DigitsHyperModel()
    tuner = keras_pbt.PBTTuner(hypermodel, objective="val_loss", population_size=4, max_epochs=2,
                               frozen=["units"], devices=["/cpu:0", "/cpu:1"], seed=1,
                               directory=str(tmp_path), project_name="slices")
    tuner.search(x, y, validation_data=(xv, yv), verbose=0)
    assert hypermodel.calls == 8
    assert len(hypermodel.threads) == 2
    assert {tf.DeviceSpec.from_string(d).device_index for d in hypermodel.devices} == {0, 1}
    assert {t.status for t in tuner.oracle.trials.values()} == {"COMPLETED"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(epochs=3), "epochs"),
    (dict(initial_epoch=1), "initial_epoch"),
])
def test_search_refuses_epochs_it_sets_itself(tmp_path, kwargs, message):
    tuner = keras_pbt.PBTTuner(OneWeight(), objective="loss", population_size=2, max_epochs=2,
                               directory=str(tmp_path), project_name="p")
    with pytest.raises(ValueError, match=message):
        tuner.search(X1, Y1, **kwargs)


def test_a_weight_changing_hyperparameter_that_is_not_frozen_stops_with_advice(tmp_path):
    x, y, xv, yv = digits()

    def build(hp):
        model = keras.Sequential([keras.Input((64,)),
                                  keras.layers.Dense(hp.Int("units", 8, 64, step=8)),
                                  keras.layers.Dense(10)])
        model.compile(keras.optimizers.SGD(hp.Float("lr", 1e-3, 0.1, sampling="log")),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    tuner = keras_pbt.PBTTuner(build, objective="val_loss", population_size=2, max_epochs=3,
                               quantile=0.5, factors=(3.0,), resample_probability=0.0, seed=0,
                               directory=str(tmp_path), project_name="p")
    with pytest.raises(kt.errors.FatalError, match=r"frozen=\[\.\.\.\]"):
        tuner.search(x[:64], y[:64], validation_data=(xv, yv), verbose=0)
