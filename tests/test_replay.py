"""Replay: the schedule of a member's ancestry, read from lineage, applied step by step."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_pbt
from keras_pbt.core.lineage import LineageRecord
from keras_pbt.core.ancestry import ancestry, ancestry_schedule, best_member
from keras_pbt.storage.events import read_lineage
from tests.pbt_helpers import X1, Y1, fit_in_threads, one_weight_model


def rec(member, step, action, hp, parent=None, parent_step=None, metric=None, mode="max"):
    return LineageRecord(member_id=member, step=step, action=action, hparams={"lr": hp},
                         parent=parent, parent_step=parent_step, metric=metric, mode=mode)


def test_schedule_module_imports_no_tensorflow():
    code = ("import json, sys, keras_pbt.core.ancestry, keras_pbt\n"
            "keras_pbt.ancestry, keras_pbt.ancestry_schedule, keras_pbt.read_lineage\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


# --- a real run: lineage from the store and from the log directory -----------------------

SPACE = {"learning_rate": keras_pbt.LogUniform(1e-3, 0.5), "momentum": keras_pbt.Uniform(0.0, 0.9)}
X16 = np.concatenate([X1, -X1])
Y16 = np.concatenate([Y1, Y1[::-1]])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three one-weight members, 6 epochs of 4 steps: (lineage, logdir, final weights)."""
    logdir = str(tmp_path_factory.mktemp("replay"))
    store = keras_pbt.InMemoryStore(seed=5, synchronous=True, timeout=60)
    jobs = []
    for i, (lr, mom) in enumerate([(0.2, 0.5), (0.01, 0.0), (0.002, 0.8)]):
        cb = keras_pbt.PBTCallback(store, i, SPACE, monitor="loss", logdir=logdir, policy=keras_pbt.Policy(quantile=0.34, resample_probability=0.5))
        model = one_weight_model(keras.optimizers.SGD(lr, momentum=mom), w0=0.5)
        jobs.append((model, dict(x=X16, y=Y16, batch_size=4, epochs=6, shuffle=False, verbose=0,
                                 callbacks=[cb])))
    assert fit_in_threads(jobs) == [None] * 3
    for model, kw in jobs:
        kw["callbacks"][0]._writer.flush()
    final_weights = {i: float(m.weights[0].numpy()[0, 0]) for i, (m, _) in enumerate(jobs)}
    return store.lineage(), logdir, final_weights


def test_lineage_read_from_the_logdir_equals_the_stores(run):
    lineage, logdir, final_weights = run
    read = read_lineage(logdir)
    key = lambda r: (str(r.member_id), r.step, r.action, json.dumps(r.hparams, sort_keys=True))  # noqa: E731
    assert sorted(map(key, read)) == sorted(map(key, lineage))
    assert sum(r.action == "exploit" for r in lineage) >= 2
    for member in range(3):
        assert ancestry(read, member) == ancestry(lineage, member)


def test_read_lineage_errors(tmp_path):
    with pytest.raises(ValueError, match="No keras-pbt lineage records"):
        read_lineage(str(tmp_path))
    for population in ("a", "b"):
        writer = keras_pbt.MemberSummaryWriter(str(tmp_path / population), 0)
        writer.write(0, records=[rec(0, 0, "init", 0.1)])
        writer.close()
    with pytest.raises(ValueError, match="lineage of 2 populations"):
        read_lineage(str(tmp_path))
    assert [r.action for r in read_lineage(str(tmp_path / "a"))] == ["init"]


class _Recorder(keras.callbacks.Callback):
    """After the ScheduleCallback: the values the next step will use, and the weight after it."""

    def __init__(self):
        super().__init__()
        self.before = []
        self.weights = []

    def on_train_batch_begin(self, batch, logs=None):
        opt = self.model.optimizer
        self.before.append({"learning_rate": float(opt.learning_rate.numpy()), "momentum": float(opt.momentum)})

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(float(self.model.weights[0].numpy()[0, 0]))


def _expected_per_step(schedule, n):
    out, current = [], None
    for i in range(n):
        for step, hp in schedule:
            if step <= i:
                current = hp
        out.append(current)
    return out


def _sgd_reference(per_step, xs, ys, batch_size, w=0.5):
    m, out = 0.0, []
    for i, hp in enumerate(per_step):
        j = (i * batch_size) % len(xs)
        x, y = xs[j:j + batch_size, 0].astype("float64"), ys[j:j + batch_size, 0].astype("float64")
        g = float(np.mean(2.0 * (w * x - y) * x))
        if hp["momentum"]:
            m = m * hp["momentum"] - g * hp["learning_rate"]
            w = w + m
        else:  # Keras SGD leaves the momentum slot alone
            w = w - g * hp["learning_rate"]
        out.append(w)
    return np.array(out)


@pytest.mark.parametrize("steps_per_epoch", [None, 4])
def test_schedule_callback_applies_the_lineage_step_by_step(run, steps_per_epoch):
    lineage, _, _ = run
    member = best_member(lineage)
    schedule = ancestry_schedule(lineage, member)
    assert len(schedule) >= 2 and all(step % 4 == 0 for step, _ in schedule)
    cb = keras_pbt.ScheduleCallback(schedule, steps_per_epoch=steps_per_epoch)
    default = keras.callbacks.Callback.on_train_batch_end
    assert (cb.on_train_batch_end.__func__ is default) == (steps_per_epoch is not None)
    recorder = _Recorder()
    first = schedule[0][1]
    model = one_weight_model(keras.optimizers.SGD(first["learning_rate"], momentum=first["momentum"]))
    model.fit(X16, Y16, batch_size=4, epochs=6, shuffle=False, verbose=0, callbacks=[cb, recorder])
    want = _expected_per_step(schedule, 24)
    for i, (got, exp) in enumerate(zip(recorder.before, want)):
        assert got["learning_rate"] == pytest.approx(exp["learning_rate"], rel=1e-6), i
        assert got["momentum"] == pytest.approx(exp["momentum"], rel=1e-12), i
    # The traced momentum really reached each step: the weights follow SGD
    # with the per-step values.
    np.testing.assert_allclose(recorder.weights, _sgd_reference(want, X16, Y16, 4), rtol=1e-4, atol=1e-6)
    assert [s for s, _ in cb.applied] == [s for s, _ in schedule]
    assert cb.steps == 24


def test_schedule_inside_an_epoch_and_across_fit_calls():
    schedule = [(0, {"learning_rate": 0.1, "momentum": 0.0}), (3, {"learning_rate": 0.02, "momentum": 0.5}),
                (5, {"learning_rate": 0.05, "momentum": 0.9}), (11, {"learning_rate": 0.01, "momentum": 0.3})]
    cb = keras_pbt.ScheduleCallback(schedule, steps_per_epoch=4)  # steps 3, 5, 11: batches are hooked
    assert cb.by_epoch is False
    recorder = _Recorder()
    model = one_weight_model(keras.optimizers.SGD(0.3, momentum=0.0))
    model.fit(X16, Y16, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[cb, recorder])
    model.fit(X16, Y16, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[cb, recorder])
    want = _expected_per_step(schedule, 12)
    assert recorder.before == [pytest.approx(hp) for hp in want]
    # Each fit goes over X16 from the start: 4 batches per epoch.
    np.testing.assert_allclose(recorder.weights, _sgd_reference(want, X16, Y16, 4), rtol=1e-4, atol=1e-6)


def test_schedule_callback_rejects_bad_input():
    for bad, match in [("x", "list of"), ([], "empty"), ([(1, {}), (1, {})], "increase strictly"),
                       ([(-1, {})], "step=-1"), ([(0, 0.1)], "must be a dict"), ([(0,)], r"\(step, hparams\)")]:
        with pytest.raises((TypeError, ValueError), match=match):
            keras_pbt.ScheduleCallback(bad)
    cb = keras_pbt.ScheduleCallback([(0, {"learning_rate": 0.1})], steps_per_epoch=3)
    with pytest.raises(ValueError, match="runs 2 steps per epoch"):
        one_weight_model(keras.optimizers.SGD(0.1)).fit(X1, Y1, batch_size=4, verbose=0, callbacks=[cb])


def test_replay_from_the_logdir(run):
    lineage, logdir, final_weights = run

    def build(hp):
        return one_weight_model(keras.optimizers.SGD(hp["learning_rate"], momentum=hp["momentum"]))

    model = keras_pbt.replay(build, logdir, X16, Y16, batch_size=4, epochs=6, shuffle=False)
    cb = model.schedule_callback
    schedule = ancestry_schedule(lineage)
    assert cb.by_epoch and cb.schedule == schedule and [s for s, _ in cb.applied] == [s for s, _ in schedule]
    w = float(model.weights[0].numpy()[0, 0])
    want = _sgd_reference(_expected_per_step(schedule, 24), X16, Y16, 4)[-1]
    assert w == pytest.approx(want, rel=1e-4)
    # Same data order, same initial weight: the replay ends where the member did.
    assert w == pytest.approx(final_weights[best_member(lineage)], rel=1e-5)


def test_read_lineage_stops_at_a_truncated_last_record(tmp_path):
    writer = keras_pbt.MemberSummaryWriter(str(tmp_path), 0)
    writer.write(0, records=[rec(0, 0, "init", 0.1)])
    writer.write(4, records=[rec(0, 4, "keep", 0.1, metric=0.5)])
    writer.close()
    (path,) = list((tmp_path / "member_0").iterdir())
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # a writer still at work
    assert [r.action for r in read_lineage(str(tmp_path))] == ["init"]
