"""PBTCallback inside real `model.fit` calls (tiny models, CPU, threads)."""

import glob
import os

import keras
import numpy as np
import pytest
from tensorboard.util import tensor_util

import keras_pbt
from keras_pbt.core.lineage import LINEAGE_TAG, PLUGIN_NAME, loads
from keras_pbt.storage.events import read_events
from tests.pbt_helpers import X1, Y1, blobs, fit_in_threads, load_example, mlp, one_weight_model

paper_toy = load_example("paper_toy")


class _Recorder(keras.callbacks.Callback):
    """Placed after the PBTCallback: records state right after each boundary."""

    def __init__(self, pbt):
        super().__init__()
        self.pbt = pbt
        self.after_boundary = []  # (decision, weights, optimizer variables)
        self.batch_weights = []  # kernel after every step

    def on_epoch_end(self, epoch, logs=None):
        self.after_boundary.append((
            self.pbt.last_decision,
            [v.numpy().copy() for v in self.model.weights],
            [v.numpy().copy() for v in self.model.optimizer.variables],
            float(self.model.optimizer.learning_rate.numpy()),
            getattr(self.model.optimizer, "momentum", None),
        ))

    def on_train_batch_end(self, batch, logs=None):
        self.batch_weights.append(float(self.model.weights[0].numpy()[0, 0]))


pytestmark = pytest.mark.all_backends


def _sgd_reference(w, m, lr, momentum, xs, ys):
    out = []
    for x, y in zip(xs[:, 0], ys[:, 0]):
        g = 2.0 * (w * x - y) * x
        m = m * momentum - g * lr
        w = w + m
        out.append(w)
    return np.array(out)


def test_exploit_copies_snapshot_and_next_step_uses_new_hparams():
    store = keras_pbt.InMemoryStore(seed=1, synchronous=True, timeout=60)
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0), "momentum": keras_pbt.Uniform(0.0, 0.99)}
    new = {"learning_rate": 0.03, "momentum": 0.8}
    winner = one_weight_model(keras.optimizers.SGD(0.05, momentum=0.5))
    loser = one_weight_model(keras.optimizers.SGD(1e-3, momentum=0.0))
    cbs = [
        keras_pbt.PBTCallback(store, name, space, monitor="loss", policy=keras_pbt.Policy(explore_fn=lambda hp, rng: dict(new)))
        for name in ("winner", "loser")
    ]
    recorders = [_Recorder(cb) for cb in cbs]
    kw = dict(x=X1, y=Y1, batch_size=1, epochs=2, shuffle=False, verbose=0)
    errors = fit_in_threads([
        (winner, dict(kw, callbacks=[cbs[0], recorders[0]])),
        (loser, dict(kw, callbacks=[cbs[1], recorders[1]])),
    ])
    assert errors == [None, None]

    decision, weights, opt_vars, lr, momentum = recorders[1].after_boundary[0]
    assert decision.action == "exploit" and decision.parent == "winner"
    snap = store.snapshot("winner")
    assert snap.step == 8
    # Weights and every optimizer variable (momentum slot, iteration count)
    # equal the winner's snapshot exactly; the learning rate is the new one.
    for got, want in zip(weights, snap.weights):
        np.testing.assert_array_equal(got, want)
    names = [v.name for v in loser.optimizer.variables]
    for name, got, want in zip(names, opt_vars, snap.optimizer):
        if name == "learning_rate":
            assert got == pytest.approx(0.03)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    assert (lr, momentum) == (pytest.approx(0.03), 0.8)
    # The very next steps use the new values from the copied state.
    w_snap = float(snap.weights[0][0, 0])
    m_snap = float(snap.optimizer[names.index(next(n for n in names if n.endswith("momentum")))][0, 0])
    got_epoch2 = np.array(recorders[1].batch_weights[8:])
    np.testing.assert_allclose(got_epoch2, _sgd_reference(w_snap, m_snap, 0.03, 0.8, X1, Y1), rtol=1e-5)
    stale = _sgd_reference(w_snap, m_snap, 0.05, 0.5, X1, Y1)
    assert abs(got_epoch2[0] - stale[0]) > 1e-4
    # Lineage: init for both, the exploit with ops, keeps at the last epoch.
    records = store.lineage()
    exploit = [r for r in records if r.action == "exploit"]
    assert len(exploit) == 1
    assert exploit[0].parent == "winner" and exploit[0].parent_step == 8
    assert exploit[0].hparams == new and exploit[0].ops == {"learning_rate": "custom", "momentum": "custom"}
    assert exploit[0].hparams_before["learning_rate"] == pytest.approx(1e-3)
    assert sorted(r.action for r in records) == ["exploit", "init", "init", "keep", "keep", "keep"]


def test_reset_optimizer_state_instead_of_copying():
    store = keras_pbt.InMemoryStore(seed=1, synchronous=True, timeout=60)
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0)}
    models = [
        one_weight_model(keras.optimizers.Adam(0.05)),
        one_weight_model(keras.optimizers.Adam(1e-3)),
    ]
    cbs = [
        keras_pbt.PBTCallback(store, i, space, monitor="loss", policy=keras_pbt.Policy(copy_optimizer_state=False))
        for i in range(2)
    ]
    recorder = _Recorder(cbs[1])
    kw = dict(x=X1, y=Y1, batch_size=1, epochs=2, shuffle=False, verbose=0)
    assert fit_in_threads([
        (models[0], dict(kw, callbacks=[cbs[0]])),
        (models[1], dict(kw, callbacks=[cbs[1], recorder])),
    ]) == [None, None]
    decision, weights, opt_vars, _, _ = recorder.after_boundary[0]
    assert decision.action == "exploit"
    np.testing.assert_array_equal(weights[0], store.snapshot(0).weights[0])
    names = [v.name for v in models[1].optimizer.variables]
    for name, value in zip(names, opt_vars):
        if name != "learning_rate":
            assert not np.any(value), f"{name} should be reset to zero"


def test_only_step_intervals_hook_batches():
    store = keras_pbt.InMemoryStore(seed=0)
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0)}
    by_epoch = keras_pbt.PBTCallback(store, 0, space, monitor="loss", interval=2)
    by_step = keras_pbt.PBTCallback(store, 1, space, monitor="loss", interval=keras_pbt.Interval(steps=3))
    default = keras.callbacks.Callback.on_train_batch_end
    assert by_epoch.on_train_batch_end.__func__ is default
    assert by_step.on_train_batch_end.__func__ is not default
    # Keras decides asynchronous batch dispatch from the same fact.
    assert keras.callbacks.CallbackList([by_step])._async_train is False


def test_step_interval_and_burn_in_boundaries():
    store = keras_pbt.InMemoryStore(seed=0)
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0)}
    cb = keras_pbt.PBTCallback(store, 0, space, monitor="loss", interval=keras_pbt.Interval(steps=3, burn_in=6))
    model = one_weight_model(keras.optimizers.SGD(0.01))
    model.fit(X1, Y1, batch_size=1, epochs=3, shuffle=False, verbose=0, callbacks=[cb])
    steps = [r.step for r in store.histories()[0]]
    assert steps == [3, 6, 9, 12, 15, 18, 21, 24]
    reasons = {r.step: r.reason for r in store.lineage() if r.action == "keep"}
    assert reasons[3] == reasons[6] == "burn-in"
    assert reasons[9] == "selection kept it"
    assert reasons[24] == "end of training"


def test_epoch_interval_counts_epochs_across_fit_calls():
    store = keras_pbt.InMemoryStore(seed=0)
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0)}
    cb = keras_pbt.PBTCallback(store, 0, space, monitor="loss", interval=2)
    model = one_weight_model(keras.optimizers.SGD(0.01))
    model.fit(X1, Y1, batch_size=4, epochs=3, verbose=0, callbacks=[cb])
    model.fit(X1, Y1, batch_size=4, epochs=3, verbose=0, callbacks=[cb])
    assert [r.step for r in store.histories()[0]] == [4, 8, 12]
    assert [r.interval for r in store.histories()[0]] == [1, 2, 3]
    assert sum(r.action == "init" for r in store.lineage()) == 1


def test_missing_monitor_lists_available_keys():
    store = keras_pbt.InMemoryStore(seed=0)
    cb = keras_pbt.PBTCallback(store, 0, {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0)},
                               monitor="val_accuracy")
    model = one_weight_model(keras.optimizers.SGD(0.01))
    with pytest.raises(ValueError, match=r"`val_accuracy`.*Available keys: \['loss'\].*validation_data"):
        model.fit(X1, Y1, epochs=1, verbose=0, callbacks=[cb])


def test_synchronous_barrier_timeout_names_missing_member():
    store = keras_pbt.InMemoryStore(seed=0, synchronous=True, timeout=0.5)
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0)}
    cb = keras_pbt.PBTCallback(store, "a", space, monitor="loss")
    keras_pbt.PBTCallback(store, "never-trains", space, monitor="loss", initial_hparams={"learning_rate": 0.1})
    model = one_weight_model(keras.optimizers.SGD(0.01))
    with pytest.raises(keras_pbt.BarrierTimeoutError, match="never-trains"):
        model.fit(X1, Y1, epochs=2, verbose=0, callbacks=[cb])


def test_constructor_rejects_bad_arguments():
    store = keras_pbt.InMemoryStore(seed=0)
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0)}
    bad = [
        (lambda: dict(interval=0), "interval=0"),
        (lambda: dict(interval="auto"), "interval='auto'"),
        (lambda: dict(interval=keras_pbt.Interval(steps=-3)), "steps=-3"),
        (lambda: dict(interval=keras_pbt.Interval(epochs=1, steps=5)), "steps=5"),
        (lambda: dict(mode="maximum"), "mode='maximum'"),
        (lambda: dict(policy=keras_pbt.Policy(quantile=0.7)), "quantile=0.7"),
        (lambda: dict(policy="truncation"), "policy='truncation'"),
        (lambda: dict(interval=keras_pbt.Interval(burn_in=-1)), "burn_in=-1"),
        (lambda: dict(initial_hparams={"lr": 0.1}), "unknown: \\['lr'\\]"),
    ]
    for i, (make, message) in enumerate(bad):
        with pytest.raises((ValueError, TypeError), match=message):
            keras_pbt.PBTCallback(store, f"m{i}", space, monitor="loss", **make())
    for old in ("quantile", "synchronous", "interval_epochs", "hparams", "seed"):
        with pytest.raises(TypeError, match=old):  # one way to give each setting
            keras_pbt.PBTCallback(store, f"old-{old}", space, monitor="loss", **{old: 1})
    with pytest.raises(TypeError, match="store"):
        keras_pbt.PBTCallback({}, 0, space)
    keras_pbt.PBTCallback(store, "dup", space, monitor="loss")
    with pytest.raises(ValueError, match="Duplicate member id"):
        keras_pbt.PBTCallback(store, "dup", space, monitor="loss")


def test_members_with_different_architectures_fail_clearly():
    store = keras_pbt.InMemoryStore(seed=0, synchronous=True, timeout=60)
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0)}
    x, y = blobs(64)
    good, other = mlp(0, keras.optimizers.SGD(0.1)), mlp(1, keras.optimizers.SGD(1e-3), units=4)
    cbs = [keras_pbt.PBTCallback(store, i, space, monitor="loss")
           for i in range(2)]
    kw = dict(x=x, y=y, epochs=2, batch_size=16, verbose=0)
    errors = fit_in_threads([(good, dict(kw, callbacks=[cbs[0]])), (other, dict(kw, callbacks=[cbs[1]]))])
    assert errors[0] is None
    assert isinstance(errors[1], ValueError) and "Cannot copy member 0's state" in str(errors[1])


def test_summaries_per_member_with_lineage_plugin_data(tmp_path):
    store = keras_pbt.InMemoryStore(seed=3, synchronous=True, timeout=60)
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 1.0), "momentum": keras_pbt.Uniform(0.0, 0.9)}
    x, y = blobs(120)
    jobs, cbs = [], []
    for i, lr in enumerate([0.2, 0.05, 1e-3]):
        cb = keras_pbt.PBTCallback(store, i, space, monitor="loss",
                                   logdir=str(tmp_path), policy=keras_pbt.Policy(quantile=0.34))
        cbs.append(cb)
        jobs.append((mlp(i, keras.optimizers.SGD(lr, momentum=0.5)),
                     dict(x=x, y=y, epochs=4, batch_size=30, verbose=0, callbacks=[cb])))
    assert fit_in_threads(jobs) == [None] * 3
    assert sorted(os.listdir(tmp_path)) == ["member_0", "member_1", "member_2"]
    written = []
    for i in range(3):
        scalars, plugin_records = {}, []
        for path in glob.glob(str(tmp_path / f"member_{i}" / "events.out.tfevents.*")):
            for event in read_events(path):
                for value in event.summary.value:
                    if value.metadata.plugin_data.plugin_name == PLUGIN_NAME:
                        assert value.tag == LINEAGE_TAG
                        assert value.metadata.data_class == 2  # DATA_CLASS_TENSOR
                        text = tensor_util.make_ndarray(value.tensor).item()
                        plugin_records += loads(text)
                    else:
                        scalars.setdefault(value.tag, []).append(event.step)
        assert scalars["pbt/loss"] == [4, 8, 12, 16]
        assert scalars["pbt/hparams/learning_rate"] == [0, 4, 8, 12, 16]
        assert scalars["pbt/hparams/momentum"] == [0, 4, 8, 12, 16]
        assert [r.action for r in plugin_records][0] == "init"
        written += plugin_records
    key = lambda r: (str(r.member_id), r.step, r.action)  # noqa: E731
    assert sorted(map(key, written)) == sorted(map(key, store.lineage()))
    assert sum(r.action == "exploit" for r in written) == sum(cb.exploits for cb in cbs) > 0


@pytest.mark.tensorflow_only(reason="the toy model's train_step uses tf.GradientTape")
def test_paper_toy_example():
    # examples/paper_toy.py: h = (1, 0) and (0, 1), 200 steps, a boundary every 4.
    alone = paper_toy.run(with_pbt=False, noise=0.2)[:, -1]
    assert all(q < 0.4 for q in alone), alone
    with_pbt = paper_toy.run(with_pbt=True, noise=0.2)[:, -1]
    assert all(q >= 1.19 for q in with_pbt), with_pbt


def test_second_write_at_one_step_carries_the_steps_earlier_records(tmp_path):
    # TensorBoard's default data server keeps one tensor per step and tag.
    writer = keras_pbt.MemberSummaryWriter(str(tmp_path), 0)
    keep = keras_pbt.LineageRecord(member_id=0, step=8, action="keep", hparams={"lr": 0.1}, interval=1)
    restart = keras_pbt.LineageRecord(member_id=0, step=8, action="restart", hparams={"lr": 0.2}, parent=1)
    later = keras_pbt.LineageRecord(member_id=0, step=16, action="keep", hparams={"lr": 0.2}, interval=2)
    writer.write(8, records=[keep])
    writer.write(8, records=[restart])
    writer.write(16, records=[later])
    writer.close()
    tensors = []
    for path in glob.glob(str(tmp_path / "member_0" / "events.out.tfevents.*")):
        for event in read_events(path):
            for value in event.summary.value:
                if value.tag == LINEAGE_TAG:
                    tensors.append((event.step, [r.action for r in loads(tensor_util.make_ndarray(value.tensor).item())]))
    assert tensors == [(8, ["keep"]), (8, ["keep", "restart"]), (16, ["keep"])]


def test_fit_in_threads_fails_on_a_member_that_hangs():
    # Issue 13, bug 7: the helper joined with a timeout and never checked
    # is_alive(), so a hung member read as success.
    release = __import__("threading").Event()

    class Hang(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            release.wait(120)

    model = mlp(0)
    x, y = blobs(32)
    try:
        with pytest.raises(AssertionError, match=r"job (0, )?1 of 2 still running after 3 s"):
            fit_in_threads([(mlp(1), dict(x=x, y=y, epochs=1, verbose=0)),
                            (model, dict(x=x, y=y, epochs=1, verbose=0, callbacks=[Hang()]))],
                           timeout=3)
    finally:
        release.set()


def test_callback_state_round_trips_through_get_state_and_set_state():
    import json

    store = keras_pbt.InMemoryStore(seed=3, synchronous=True)
    space = {"learning_rate": keras_pbt.LogUniform(1e-3, 0.5)}
    x, y = blobs(64)
    cbs = [keras_pbt.PBTCallback(store, i, space, monitor="loss",
                                 initial_hparams={"learning_rate": lr},
                                 policy=keras_pbt.Policy(quantile=0.5), interval=1)
           for i, lr in enumerate((0.05, 0.001))]
    jobs = [(mlp(i), dict(x=x, y=y, epochs=3, batch_size=16, verbose=0, callbacks=[cb]))
            for i, cb in enumerate(cbs)]
    assert fit_in_threads(jobs) == [None, None]
    state = cbs[1].get_state()
    assert json.loads(json.dumps(state)) == state  # plain JSON values
    assert (state["member_id"], state["steps"], state["epochs"], state["boundaries"]) == (1, 12, 3, 3)
    assert state["hparams"] == cbs[1].hparams and state["seed"] == 3 and state["initialised"]
    # The counters are the lineage's: every exploit the store recorded for member 1.
    exploits = [r for r in store.lineage() if r.member_id == 1 and r.action == "exploit"]
    assert state["exploits"] == len(exploits) >= 1, "the slow member must copy the fast one"
    assert state["hparams"] == [r for r in store.lineage() if r.member_id == 1][-1].hparams
    fresh = keras_pbt.PBTCallback(keras_pbt.InMemoryStore(seed=99), 1, space, monitor="loss")
    before = fresh.get_state()
    assert before["steps"] == 0 and before["exploits"] == 0 and before["rng"] != state["rng"]
    fresh.set_state(json.loads(json.dumps(state)))
    assert fresh.get_state() == state
    assert (fresh.steps, fresh.epochs, fresh.boundaries, fresh.hparams) == (12, 3, 3, cbs[1].hparams)
    # The generator goes on where the member's left off, and the engine's seed is the population's.
    assert fresh.state.rng.random() == cbs[1].state.rng.random()
    assert fresh.engine.seed == 3
    with pytest.raises(ValueError, match=r"member 0's"):
        cbs[0].set_state(state)
    with pytest.raises(ValueError, match=r"lacks \['rng'\]"):
        fresh.set_state({k: v for k, v in state.items() if k != "rng"})
