"""The wide start: the pure plan, cut and assignment (keras_pbt.core.wide_start), and a
real population that trains its configurations in turn and cuts them to its members."""

import collections
import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_pbt
from keras_pbt.core import config as policy_config
from keras_pbt.core.ancestry import ancestry
from keras_pbt.core.selection import Report
from keras_pbt.core.wide_start import WideStart
from keras_pbt.core.wide_start import assign
from keras_pbt.core.wide_start import candidate_ids
from keras_pbt.core.wide_start import cut
from tests.test_population import SPACE
from tests.test_population import XV
from tests.test_population import YV
from tests.test_population import X
from tests.test_population import Y
from tests.test_population import build

# --- the plan --------------------------------------------------------------------


@pytest.mark.parametrize("factor,reduction,rung,n,epochs,configs,rungs,start,survivor,final", [
    (4, None, 1, 8, 30, 32, [(32, 4, 8)], 4, 1, 27),
    (4, 2, 1, 8, 30, 32, [(32, 4, 16), (16, 2, 8)], 6, 2, 26),
    (4, 4, 2, 8, 30, 32, [(32, 4, 8)], 8, 2, 24),
    (2, None, 1, 3, 5, 6, [(6, 2, 3)], 2, 1, 4),
    (8, 2, 1, 2, 20, 16, [(16, 8, 8), (8, 4, 4), (4, 2, 2)], 14, 3, 9),
    (9, 3, 1, 4, 20, 36, [(36, 9, 12), (12, 3, 4)], 12, 2, 10),
])
def test_plan_table(factor, reduction, rung, n, epochs, configs, rungs, start, survivor, final):
    plan = WideStart(factor, rung, reduction).plan(n, epochs)
    assert plan.configurations == configs
    assert [(r.configurations, r.per_member, r.keep) for r in plan.rungs] == rungs
    assert all(r.epochs == rung for r in plan.rungs)
    assert (plan.start_epochs, plan.survivor_epochs, plan.final_epochs) == (start, survivor, final)
    assert plan.epochs_trained == n * epochs


@given(cuts=st.integers(1, 4), reduction=st.integers(2, 4), rung=st.integers(1, 3),
       n=st.integers(2, 16), extra=st.integers(1, 40))
@settings(max_examples=300, deadline=None)
def test_plan_spends_exactly_the_population_budget(cuts, reduction, rung, n, extra):
    start = WideStart(reduction ** cuts, rung, reduction)
    per_device = sum(reduction ** k for k in range(1, cuts + 1)) * rung
    plan = start.plan(n, per_device + extra)
    # Every device trains the fit's epochs; the start's configurations and the
    # members together train population_size * epochs epochs.
    assert plan.start_epochs == per_device
    assert sum(r.configurations * r.epochs for r in plan.rungs) == n * plan.start_epochs
    assert plan.epochs_trained == n * (per_device + extra)
    assert plan.rungs[-1].keep == n
    assert plan.final_epochs == extra + cuts * rung
    for a, b in zip(plan.rungs, plan.rungs[1:]):
        assert b.configurations == a.keep == a.configurations // reduction


def test_plan_refuses_a_start_that_takes_every_epoch():
    with pytest.raises(ValueError, match=r"trains 4 epochs on each member's device before PBT "
                                         r"begins.*Received: epochs=4"):
        WideStart(4).plan(8, 4)
    assert WideStart(4).plan(8, 5).final_epochs == 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(factor=1), "Received: factor=1"), (dict(factor=4.0), "Received: factor=4.0"),
    (dict(rung_epochs=0), "Received: rung_epochs=0"),
    (dict(factor=6, reduction=4), "must be a power of `reduction`"),
    (dict(factor=4, reduction=1), "Received: reduction=1"),
])
def test_wide_start_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WideStart(**kwargs)


def test_wide_start_equality_and_repr():
    assert WideStart(4) == WideStart(4, 1, 4)
    assert WideStart(4) != WideStart(4, reduction=2)
    assert repr(WideStart(4, reduction=2)) == "WideStart(factor=4, rung_epochs=1, reduction=2)"
    assert len({WideStart(4), WideStart(4, 1, 4)}) == 1


# --- ids, cut, assignment ----------------------------------------------------------


def test_candidate_ids():
    assert candidate_ids([0, 1, 2], 6) == [0, 1, 2, 3, 4, 5]
    assert candidate_ids([3, 7], 4) == [3, 7, 8, 9]
    assert candidate_ids(["a", "b"], 4) == ["a", "b", "candidate-2", "candidate-3"]
    assert candidate_ids(["candidate-2", 1], 4) == ["candidate-2", 1, "candidate-3",
                                                    "candidate-4"]
    assert candidate_ids([0, 1], 2) == [0, 1]


@pytest.mark.parametrize("mode", ["max", "min"])
def test_cut_keeps_the_best_and_puts_non_finite_last(mode):
    sign = 1 if mode == "max" else -1
    metrics = {0: 0.5, 1: math.nan, 2: 0.9, 3: 0.7, 4: math.inf, 5: 0.1}
    reports = [Report(c, 10, sign * m if math.isfinite(m) else m) for c, m in metrics.items()]
    rng = np.random.default_rng(0)
    assert cut(reports, 3, mode, rng) == [2, 3, 0]
    assert set(cut(reports, 5, mode, rng)[:4]) == {2, 3, 0, 5}


def test_cut_breaks_ties_with_the_generator_reproducibly():
    reports = [Report(c, 10, 0.5) for c in range(8)]
    kept = {tuple(cut(reports, 2, "max", np.random.default_rng(s))) for s in range(20)}
    assert len(kept) > 1  # not always the first ids
    assert cut(reports, 2, "max", np.random.default_rng(3)) == cut(
        list(reversed(reports)), 2, "max", np.random.default_rng(3))


def test_assign_pins_a_members_own_configuration_to_its_device():
    assert assign([5, 1, 4, 7], [0, 1], 2) == {0: [5, 4], 1: [1, 7]}
    assert assign([0, 1, 2, 3, 4, 5, 6, 7], [0, 1], 4) == {0: [0, 2, 3, 4], 1: [1, 5, 6, 7]}
    assert assign([9, 3], [3, 8], 1) == {3: [3], 8: [9]}
    with pytest.raises(ValueError, match="do not fill 2 devices"):
        assign([1, 2, 3], [0, 1], 2)


@given(n=st.integers(1, 6), per=st.integers(1, 4), seed=st.integers(0, 10_000))
@settings(max_examples=200, deadline=None)
def test_assign_trains_every_configuration_once_and_balances_the_devices(n, per, seed):
    rng = np.random.default_rng(seed)
    pool = list(rng.permutation(3 * n * per)[: n * per])
    slots = list(range(n))
    out = assign(pool, slots, per)
    assert sorted(c for cs in out.values() for c in cs) == sorted(pool)
    assert all(len(cs) == per for cs in out.values())
    for s in slots:
        if s in pool:
            assert out[s][0] == s


# --- the policy field and the front doors that cannot follow it ------------------


def test_policy_start_field():
    assert keras_pbt.Policy().start is None
    assert keras_pbt.Policy(start=WideStart(2)).start == WideStart(2)
    with pytest.raises(ValueError, match="Received: start=4"):
        keras_pbt.Policy(start=4)
    assert policy_config.unsupported_by_tuner(keras_pbt.Policy(start=WideStart(2))) == {
        "start": WideStart(2)}
    with pytest.raises(ValueError, match="run by keras_pbt.Population"):
        keras_pbt.PBTCallback(keras_pbt.InMemoryStore(), 0, SPACE,
                              policy=keras_pbt.Policy(start=WideStart(2)))


# --- a real population -----------------------------------------------------------


class EpochCounter(keras.callbacks.Callback):
    def __init__(self, counts, key):
        super().__init__()
        self.counts, self.key = counts, key

    def on_epoch_end(self, epoch, logs=None):
        self.counts[self.key] += 1


@pytest.mark.all_backends
def test_a_population_trains_its_configurations_in_turn_and_cuts_them_to_its_members():
    # 2 members, 8 configurations, halved twice after 1 epoch each: every
    # device trains 4 + 2 = 6 epochs of start, then 2 of PBT (8 in all).
    counts = collections.Counter()
    pop = keras_pbt.Population(
        build, SPACE, population_size=2, seed=5, interval=1,
        policy=keras_pbt.Policy(start=WideStart(4, reduction=2)))
    pop.fit(X, Y, validation_data=(XV, YV), epochs=8, batch_size=32,
            callbacks=lambda mid: [EpochCounter(counts, mid)], verbose=0)
    assert pop.epochs_trained == 16 and sum(counts.values()) == 16
    assert dict(counts) == {0: 8, 1: 8}
    assert {m: len(h["loss"]) for m, h in pop.history.items()} == {0: 2, 1: 2}
    lineage = pop.lineage
    inits = [r for r in lineage if r.action == "init"]
    assert sorted(r.member_id for r in inits) == list(range(8))
    cuts = collections.defaultdict(list)
    for r in lineage:
        if r.reason.startswith("wide start: "):
            cuts[r.reason.split(" at cut ")[-1].split(" ")[0]].append(r)
    first, second = cuts["1"], cuts["2"]
    assert len(first) == 8 and len(second) == 4
    for rung in (first, second):
        kept = [r for r in rung if "kept" in r.reason]
        stopped = [r for r in rung if "stopped" in r.reason]
        assert len(kept) == len(rung) // 2
        # The cut keeps the best metrics of the rung.
        assert min(r.metric for r in kept) >= max(r.metric for r in stopped)
        assert all(r.step == 8 * (1 if rung is first else 2) for r in rung)  # 8 steps/epoch
    assert {r.member_id for r in second} == {r.member_id for r in first if "kept" in r.reason}
    survivors = {r.member_id for r in second if "kept" in r.reason}
    hp = {r.member_id: r.hparams for r in inits}
    # Each member trains on as a survivor, with its hyperparameters (PBT may
    # have explored them since: read its first PBT record's `hparams_before`).
    first_pbt = {m.member_id: next(r for r in lineage if r.member_id == m.member_id and r.interval == 1)
                 for m in pop.members}
    assert sorted(tuple(sorted(r.hparams_before.items())) for r in first_pbt.values()) == \
        sorted(tuple(sorted(hp[s].items())) for s in survivors)
    # The ancestry of a final member runs back to the configuration it started as.
    for m in pop.members:
        root = ancestry(lineage, m.member_id)[0]
        assert root.action == "init" and root.step == 0
    starts = {ancestry(lineage, m.member_id, step=first_pbt[m.member_id].step)[0].member_id for m in pop.members}
    assert starts == survivors


def test_a_wide_start_with_all_configurations_given():
    configs = [{"learning_rate": 0.1, "momentum": 0.5}] + [
        {"learning_rate": 0.001, "momentum": 0.0}] * 3
    pop = keras_pbt.Population(
        build, SPACE, population_size=2, seed=0, interval=1, monitor="loss",
        initial_hparams=configs, policy=keras_pbt.Policy(start=WideStart(2)))
    pop.fit(X, Y, validation_data=(XV, YV), epochs=3, batch_size=32, verbose=0)
    inits = {r.member_id: r.hparams for r in pop.lineage if r.action == "init"}
    assert [inits[c] for c in range(4)] == configs
    kept = [r.member_id for r in pop.lineage if "kept" in r.reason]
    assert 0 in kept  # the fast learning rate's loss is far lower after one epoch
    with pytest.raises(ValueError, match=r"list of `population_size`=2 dicts \(or 4, every "):
        keras_pbt.Population(build, SPACE, population_size=2, initial_hparams=configs[:3],
                             policy=keras_pbt.Policy(start=WideStart(2)))


def test_a_wide_start_validates_at_the_end_of_each_rung_whatever_validation_freq():
    # PBT decides every 2 epochs and validates only there; the rungs of the
    # wide start last 1 epoch, and are cut on their validation metric.
    pop = keras_pbt.Population(build, SPACE, population_size=2, seed=1, interval=2,
                               policy=keras_pbt.Policy(start=WideStart(2)))
    pop.fit(X, Y, validation_data=(XV, YV), epochs=6, batch_size=32, validation_freq=2,
            verbose=0)
    cut = [r for r in pop.lineage if r.reason.startswith("wide start: ") and r.action == "keep"]
    assert len(cut) == 4 and all(0.0 <= r.metric <= 1.0 for r in cut)
    # PBT's own fit still validates every 2 epochs: twice in the 4 after the start.
    assert {m: len(h["val_accuracy"]) for m, h in pop.history.items()} == {0: 2, 1: 2}
