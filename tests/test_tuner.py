"""PBTTuner on real (tiny) Keras models: the same hypermodel as RandomSearch,
keras-tuner's result methods, checkpoints with optimizer state, resume, device slices."""

import glob
import hashlib
import json
import os
import threading

import keras
import keras_tuner as kt
import numpy as np
import pytest
from tensorboard.util import tensor_util
from sklearn.datasets import load_digits

import keras_pbt
from keras_pbt.core.lineage import PLUGIN_NAME
from keras_pbt.core.lineage import loads
from keras_pbt.storage.checkpoint import CheckpointError
from keras_pbt.storage.events import read_events
from keras_pbt.storage.payload import Snapshot
from keras_pbt.tuner import snapshots
from keras_pbt.tuner.worker import Worker
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
        for event in read_events(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == PLUGIN_NAME:
                    records += loads(tensor_util.make_ndarray(value.tensor).item())
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
                               interval=1, policy=keras_pbt.Policy(quantile=0.25),
                               frozen=["units"], seed=11,  # seed 11: every member has units=16
                               directory=str(tmp_path), project_name="pbt")
    tuner.search(x, y, validation_data=(xv, yv), epochs=3, verbose=0)
    assert hypermodel.calls == 2 + 12 and tuner.training_calls == 12
    # Found by building the hypermodel with neighbouring values: units changes the
    # weights; activation, the dropout rate and nesterov the model; the rest the optimizer.
    assert tuner.roles.layout == ("units",)
    assert set(tuner.roles.rebuild) == {"activation", "dropout", "nesterov"}
    assert tuner.roles.optimizer == {"learning_rate": "learning_rate", "momentum": "momentum"}
    # One worker kept a model per architecture; 4 initial segments built.
    assert tuner.workers[0].builds >= 4 and tuner.workers[0].reuses >= 1
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
    assert "batch_size" in tuner.oracle.engine.space

    # trial.json of a segment reads sensibly and its directory holds the checkpoint.
    later = [t for t in trials.values() if t.hyperparameters.values["pbt/segment"] > 0]
    for t in later:
        v = t.hyperparameters.values
        parent = trials[v["pbt/parent_trial"]].hyperparameters.values
        assert parent["pbt/segment"] == v["pbt/segment"] - 1
        if v["pbt/action"] == "keep":
            assert parent["pbt/member"] == v["pbt/member"]
        assert snapshots.exists(tuner.get_trial_dir(t.trial_id))
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


def _trial(trial_id, member, parent, **values):
    hp = kt.HyperParameters()
    hp.values.update(values)
    hp.values.update({"pbt/member": member, "pbt/parent_trial": parent})
    return kt.engine.trial.Trial(hp, trial_id=trial_id)


def _sgd_step(w, v, lr, momentum):
    g = float(np.mean(2 * (w * X1 - Y1) * X1))
    v = momentum * v - lr * g                 # Keras SGD: v = m v - lr g; w += v
    return w + v, v


@pytest.mark.all_backends
def test_a_child_trains_from_its_parents_weights_and_slots_with_its_own_hyperparameters(tmp_path):
    tuner = keras_pbt.PBTTuner(OneWeight(), objective="loss", population_size=2,
                               directory=str(tmp_path), project_name="p")
    tuner.roles = tuner._find_roles(None)
    assert tuner.roles.optimizer == {"lr": "learning_rate", "momentum": "momentum"}
    parent = OneWeight().build(_hp(lr=0.1, momentum=0.5))
    parent.fit(X1, Y1, batch_size=8, epochs=3, verbose=0, shuffle=False)
    snap = keras_pbt.runtime.snapshot.capture(parent, 0, 3, {"lr": 0.1, "momentum": 0.5})
    snapshots.save(tuner.get_trial_dir("07"), snap)
    w_p = float(snap.weights[0].ravel()[0])
    v_p = float(snap.optimizer[-1].ravel()[0])   # the momentum slot
    assert v_p != 0.0

    worker = Worker("w", None, max_models=2)
    lr, momentum = 0.03, 0.8
    model = tuner._member_model(worker, _trial("08", 1, "07", lr=lr, momentum=momentum)).model
    assert float(model.weights[0].numpy().ravel()[0]) == pytest.approx(w_p)
    assert int(model.optimizer.iterations.numpy()) == 3
    model.fit(X1, Y1, batch_size=8, epochs=1, verbose=0, shuffle=False)
    expected, _ = _sgd_step(w_p, v_p, lr, momentum)
    stale, _ = _sgd_step(w_p, v_p, 0.1, 0.5)
    got = float(model.weights[0].numpy().ravel()[0])
    assert got == pytest.approx(expected, rel=1e-5)
    assert abs(got - stale) > 1e-3

    # The next segment of another member with the parent's state goes into the same
    # model (same layout, no rebuild, no retrace) with its own values.
    train_function = model.train_function
    kept = tuner._member_model(worker, _trial("09", 0, "07", lr=0.2, momentum=0.3))
    assert kept.model is model and (worker.builds, worker.reuses) == (1, 1)
    assert float(model.weights[0].numpy().ravel()[0]) == pytest.approx(w_p)
    model.fit(X1, Y1, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert model.train_function is train_function
    expected, _ = _sgd_step(w_p, v_p, 0.2, 0.3)
    assert float(model.weights[0].numpy().ravel()[0]) == pytest.approx(expected, rel=1e-5)


def _hp(**values):
    hp = kt.HyperParameters()
    hp.values.update(values)
    return hp


def test_snapshots_use_keras_pbts_checkpoint_format(tmp_path):
    snap = Snapshot(1, 7, (np.arange(6, dtype="float32").reshape(2, 3),),
                    (np.array(7, "int64"),), {"lr": 0.1, "act": "relu"}, float("nan"),
                    (("weight", "kernel", (2, 3), "float32"), ("optimizer", "iteration", (), "int64")))
    snapshots.save(tmp_path, snap)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "keras_pbt.storage.checkpoint"
    entry = manifest["body"]["files"][0]
    data = (tmp_path / snapshots.FILE).read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    with np.load(tmp_path / snapshots.FILE, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["meta", "o00000", "w00000"]
        meta = json.loads(npz["meta"].tobytes())
    assert meta["snapshot"]["metric"] == "NaN"   # keras_pbt.core.lineage's spelling
    assert meta["snapshot"]["num_weights"] == 1 and meta["snapshot"]["member_id"] == 1
    back = snapshots.load(tmp_path)
    assert back.step == 7 and back.layout == snap.layout and back.hparams == snap.hparams
    assert back.checksum() == snap.checksum() and np.isnan(back.metric)
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    (tmp_path / snapshots.FILE).write_bytes(bytes(corrupt))
    with pytest.raises(CheckpointError, match=snapshots.FILE):
        snapshots.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        snapshots.load(tmp_path / "nothing")


def test_resume_after_an_interruption_trains_no_finished_segment_again(tmp_path):
    x, y, xv, yv = digits()
    kwargs = dict(objective="val_loss", population_size=3, policy=keras_pbt.Policy(quantile=0.34),
                  frozen=["units"], seed=2, directory=str(tmp_path), project_name="resume")
    first = DigitsHyperModel(interrupt_at=5)
    tuner = keras_pbt.PBTTuner(first, **kwargs)
    with pytest.raises(KeyboardInterrupt):
        tuner.search(x, y, validation_data=(xv, yv), epochs=3, verbose=0)
    assert first.calls == 5 and len(first.finished) == 4
    lineage_before = [r.to_dict() for r in tuner.oracle.lineage()]

    second = DigitsHyperModel()
    tuner = keras_pbt.PBTTuner(second, overwrite=False, **kwargs)
    tuner.search(x, y, validation_data=(xv, yv), epochs=3, verbose=0)
    # 9 segments in all: 4 finished before, the interrupted one and 4 more now.
    assert second.calls == 5
    assert not set(first.finished) & set(second.finished)
    assert sorted(first.finished + second.finished) == [(m, s) for m in range(3) for s in range(3)]
    lineage = tuner.oracle.lineage()
    assert [r.to_dict() for r in lineage[:len(lineage_before)]] == lineage_before
    for m in range(3):
        assert [r.interval for r in lineage if r.member_id == m] == [0, 1, 2, 3]
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


@pytest.mark.tensorflow_only(reason="TensorFlow's logical CPU devices and device names")
def test_workers_on_device_slices_share_one_oracle(tmp_path):
    x, y, xv, yv = digits()
    hypermodel = DigitsHyperModel()
    tuner = keras_pbt.PBTTuner(hypermodel, objective="val_loss", population_size=4,
                               frozen=["units"], seed=1, devices=["/cpu:0", "/cpu:1"],
                               directory=str(tmp_path), project_name="slices")
    tuner.search(x, y, validation_data=(xv, yv), epochs=2, verbose=0)
    assert hypermodel.calls == 8
    assert len(hypermodel.threads) == 2
    import tensorflow as tf

    assert {tf.DeviceSpec.from_string(d).device_index for d in hypermodel.devices} == {0, 1}
    assert {t.status for t in tuner.oracle.trials.values()} == {"COMPLETED"}


def test_search_takes_epochs_as_the_budget_and_refuses_another(tmp_path):
    tuner = keras_pbt.PBTTuner(OneWeight(), objective="loss", population_size=2,
                               directory=str(tmp_path), project_name="p")
    with pytest.raises(ValueError, match="Received: epochs=None"):
        tuner.search(X1, Y1, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="initial_epoch"):
        tuner.search(X1, Y1, epochs=2, initial_epoch=1)
    tuner.search(X1, Y1, epochs=2, batch_size=8, verbose=0)
    assert tuner.oracle.max_epochs == 2 and len(tuner.oracle.trials) == 4
    # A resumed search keeps its budget.
    resumed = keras_pbt.PBTTuner(OneWeight(), objective="loss", population_size=2,
                                 overwrite=False, directory=str(tmp_path), project_name="p")
    with pytest.raises(ValueError, match=r"max_epochs=2 .*Received: epochs=3"):
        resumed.search(X1, Y1, epochs=3)
    resumed.search(X1, Y1, epochs=2, batch_size=8, verbose=0)
    assert len(resumed.oracle.trials) == 4 and resumed.training_calls == 0


def build_getting_started(hp):
    """keras-tuner's getting-started hypermodel (keras.io/keras_tuner/getting_started)."""
    model = keras.Sequential()
    model.add(keras.layers.Flatten())
    model.add(
        keras.layers.Dense(
            units=hp.Int("units", min_value=32, max_value=256, step=32),
            activation=hp.Choice("activation", ["relu", "tanh"]),
        )
    )
    if hp.Boolean("dropout"):
        model.add(keras.layers.Dropout(rate=0.25))
    model.add(keras.layers.Dense(10, activation="softmax"))
    learning_rate = hp.Float("lr", min_value=1e-4, max_value=1e-2, sampling="log")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


@pytest.mark.all_backends
def test_keras_tuners_getting_started_hypermodel_runs_unchanged(tmp_path):
    x, y, xv, yv = digits()
    y, yv = keras.utils.to_categorical(y, 10), keras.utils.to_categorical(yv, 10)
    tuner = keras_pbt.PBTTuner(build_getting_started, objective="val_accuracy",
                               population_size=4, seed=3,
                               directory=str(tmp_path), project_name="gs", policy=keras_pbt.Policy(quantile=0.25), interval=2)
    tuner.search(x, y, epochs=6, validation_data=(xv, yv), verbose=0)
    assert tuner.roles.layout == ("units",)
    assert set(tuner.roles.rebuild) == {"activation", "dropout"}
    assert tuner.roles.optimizer == {"lr": "learning_rate"}
    assert tuner.oracle.inherited == ("units",)
    trials = tuner.oracle.trials
    assert len(trials) == 12 and {t.status for t in trials.values()} == {"COMPLETED"}
    lineage = tuner.oracle.lineage()
    units = {r.member_id: r.hparams["units"] for r in lineage if r.action == "init"}
    assert len(set(units.values())) > 1
    assert sum(r.action == "exploit" for r in lineage) == 2
    spread = 0
    for r in lineage[4:]:   # decisions in order; units: each member's width now
        if r.action == "exploit":  # the architecture comes with the weights, never explored
            assert r.hparams["units"] == units[r.parent] and "units" not in r.ops
            assert {"activation", "dropout", "lr"} == set(r.ops)
            spread += units[r.member_id] != r.hparams["units"]
            units[r.member_id] = r.hparams["units"]
        assert r.hparams["units"] == units[r.member_id]
    assert spread >= 1   # with seed 3 a member took another width: the architecture spread
    best_trial = tuner.oracle.get_best_trials(1)[0]
    best_model = tuner.get_best_models(1)[0]
    assert best_model.layers[1].units == best_trial.hyperparameters.values["units"]
    _, accuracy = best_model.evaluate(xv, yv, verbose=0)
    assert accuracy == pytest.approx(best_trial.score, abs=1e-6)


class Conditional(kt.HyperModel):
    def build(self, hp):
        kind = hp.Choice("kind", ["narrow", "wide"])
        with hp.conditional_scope("kind", ["wide"]):
            width = hp.Int("width", 32, 64, step=32)
        model = keras.Sequential([keras.Input((64,)),
                                  keras.layers.Dense(width if kind == "wide" else 8),
                                  keras.layers.Dense(10)])
        lr = hp.Float("lr", 1e-3, 0.3, sampling="log")
        momentum = hp.Float("momentum", 0.1, 0.9, parent_name="kind", parent_values=["narrow"])
        model.compile(keras.optimizers.SGD(lr, momentum=momentum or 0.0),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model


def test_conditional_hyperparameters_work(tmp_path):
    x, y, xv, yv = digits()
    tuner = keras_pbt.PBTTuner(Conditional(), objective="val_loss", population_size=4, seed=1, directory=str(tmp_path), project_name="c", policy=keras_pbt.Policy(quantile=0.5))
    tuner.search(x[:128], y[:128], epochs=3, validation_data=(xv, yv), batch_size=32, verbose=0)
    assert tuner.roles.layout == ("kind", "width")
    assert tuner.roles.optimizer == {"lr": "learning_rate", "momentum": "momentum"}
    trials = tuner.oracle.trials.values()
    assert len(trials) == 12 and {t.status for t in trials} == {"COMPLETED"}
    kinds = set()
    for t in trials:
        v = t.hyperparameters.values
        kinds.add(v["kind"])
        assert ("width" in v) == (v["kind"] == "wide")
        assert ("momentum" in v) == (v["kind"] == "narrow")
    assert kinds == {"narrow", "wide"}
    for r in tuner.oracle.lineage():
        if r.action == "exploit":
            assert "kind" not in r.ops and "width" not in r.ops
            assert ("momentum" in r.ops) == (r.hparams["kind"] == "narrow")


class IdleTuner(keras_pbt.PBTTuner):
    """Another worker (driven by hand) holds member 0's only segment; it ends it
    once this tuner's lone worker has waited `waits` times."""

    waits = 6

    def _idle_wait(self, worker, ready=None):
        waited = super()._idle_wait(worker, ready)
        if waited and len(worker.idle_sleeps) == self.waits:
            self.held.status = "COMPLETED"
            self.oracle.update_trial(self.held.trial_id, {"loss": 1.0})
            self.oracle.end_trial(self.held)
        return waited


def test_a_lone_worker_backs_off_while_it_waits_for_another(tmp_path):
    tuner = IdleTuner(OneWeight(), objective="loss", population_size=2,
                      directory=str(tmp_path), project_name="idle")
    tuner.pbt_oracle.set_max_epochs(1)
    tuner.held = tuner.oracle.create_trial("other")       # member 0, running elsewhere
    assert tuner.held.hyperparameters.values["pbt/member"] == 0
    assert tuner.max_idle_sleep == 0.25
    tuner.search(X1, Y1, batch_size=8, epochs=1, verbose=0)
    assert tuner.training_calls == 1
    # After its own segment, nothing to hand out: 0.05 s, doubling up to max_idle_sleep.
    assert tuner.idle_sleeps == [[0.05, 0.1, 0.2, 0.25, 0.25, 0.25]]
    assert {t.status for t in tuner.oracle.trials.values()} == {"COMPLETED"}


class CountingTuner(keras_pbt.PBTTuner):
    """Overrides keras-tuner's hooks as a user would; keras-tuner's loop must reach them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def run_trial(self, trial, *args, **kwargs):
        self.calls.append(("run_trial", trial.trial_id))
        return super().run_trial(trial, *args, **kwargs)

    def on_trial_end(self, trial):
        self.calls.append(("on_trial_end", trial.trial_id))
        super().on_trial_end(trial)

    def on_epoch_end(self, trial, model, epoch, logs=None):
        self.calls.append(("on_epoch_end", trial.trial_id))


def test_keras_tuners_search_loop_reaches_the_overridden_hooks(tmp_path):
    tuner = CountingTuner(OneWeight(), objective="loss", population_size=2,
                          directory=str(tmp_path), project_name="hooks")
    tuner.search(X1, Y1, epochs=2, batch_size=8, verbose=0)
    ids = sorted(tuner.oracle.trials)
    assert len(ids) == 4
    for kind in ("run_trial", "on_trial_end", "on_epoch_end"):
        assert sorted(t for k, t in tuner.calls if k == kind) == ids
