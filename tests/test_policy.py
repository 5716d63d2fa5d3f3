"""PBTPolicy.decide, Decision.to_record and comparable_reports."""

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_pbt.core.lineage import LineageRecord
from keras_pbt.core.policy import Decision
from keras_pbt.core.policy import PBTPolicy
from keras_pbt.core.policy import comparable_reports
from keras_pbt.core.policy import unavailable_parent
from keras_pbt.core.selection import Report
from keras_pbt.core.selection import TruncationSelection
from keras_pbt.core.selection import is_better
from keras_pbt.core.space import Choice
from keras_pbt.core.space import IntUniform
from keras_pbt.core.space import LogUniform
from keras_pbt.core.space import Uniform

SPACE = {"lr": LogUniform(1e-4, 1.0), "units": IntUniform(8, 256)}


def population(metrics, step=100, interval=1):
    return [
        Report(i, step + i, m, {"lr": 0.001 * (i + 1), "units": 16 * (i + 1)}, interval)
        for i, m in enumerate(metrics)
    ]


# --- construction -----------------------------------------------------------


@pytest.mark.parametrize("seed", [-1, 1.5, True, "1", [1]])
def test_seed_errors(seed):
    with pytest.raises(ValueError, match=re.escape(f"`seed` must be a non-negative int. Received: seed={seed!r}")):
        PBTPolicy(SPACE, seed=seed)


def test_seed_defaults_and_numpy_ints():
    assert PBTPolicy(SPACE, seed=np.int64(3)).seed == 3
    a, b = PBTPolicy(SPACE), PBTPolicy(SPACE)
    assert isinstance(a.seed, int) and a.seed >= 0 and a.seed != b.seed


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"`mode`.*mode='auto'"):
        PBTPolicy(SPACE, mode="auto", seed=0)
    with pytest.raises(ValueError, match=r"quantile=0.7"):
        PBTPolicy(SPACE, quantile=0.7, seed=0)
    with pytest.raises(ValueError, match=r"`space`"):
        PBTPolicy({}, seed=0)
    with pytest.raises(ValueError, match=r"`factors`"):
        PBTPolicy(SPACE, factors=(0,), seed=0)
    with pytest.raises(ValueError, match=r"`selection`"):
        PBTPolicy(SPACE, selection="pairwise", seed=0)


def test_selection_instance_and_quantile():
    sel = TruncationSelection(0.5)
    assert PBTPolicy(SPACE, selection=sel, seed=0).selection is sel
    assert PBTPolicy(SPACE, quantile=0.25, seed=0).selection.quantile == 0.25


# --- decide -----------------------------------------------------------------


def test_docstring_example():
    policy = PBTPolicy({"lr": LogUniform(1e-4, 1e-1)}, mode="max", seed=0)
    reports = [Report(0, 10, 0.9, {"lr": 0.01}), Report(1, 10, 0.5, {"lr": 0.1})]
    d = policy.decide(1, reports, key=1, rng=np.random.default_rng(1))
    assert (d.action, d.parent) == ("exploit", 0)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_decide_keep_and_exploit(mode):
    policy = PBTPolicy(SPACE, mode=mode, quantile=0.2, factors=(2.0,), resample_probability=0.0,
                       seed=7)
    metrics = [0.1 * i for i in range(10)]
    reports = population(metrics)
    worst = 0 if mode == "max" else 9
    top = {9, 8} if mode == "max" else {0, 1}
    d = policy.decide(worst, reports, key=3, rng=np.random.default_rng(0))
    assert isinstance(d, Decision) and d.action == "exploit" and d.is_exploit
    assert d.parent in top and d.reason == "truncation"
    parent = reports[d.parent]
    assert d.parent_step == parent.step and d.parent_metric == parent.metric
    assert d.metric == metrics[worst]
    assert d.hparams_before == reports[worst].hparams
    # The new hparams are the *parent's* explored (factor 2, clipped).
    assert d.hparams["lr"] == pytest.approx(parent.hparams["lr"] * 2)
    assert d.hparams["units"] == min(parent.hparams["units"] * 2, 256)
    assert d.ops["lr"] == "* 2"
    assert d.ops["units"] in ("* 2", "* 2 (clipped)")

    middle = policy.decide(5, reports, key=3, rng=np.random.default_rng(0))
    assert middle.action == "keep" and not middle.is_exploit
    assert middle.hparams == middle.hparams_before == reports[5].hparams
    assert middle.parent is None and middle.parent_step is None and middle.parent_metric is None
    assert middle.ops == {} and middle.metric == metrics[5]
    assert middle.hparams is not reports[5].hparams


def test_decide_uses_the_custom_explore_fn_on_the_parents_hparams():
    seen = []

    def fn(hparams, rng):
        seen.append(dict(hparams))
        return {"lr": hparams["lr"] / 2}, {"lr": "halve"}

    policy = PBTPolicy(SPACE, mode="max", explore_fn=fn, seed=0)
    reports = population([0.1, 0.9])
    d = policy.decide(0, reports, key=0, rng=np.random.default_rng(0))
    assert seen == [reports[1].hparams]
    assert d.hparams == {"lr": reports[1].hparams["lr"] / 2, "units": reports[1].hparams["units"]}
    assert d.ops == {"lr": "halve", "units": "custom"}


def test_decide_respects_available():
    policy = PBTPolicy(SPACE, mode="max", quantile=0.5, seed=0)
    reports = population([0.1, 0.2, 0.8, 0.9])
    for _ in range(20):
        d = policy.decide(0, reports, key=1, rng=np.random.default_rng(_), available={2})
        assert d.parent == 2
    assert policy.decide(0, reports, key=1, rng=np.random.default_rng(0), available=set()).action == "keep"


def test_decide_needs_exactly_one_own_report():
    policy = PBTPolicy(SPACE, seed=0)
    reports = population([0.1, 0.2])
    with pytest.raises(ValueError, match=r"exactly one report of member 5; found 0"):
        policy.decide(5, reports, key=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"found 2"):
        policy.decide(0, reports + [reports[0]], key=0, rng=np.random.default_rng(0))


def test_decide_is_reproducible():
    policy = PBTPolicy(SPACE, mode="max", seed=3)
    reports = population([0.5] * 3 + [0.1, 0.9, 0.2, 0.3, 0.4])
    runs = [
        [policy.decide(m, reports, key=k, rng=np.random.default_rng([m, k])) for m in range(8)]
        for k in range(5)
    ]
    again = [
        [policy.decide(m, reports, key=k, rng=np.random.default_rng([m, k])) for m in range(8)]
        for k in range(5)
    ]
    assert runs == again


def test_nan_member_exploits_and_is_never_a_parent():
    policy = PBTPolicy(SPACE, mode="min", quantile=0.25, seed=0)
    reports = population([0.3, math.nan, 0.2, 0.1])
    d = policy.decide(1, reports, key=0, rng=np.random.default_rng(0))
    assert d.action == "exploit" and d.parent == 3 and math.isnan(d.metric)


def test_all_tied_population_never_exploits():
    policy = PBTPolicy(SPACE, mode="max", quantile=0.5, seed=0)
    reports = population([0.75] * 6)
    for key in range(20):
        for m in range(6):
            assert policy.decide(m, reports, key, np.random.default_rng(m)).action == "keep"


# --- consistency of a synchronous population --------------------------------


@given(
    metrics=st.lists(
        st.one_of(st.integers(0, 3).map(float), st.just(math.nan)), min_size=1, max_size=12
    ),
    quantile=st.sampled_from([0.1, 0.2, 0.25, 0.5]),
    mode=st.sampled_from(["min", "max"]),
    key=st.integers(0, 10**6),
    seed=st.integers(0, 2**32),
    data=st.data(),
)
@settings(max_examples=150, deadline=None)
def test_synchronous_population_sees_one_consistent_picture(metrics, quantile, mode, key, seed, data):
    policy = PBTPolicy(SPACE, mode=mode, quantile=quantile, seed=seed)
    reports = population(metrics)
    candidates = policy.parent_candidates(reports, key)
    decisions = {}
    for r in reports:
        # Every member may see the reports in its own order.
        order = data.draw(st.permutations(reports))
        assert policy.parent_candidates(order, key) == candidates
        decisions[r.member_id] = policy.decide(r.member_id, order, key, np.random.default_rng([seed, r.member_id]))
    losers = {m for m, d in decisions.items() if d.is_exploit}
    assert not losers & candidates
    for m, d in decisions.items():
        if d.is_exploit:
            assert d.parent in candidates and d.parent not in losers
            assert is_better(d.parent_metric, d.metric, mode)
            assert d.parent_metric == reports[d.parent].metric
            assert set(d.ops) == set(SPACE)
            for name, spec in SPACE.items():
                assert spec.clip(d.hparams[name]) == d.hparams[name]
        else:
            assert d.hparams == reports[m].hparams and d.parent is None


def test_tie_breaking_rotates_across_boundaries():
    policy = PBTPolicy(SPACE, mode="max", quantile=0.25, seed=1)
    reports = population([0.9, 0.9] + [0.5] * 6)  # 6 tied, 2 of them lose each time
    losers = {}
    for key in range(200):
        for m in range(2, 8):
            if policy.decide(m, reports, key, np.random.default_rng(key)).is_exploit:
                losers[m] = losers.get(m, 0) + 1
    assert set(losers) == set(range(2, 8))
    assert sum(losers.values()) == 400
    assert max(losers.values()) < 200 * 0.5  # nobody is the loser every time


def test_ranking_rng_depends_on_seed_and_key_only():
    a, b = PBTPolicy(SPACE, seed=5), PBTPolicy(SPACE, seed=5)
    assert a.ranking_rng(3).random() == b.ranking_rng(3).random()
    assert a.ranking_rng(3).random() != a.ranking_rng(4).random()
    assert a.ranking_rng(3).random() != PBTPolicy(SPACE, seed=6).ranking_rng(3).random()


# --- to_record --------------------------------------------------------------


def test_to_record_exploit_and_keep():
    policy = PBTPolicy(SPACE, mode="max", seed=0)
    reports = population([0.1, 0.9])
    d = policy.decide(0, reports, key=1, rng=np.random.default_rng(0))
    rec = d.to_record(step=100, interval=1, monitor="val_accuracy", mode="max", time=12.5)
    assert isinstance(rec, LineageRecord)
    assert rec.member_id == 0 and rec.step == 100 and rec.action == "exploit" and rec.is_exploit
    assert rec.parent == 1 and rec.parent_step == reports[1].step and rec.parent_metric == 0.9
    assert rec.hparams == d.hparams and rec.hparams is not d.hparams
    assert rec.hparams_before == reports[0].hparams and rec.ops == d.ops
    assert (rec.interval, rec.monitor, rec.mode, rec.reason, rec.time) == (
        1, "val_accuracy", "max", "truncation", 12.5)
    assert LineageRecord.from_dict(rec.to_dict()) == rec
    # The step of the snapshot actually copied overrides the report's.
    assert d.to_record(step=100, interval=1, parent_step=95).parent_step == 95
    assert type(d.to_record(step=np.int64(7), interval=np.int32(2)).step) is int

    keep = policy.decide(1, reports, key=1, rng=np.random.default_rng(0))
    rec = keep.to_record(step=101, interval=1)
    assert rec.action == "keep" and not rec.is_exploit and rec.parent is None and rec.ops == {}
    assert LineageRecord.from_dict(rec.to_dict()) == rec


def test_decision_is_frozen():
    d = Decision(0, "keep", {}, {}, 0.5)
    with pytest.raises(Exception):
        d.action = "exploit"


# --- comparable_reports -----------------------------------------------------


def hist(member, steps, metric=0.5):
    return [Report(member, s, metric, interval=i + 1) for i, s in enumerate(steps)]


def test_comparable_reports_judges_members_ahead_at_my_step():
    histories = {
        "me": hist("me", [100, 200, 300]),
        "ahead": hist("ahead", [100, 200, 300, 400, 500]),
        "same": hist("same", [100, 200, 300]),
        "behind": hist("behind", [100, 200]),
        "far": hist("far", [100]),
        "none": [],
        "future": hist("future", [400]),
    }
    out = {r.member_id: r.step for r in comparable_reports("me", 300, histories, window=100)}
    assert out == {"me": 300, "ahead": 300, "same": 300, "behind": 200}


def test_comparable_reports_window_edges_and_self():
    histories = {
        "me": hist("me", [50, 90]),
        "a": hist("a", [40]),
        "b": hist("b", [39]),
        "c": hist("c", [95, 120]),
    }
    out = {r.member_id: r.step for r in comparable_reports("me", 90, histories, window=50)}
    assert out == {"me": 90, "a": 40}  # lag 50 is in, 51 is out; c has none at <= 90
    # The deciding member is included even when its own latest report lags.
    out = {r.member_id: r.step for r in comparable_reports("me", 200, histories, window=10)}
    assert out == {"me": 90}


def test_comparable_reports_with_unsorted_ids_and_one_per_member():
    histories = {m: hist(m, range(10, 110, 10)) for m in (3, 1, 2)}
    out = comparable_reports(1, 55, histories, window=10)
    assert sorted(r.member_id for r in out) == [1, 2, 3]
    assert all(r.step == 50 for r in out)


def test_comparable_reports_feed_decide():
    policy = PBTPolicy({"lr": Uniform(0.001, 1.0), "opt": Choice(["sgd", "adam"])}, mode="max",
                       quantile=0.5, seed=0)
    hp = {"lr": 0.1, "opt": "sgd"}
    histories = {
        0: [Report(0, 100, 0.2, hp), Report(0, 200, 0.3, hp)],
        1: [Report(1, 100, 0.8, hp), Report(1, 200, 0.1, hp), Report(1, 300, 0.9, hp)],
    }
    reports = comparable_reports(0, 200, histories, window=100)
    d = policy.decide(0, reports, key=2, rng=np.random.default_rng(0))
    # Member 1 is judged at step 200 (0.1), where member 0 (0.3) is better.
    assert d.action == "keep"


def test_restart_parent_is_the_best_published_snapshot():
    from keras_pbt.core.policy import restart_parent

    assert restart_parent({}, "max") is None
    assert restart_parent({2: 0.5, 10: 0.9, 3: 0.9, 4: math.nan}, "max") == 3  # tie: id 3 < 10
    assert restart_parent({2: 0.5, 10: 0.1, 4: math.nan}, "min") == 10
    assert restart_parent({4: math.nan}, "max") == 4  # a NaN snapshot beats the initial state


def test_restart_is_one_rule_for_the_population_and_the_oracle():
    policy = PBTPolicy({"lr": Uniform(0.001, 1.0)}, mode="min", factors=(2.0,),
                       resample_probability=0.0, seed=0)
    rng = np.random.default_rng
    candidates = [Report(0, 40, 0.5, {"lr": 0.1}), Report(2, 30, 0.2, {"lr": 0.2}),
                  Report(1, 40, 9.9, {"lr": 0.3}), Report(3, 40, 0.1, {"lr": 0.4})]
    d = policy.restart(3, {"lr": 0.4}, candidates, {"lr": 0.05}, rng(0), reason="OOM")
    # Its own state is no candidate: the best other one (lowest loss) is member 2.
    assert (d.action, d.parent, d.parent_step, d.parent_metric) == ("restart", 2, 30, 0.2)
    assert d.hparams == {"lr": pytest.approx(0.4)} and d.ops == {"lr": "* 2"}
    assert d.hparams_before == {"lr": 0.4} and d.reason == "OOM" and d.metric is None
    alone = policy.restart(3, {"lr": 0.4}, [], {"lr": 0.05}, rng(0))
    assert alone.parent is None and alone.hparams == {"lr": pytest.approx(0.1)}  # initial, explored
    record = d.to_record(50, 4, "val_loss", "min")
    assert (record.action, record.parent, record.parent_step, record.interval) == ("restart", 2, 30, 4)


# --- boundary plan: the rules the callback used to own -------------------------


def _plan(policy, member, reports, key=3, progress=5, burn_in=0, last=False):
    me = next(r for r in reports if r.member_id == member)
    return policy.boundary(me, key=key, progress=progress, burn_in=burn_in, last=last)


@pytest.mark.parametrize("progress,burn_in,judged", [(2, 2, False), (1, 2, False), (3, 2, True),
                                                     (1, 0, True)])
def test_boundary_burn_in_is_judged_only_after_it(progress, burn_in, judged):
    policy = PBTPolicy(SPACE, mode="max", quantile=0.25, seed=0)
    reports = population([0.9, 0.8, 0.2, 0.1])
    plan = _plan(policy, 3, reports, progress=progress, burn_in=burn_in)
    assert plan.judged is judged
    if not judged:
        d = plan.decide(np.random.default_rng(0))
        assert (d.action, d.reason, d.parent) == ("keep", "burn-in", None)
        assert d.hparams == d.hparams_before == reports[3].hparams and d.metric == 0.1
    else:
        assert plan.reason == ""
        d = plan.with_reports(reports).decide(np.random.default_rng(0))
        assert (d.action, d.parent) == ("exploit", 0)


def test_boundary_end_of_training_keeps_even_the_worst_member():
    policy = PBTPolicy(SPACE, mode="max", quantile=0.25, seed=0)
    reports = population([0.9, 0.8, 0.2, 0.1])
    plan = _plan(policy, 3, reports, last=True)
    assert (plan.judged, plan.reason, plan.publish) == (False, "end of training", False)
    d = plan.decide()
    assert (d.action, d.reason) == ("keep", "end of training")
    with pytest.raises(ValueError, match=r"not judged \(end of training\).*Received: reports="):
        plan.with_reports(reports)


def test_boundary_publishes_exactly_the_parent_candidates():
    policy = PBTPolicy(SPACE, mode="max", quantile=0.25, seed=0)
    reports = population([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.6, 0.8])
    published = {r.member_id for r in reports if _plan(policy, r.member_id, reports).with_reports(
        reports).publish}
    assert published == {1, 7} == policy.parent_candidates(reports, 3)


def test_boundary_decision_equals_decide_with_one_ranking():
    policy = PBTPolicy(SPACE, mode="min", quantile=0.25, seed=4)
    reports = population([0.4, 0.4, 0.4, 0.1, 0.9, 0.9, 0.2, 0.9])  # ties: the rng decides
    calls = []
    rank = policy.rank
    policy.rank = lambda *a: calls.append(a) or rank(*a)
    for m in range(8):
        calls.clear()
        d = _plan(policy, m, reports).with_reports(reports).decide(np.random.default_rng(m))
        assert len(calls) == 1  # publish and decide share one ranking
        assert d == policy.decide(m, reports, 3, np.random.default_rng(m))


def test_boundary_judged_needs_reports_before_deciding():
    policy = PBTPolicy(SPACE, seed=0)
    plan = _plan(policy, 0, population([0.5, 0.6]))
    with pytest.raises(ValueError, match=r"`with_reports` before `decide`"):
        plan.decide(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"exactly one report of member 0"):
        plan.with_reports(population([0.5, 0.6])[1:])


def test_unavailable_parent_keeps_the_hparams_before():
    policy = PBTPolicy(SPACE, mode="max", quantile=0.25, seed=0)
    reports = population([0.9, 0.8, 0.2, 0.1])
    d = _plan(policy, 3, reports).with_reports(reports).decide(np.random.default_rng(0))
    assert d.is_exploit and d.hparams != d.hparams_before
    kept = unavailable_parent(d)
    assert (kept.action, kept.parent, kept.ops) == ("keep", None, {})
    assert kept.reason == "snapshot of member 0 unavailable"
    assert kept.hparams == kept.hparams_before == reports[3].hparams and kept.metric == 0.1
    with pytest.raises(ValueError, match=r"Received: decision="):
        unavailable_parent(kept)
