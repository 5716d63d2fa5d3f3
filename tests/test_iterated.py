"""Iterated PBT (`keras_pbt.Iterated`): the pure restart
rules, the weights a restart gives, and a real population that stagnates
and restarts with a longer interval (tiny models, logical CPU devices)."""

import keras
import numpy as np
import pytest

import keras_pbt
from keras_pbt.core import iterated as iterated_lib
from keras_pbt.core.selection import Report
from keras_pbt.runtime import snapshot as snapshot_lib
from keras_pbt.runtime.iterated import shrink_perturb
from keras_pbt.runtime.snapshot import restore_weights

pytestmark = pytest.mark.all_backends

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 4)).astype("float32")
Y = (X[:, 0] > 0).astype("int32")
# Learning rates so small that the metric cannot move: the population's
# best stagnates at once, so when restarts happen is known in advance.
FROZEN = {"learning_rate": keras_pbt.LogUniform(1e-8, 1e-7)}


def build(hp):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(hp["learning_rate"]),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


# ----------------------------------------------------------------- the rules


def test_stagnation_is_no_better_best_for_patience_boundaries():
    t = iterated_lib.IterationTracker(1, "max")
    for best in (0.5, 0.6, 0.6, 0.6):
        t.observe(best)
        assert not t.stagnated(patience=3)
    t.observe(0.59)
    assert t.stagnated(patience=3)
    t.observe(0.61)  # a new best: no longer stagnating
    assert not t.stagnated(patience=3)
    low = iterated_lib.IterationTracker(1, "min")
    for best in (1.0, 0.9, 0.95):
        low.observe(best)
    assert low.stagnated(patience=1) and not low.stagnated(patience=2)


def test_restart_needs_two_longer_intervals_left_and_lengthens_the_interval():
    t = iterated_lib.IterationTracker(2, "max")
    assert t.next_boundary == 2 and t.is_boundary(2) and not t.is_boundary(1)
    assert t.restart_allowed(epochs=6, total_epochs=14, growth=2)  # 6 + 2 * 4 = 14
    assert not t.restart_allowed(epochs=7, total_epochs=14, growth=2)
    assert not t.restart_allowed(epochs=2, total_epochs=None, growth=2)
    t.observe(0.5)
    t.restarted(epochs=6, growth=3)
    assert (t.length, t.next_boundary, t.bests, t.restarts) == (6, 12, [], 1)
    again = iterated_lib.IterationTracker(1, "max")
    again.set_state(t.get_state())
    assert again.get_state() == t.get_state() == {
        "length": 6, "next_boundary": 12, "bests": [], "restarts": 1}


def test_restart_draw_is_the_same_for_every_member_and_sized_by_the_fractions():
    ids = list(range(8))
    fresh, random = iterated_lib.restart_draw(ids, seed=3, key=4, fresh_fraction=0.5,
                                              random_fraction=0.25)
    assert len(fresh) == 4 and len(random) == 2 and fresh | random <= set(ids)
    assert iterated_lib.restart_draw(ids[::-1], 3, 4, 0.5, 0.25) == (fresh, random)
    assert iterated_lib.restart_draw(ids, 3, 5, 0.5, 0.25) != (fresh, random)
    assert iterated_lib.restart_draw(ids, 3, 4, 0.0, 1.0) == (set(), set(ids))


def test_population_best_ignores_nan():
    reports = [Report(0, 1, float("nan")), Report(1, 1, 0.4), Report(2, 1, 0.7)]
    assert iterated_lib.population_best(reports, "max") == 0.7
    assert iterated_lib.population_best(reports, "min") == 0.4
    assert np.isnan(iterated_lib.population_best([Report(0, 1, float("nan"))], "max"))


# -------------------------------------------------------------- the settings


def test_bad_settings_are_refused_and_there_is_no_auto():
    assert keras_pbt.core.config.get_interval(keras_pbt.Iterated()) == keras_pbt.Iterated()
    assert keras_pbt.Iterated(epochs=2).length == 2
    with pytest.raises(ValueError, match=r"Received: growth=1"):
        keras_pbt.Iterated(growth=1)
    with pytest.raises(ValueError, match=r"Received: shrink=1.5"):
        keras_pbt.Iterated(shrink=1.5)
    with pytest.raises(ValueError, match=r"Received: patience=0"):
        keras_pbt.Iterated(patience=0)
    with pytest.raises(ValueError, match=r"Received: steps=10"):
        keras_pbt.Iterated(steps=10)
    with pytest.raises(ValueError, match=r"Iterated\(\.\.\.\)\. Received: interval='auto'"):
        keras_pbt.core.config.get_interval("auto")


def test_iterated_needs_a_synchronous_store_and_is_refused_by_the_oracle():
    with pytest.raises(ValueError, match=r"synchronous.*Received: interval=Iterated"):
        keras_pbt.Population(build, FROZEN, population_size=2, interval=keras_pbt.Iterated(),
                             synchronous=False)
    with pytest.raises(ValueError, match=r"Received: interval=Iterated"):
        keras_pbt.PBTOracle(FROZEN, population_size=2, max_epochs=4,
                            interval=keras_pbt.Iterated())


# -------------------------------------------------------------- the weights


def test_shrink_perturb_sets_trainable_weights_and_restore_weights_sets_every_weight():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
                              keras.layers.BatchNormalization()])
    model.compile("sgd", "mse")
    initial = snapshot_lib.capture(model, 0, 0, on_device=False)
    for v in model.weights:
        v.assign(np.full(v.shape, 5.0, dtype="float32"))
    shrink_perturb(model, initial, 0.2, 0.1)
    trainable = {id(v) for v in model.trainable_variables}
    for v, w0 in zip(model.weights, initial.weights):
        got = keras.ops.convert_to_numpy(v)
        want = 0.2 * 5.0 + 0.1 * w0 if id(v) in trainable else np.full(v.shape, 5.0)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    restore_weights(model, initial)
    for v, w0 in zip(model.weights, initial.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(v), w0)


# -------------------------------------------------------- a real population


def test_a_stagnating_population_restarts_once_with_a_doubled_interval():
    after = {}

    class AfterBoundary(keras.callbacks.Callback):
        # The user's callbacks run after the member's PBTCallback: at the end
        # of epoch 2 they see the weights the restart gave.
        def __init__(self, member_id):
            super().__init__()
            self.member_id = member_id

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                after[self.member_id] = [keras.ops.convert_to_numpy(w)
                                         for w in self.model.trainable_variables]

    pop = keras_pbt.Population(build, FROZEN, population_size=4, seed=1,
                               interval=keras_pbt.Iterated(patience=1),
                               devices=keras_pbt.Devices(num_cpu=2),
                               policy=keras_pbt.Policy(quantile=0.25, margin=1.0))
    pop.fit(X, Y, validation_data=(X, Y), epochs=8, batch_size=16, verbose=0,
            callbacks=lambda mid: [AfterBoundary(mid)])
    steps_per_epoch = 4
    for m in pop.members:
        records = [r for r in pop.lineage if r.member_id == m.member_id]
        # Boundaries at epochs 1, 2 (the restart: 2 + 2 * 2 <= 8), then every
        # 2 epochs: 4, 6 (no second restart: 6 + 2 * 4 > 8) and 8.
        assert [r.step // steps_per_epoch for r in records] == [0, 1, 2, 4, 6, 8]
        assert [r.action for r in records] == ["init", "keep", "restart", "keep", "keep", "keep"]
        restart = records[2]
        assert "restart 1, interval 1 -> 2 epochs" in restart.reason
        w0 = m.initial_snapshot.weights
        if restart.parent is None:  # back to its initial weights
            assert "weights: its initial weights" in restart.reason
            for w, w_init in zip(after[m.member_id], w0):
                np.testing.assert_array_equal(w, w_init)
        else:  # 0.2 x its weights (barely trained: still its initial ones) + 0.1 x initial
            assert restart.parent == m.member_id
            for w, w_init in zip(after[m.member_id], w0):
                np.testing.assert_allclose(w, 0.3 * w_init, atol=1e-5)
    fresh = {r.member_id for r in pop.lineage if r.action == "restart" and r.parent is None}
    randomized = {r.member_id for r in pop.lineage if r.action == "restart"
                  and "from the space" in r.reason}
    assert len(fresh) == 2 and len(randomized) == 2
    [champion] = pop.store.champions()
    assert champion.step == 2 * steps_per_epoch
    assert champion.metric == max(r.metric for r in pop.lineage
                                  if r.action == "restart")


def test_a_champion_better_than_every_final_member_is_handed_back():
    pop = keras_pbt.Population(build, FROZEN, population_size=2, seed=2,
                               interval=keras_pbt.Iterated(),
                               devices=keras_pbt.Devices(num_cpu=2))
    pop.fit(X, Y, validation_data=(X, Y), epochs=2, batch_size=16, verbose=0)
    # A champion whose weights classify the split perfectly (x[:, 0] > 0).
    perfect = build(pop.members[0].hparams)
    perfect.layers[0].kernel.assign(np.array([[-10.0, 10.0]] + [[0.0, 0.0]] * 3, "float32"))
    perfect.layers[0].bias.assign(np.zeros(2, "float32"))
    pop.store.keep_champion(snapshot_lib.capture(perfect, 1, 5, {"learning_rate": 5e-8}, 1.0,
                                                 on_device=False))
    final = pop.choose()
    assert (final.member_id, final.step, final.score) == (1, 5, 1.0)
    assert final.hparams == {"learning_rate": 5e-8} and "1@5" in final.scores
    assert final.model is not pop.members[1].model
    chosen = pop.choose(validation_data=(X, Y))
    assert (chosen.member_id, chosen.step, chosen.score) == (1, 5, 1.0)
    logits = keras.ops.convert_to_numpy(chosen.model(X))
    assert np.mean(np.argmax(logits, -1) == Y) == 1.0
    assert "step=5" in repr(chosen)


def _checkpointed(seed, tmp_path):
    """A new 2-member population that restarts whenever it may, and its fit arguments."""
    pop = keras_pbt.Population(build, FROZEN, population_size=2, seed=seed,
                               interval=keras_pbt.Iterated(patience=1),
                               devices=keras_pbt.Devices(num_cpu=2))
    return pop, dict(validation_data=(X, Y), batch_size=16, verbose=0,
                     checkpoint_dir=str(tmp_path))


def test_a_resumed_checkpoint_keeps_the_iteration(tmp_path):
    first, fit = _checkpointed(4, tmp_path)
    first.fit(X, Y, epochs=4, **fit)  # no restart: two 2-epoch intervals do not fit in 4
    assert not any(r.action == "restart" for r in first.lineage)
    assert first.members[0].callback.get_state()["iteration"]["bests"] != []
    resumed, _ = _checkpointed(4, tmp_path)
    resumed.fit(X, Y, epochs=10, **fit)
    assert resumed.resumed_from == 4
    # The bests of epochs 1-3 came back: the population has stagnated by
    # epoch 5 (5 + 2 * 2 <= 10). A fresh iteration would wait for epoch 6.
    restarts = {r.step // 4 for r in resumed.lineage if r.action == "restart"}
    assert restarts == {5}


def test_a_resumed_checkpoint_keeps_the_champions_and_the_initial_weights(tmp_path):
    first, fit = _checkpointed(5, tmp_path)
    first.fit(X, Y, epochs=6, **fit)  # restarts at epoch 2 (2 + 2 * 2 <= 6)
    [champion] = first.store.champions()
    initial = {m.member_id: m.callback.iterated.initial_snapshot for m in first.members}
    resumed, _ = _checkpointed(5, tmp_path)
    resumed.fit(X, Y, epochs=8, **fit)
    assert resumed.resumed_from == 6
    [back] = resumed.store.champions()
    assert (back.member_id, back.step, back.metric, back.hparams) == (
        champion.member_id, champion.step, champion.metric, champion.hparams)
    for w, w_back in zip(champion.weights, back.weights):
        np.testing.assert_array_equal(w, w_back)
    for m in resumed.members:  # what a restart goes back to: the first run's initial weights
        for w, w_back in zip(initial[m.member_id].weights,
                             m.callback.iterated.initial_snapshot.weights):
            np.testing.assert_array_equal(w, w_back)
    assert f"{champion.member_id}@{champion.step}" in resumed.choose().scores
