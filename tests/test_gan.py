"""PBT for a GAN with two optimizers (the model of examples/gan_mixture.py).

The GAN is a `keras.Model` subclass with `compile(d_optimizer, g_optimizer,
loss_fn)` and its own `train_step`, as in keras.io's GAN examples; its
`model.optimizer` (from `super().compile()`) never steps.
"""


import keras
import numpy as np
import pytest

import keras_pbt
from keras_pbt.runtime import snapshot as snapshot_lib
from tests.pbt_helpers import load_example

gan_mixture = load_example("gan_mixture")

HP = {"d_optimizer.learning_rate": 1e-3, "g_optimizer.learning_rate": 2e-3, "d_optimizer.beta_1": 0.5}
DATA = gan_mixture.sample_mixture(64, seed=0)


def _optimizer_values(model):
    return {name: [v.numpy().copy() for v in opt.variables]
            for name, opt in snapshot_lib.optimizers(model)}


def test_optimizers_are_found_in_a_fixed_order_and_count_steps():
    keras.utils.set_random_seed(0)
    model = gan_mixture.build(HP)
    assert [n for n, _ in snapshot_lib.optimizers(model)] == ["optimizer", "d_optimizer", "g_optimizer"]
    model.fit(DATA, batch_size=16, epochs=1, verbose=0)  # 4 steps
    assert int(model.optimizer.iterations) == 0  # super().compile()'s optimizer never steps
    assert snapshot_lib.iterations(model) == 4
    kinds = {row[0] for row in snapshot_lib.layout(model)}
    assert kinds == {"weight", "optimizer", "optimizer:d_optimizer", "optimizer:g_optimizer"}


def test_snapshot_copies_both_networks_and_both_optimizers():
    keras.utils.set_random_seed(0)
    a, b = gan_mixture.build(HP, seed=1), gan_mixture.build(dict(HP, **{"g_optimizer.learning_rate": 1e-4}), seed=2)
    a.fit(DATA, batch_size=16, epochs=2, verbose=0)
    b.fit(DATA, batch_size=16, epochs=1, verbose=0)
    snap = snapshot_lib.capture(a, "a", 8)
    snapshot_lib.restore(b, snap)
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    want, got = _optimizer_values(a), _optimizer_values(b)
    assert len(got["d_optimizer"]) == len(got["g_optimizer"]) == 2 + 2 * 6  # iteration, lr, Adam m and v
    for name in want:
        for x, y in zip(want[name], got[name]):
            np.testing.assert_array_equal(x, y)
    assert float(b.g_optimizer.learning_rate.numpy()) == pytest.approx(2e-3)  # copied too
    # Resetting instead of copying zeroes both optimizers' state, not their learning rates.
    snapshot_lib.restore(b, snap, copy_optimizer_state=False)
    for opt in (b.d_optimizer, b.g_optimizer):
        for v in opt.variables:
            if v is opt._learning_rate:
                assert float(v.numpy()) > 0
            else:
                assert not np.any(v.numpy()), v.path


def test_a_different_second_optimizer_is_a_clear_error():
    keras.utils.set_random_seed(0)
    a = gan_mixture.build(HP)
    b = gan_mixture.gan_class()()
    b.compile(d_optimizer=keras.optimizers.Adam(1e-3), g_optimizer=keras.optimizers.SGD(1e-3, momentum=0.5),
              loss_fn=keras.losses.BinaryCrossentropy(from_logits=True))
    for m in (a, b):
        m.fit(DATA, batch_size=16, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="Cannot copy member 'a'.*optimizer:g_optimizer"):
        snapshot_lib.restore(b, snapshot_lib.capture(a, "a", 4))


class _AfterBoundary(keras.callbacks.Callback):
    """Runs after the member's PBTCallback: its state right after each boundary."""

    def __init__(self, member_id, population, seen):
        super().__init__()
        self.member_id, self.population, self.seen = member_id, population, seen

    def on_epoch_end(self, epoch, logs=None):
        member = next(m for m in self.population.members if m.member_id == self.member_id)
        self.seen.setdefault(self.member_id, []).append((
            member.callback.last_decision,
            [v.numpy().copy() for v in self.model.weights],
            _optimizer_values(self.model),
        ))


def test_tiny_gan_population_exploit_copies_both_optimizers():
    import tensorflow as tf

    new = {"d_optimizer.learning_rate": 3e-3, "g_optimizer.learning_rate": 4e-4, "d_optimizer.beta_1": 0.2}
    keras.utils.set_random_seed(0)
    counter = iter(range(2))
    pop = keras_pbt.Population(
        lambda hp: gan_mixture.build(hp, seed=next(counter)), gan_mixture.SPACE, population_size=2,
        monitor="val_energy", mode="min", seed=0,
        initial_hparams=[HP, dict(HP, **{"g_optimizer.learning_rate": 1e-4})], policy=keras_pbt.Policy(quantile=0.5, explore_fn=lambda hp, rng: dict(new)), interval=1)
    seen = {}
    val = tf.data.Dataset.from_tensor_slices(gan_mixture.sample_mixture(128, seed=1)).batch(64)
    pop.fit(DATA, validation_data=val, epochs=2, batch_size=16,
            callbacks=lambda mid: [_AfterBoundary(mid, pop, seen)])
    exploits = [r for r in pop.lineage if r.action == "exploit"]
    assert len(exploits) == 1 and exploits[0].step == 4 and exploits[0].parent_step == 4
    loser, parent = exploits[0].member_id, exploits[0].parent
    decision, weights, opt_values = seen[loser][0]
    assert decision.is_exploit and decision.hparams == new
    snap = pop.store.snapshot(parent)
    assert snap.step == 4
    for got, want in zip(weights, snap.weights):
        np.testing.assert_array_equal(got, want)
    # Both optimizers' variables (iterations, Adam moments) equal the parent's
    # snapshot; their learning rates are the explored ones.
    flat = [(name, i, value) for name, values in opt_values.items() for i, value in enumerate(values)]
    assert len(flat) == len(snap.optimizer)
    model = next(m for m in pop.members if m.member_id == loser).model
    lrs = {"d_optimizer": new["d_optimizer.learning_rate"], "g_optimizer": new["g_optimizer.learning_rate"]}
    checked = set()
    for (name, i, got), want in zip(flat, snap.optimizer):
        opt = getattr(model, name)
        if opt.variables[i] is opt._learning_rate:
            if name in lrs:
                assert float(got) == pytest.approx(lrs[name])
            continue
        np.testing.assert_array_equal(got, want, err_msg=f"{name} {opt.variables[i].path}")
        if name in lrs and np.any(want):
            checked.add(name)
    assert checked == {"d_optimizer", "g_optimizer"}  # real state, not zeros
    assert model.d_optimizer.beta_1 == pytest.approx(0.2)
    assert snapshot_lib.iterations(model) == 8
    assert [int(keras.ops.convert_to_numpy(o.iterations)) for o in (model.d_optimizer, model.g_optimizer)] == [8, 8]


def test_snapshot_from_before_the_first_step_resets_the_slots_built_since():
    # Population.fit captures every member before training: a GAN's optimizers
    # are still unbuilt then. A restart from that state must still work.
    keras.utils.set_random_seed(0)
    model = gan_mixture.build(HP)
    initial = snapshot_lib.capture(model, 0, 0)
    assert [r[1] for r in initial.layout if r[0] == "optimizer:d_optimizer"] == ["iteration", "rate"]
    first = [v.numpy().copy() for v in model.weights]
    model.fit(DATA, batch_size=16, epochs=1, verbose=0)
    model.d_optimizer.learning_rate.assign(0.5)
    snapshot_lib.restore(model, initial)
    for got, want in zip(model.weights, first):
        np.testing.assert_array_equal(got.numpy(), want)
    assert float(model.d_optimizer.learning_rate.numpy()) == pytest.approx(1e-3)
    for opt in (model.d_optimizer, model.g_optimizer):
        assert len(opt.variables) == 14
        for v in opt.variables:
            if v is not opt._learning_rate:
                assert not np.any(keras.ops.convert_to_numpy(v)), v.path
    # The other way round (a stepped snapshot into an unbuilt optimizer) is an error.
    fresh = gan_mixture.build(HP)
    with pytest.raises(ValueError, match="optimizer:d_optimizer"):
        snapshot_lib.restore(fresh, snapshot_lib.capture(model, 0, 4))


class _LearningRates(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append((float(self.model.d_optimizer.learning_rate.numpy()),
                          float(self.model.g_optimizer.learning_rate.numpy()),
                          float(self.model.d_optimizer.beta_1)))


def test_schedule_callback_drives_both_optimizers_of_a_gan():
    schedule = [(0, HP), (3, dict(HP, **{"g_optimizer.learning_rate": 5e-4})),
                (6, {"d_optimizer.learning_rate": 2e-4, "g_optimizer.learning_rate": 1e-4,
                     "d_optimizer.beta_1": 0.1})]
    keras.utils.set_random_seed(0)
    model = gan_mixture.build(dict(HP, **{"d_optimizer.learning_rate": 0.1}))
    recorder = _LearningRates()
    cb = keras_pbt.ScheduleCallback(schedule)
    model.fit(DATA, batch_size=8, epochs=1, verbose=0, callbacks=[cb, recorder])  # 8 steps
    want = [(1e-3, 2e-3, 0.5)] * 3 + [(1e-3, 5e-4, 0.5)] * 3 + [(2e-4, 1e-4, 0.1)] * 2
    assert recorder.seen == [pytest.approx(w) for w in want]
