"""Noise-aware exploitation (keras_pbt.core.noise): margins and the policy's use of them."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_pbt
from keras_pbt.core.noise import FixedMargin
from keras_pbt.core.noise import StandardError
from keras_pbt.core.noise import get_margin
from keras_pbt.core.noise import proportion_spread
from keras_pbt.core.policy import PBTPolicy
from keras_pbt.core.selection import Report
from keras_pbt.core.space import LogUniform

SPACE = {"lr": LogUniform(1e-4, 1e-1)}


def acc(member, value, count=500):
    return Report(member, 10, value, {"lr": 0.01}, count=count,
                  spread=proportion_spread("val_accuracy", value))


# --- proportion_spread --------------------------------------------------------


@pytest.mark.parametrize("monitor", ["val_accuracy", "accuracy", "val_sparse_categorical_accuracy",
                                     "val_binary_accuracy", "acc", "val_acc"])
def test_proportion_spread_of_accuracies(monitor):
    assert proportion_spread(monitor, 0.9) == pytest.approx(0.3)
    assert proportion_spread(monitor, 0.5) == pytest.approx(0.5)
    assert proportion_spread(monitor, 1.0) == 0.0
    assert proportion_spread(monitor, 0.0) == 0.0


@pytest.mark.parametrize("monitor", ["val_loss", "loss", "val_mse", "val_auc", "val_mae"])
def test_proportion_spread_is_unknown_for_other_metrics(monitor):
    assert proportion_spread(monitor, 0.3) is None


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.1, 1.5])
def test_proportion_spread_is_unknown_outside_zero_one(value):
    assert proportion_spread("val_accuracy", value) is None


# --- StandardError ------------------------------------------------------------


@given(p=st.floats(0.0, 1.0), q=st.floats(0.0, 1.0), n=st.integers(1, 100_000),
       z=st.floats(0.0, 4.0))
@settings(max_examples=300, deadline=None)
def test_standard_error_threshold_is_z_binomial_errors_of_the_difference(p, q, n, z):
    expected = z * math.sqrt(p * (1 - p) / n + q * (1 - q) / n)
    assert StandardError(z).threshold(acc(0, p, n), acc(1, q, n)) == pytest.approx(expected,
                                                                                  abs=1e-9)


def test_standard_error_on_500_examples():
    # 0.93 vs 0.91 on 500 examples: one standard error of the difference is
    # 1.71 points, so the 2-point gain counts at z=1 and not at z=2.
    a, b = acc(0, 0.93), acc(1, 0.91)
    assert StandardError(1.0).threshold(a, b) == pytest.approx(0.01715, abs=1e-5)
    assert StandardError(1.0).exceeds(a, b, "max")
    assert not StandardError(2.0).exceeds(a, b, "max")
    assert not StandardError(1.0).exceeds(b, a, "max")  # worse is never beyond


def test_standard_error_grows_as_the_split_shrinks():
    assert StandardError().exceeds(acc(0, 0.93, 5000), acc(1, 0.91, 5000), "max")
    assert not StandardError().exceeds(acc(0, 0.93, 100), acc(1, 0.91, 100), "max")


def test_standard_error_unknown_count_or_spread_is_any_strict_difference():
    for a, b in [(Report(0, 1, 0.93), Report(1, 1, 0.929)),
                 (Report(0, 1, 0.93, count=500), Report(1, 1, 0.929, count=500)),
                 (Report(0, 1, 0.3, spread=0.5), Report(1, 1, 0.31, spread=0.5))]:
        assert StandardError().threshold(a, b) == 0.0
    assert StandardError().exceeds(Report(0, 1, 0.93), Report(1, 1, 0.929), "max")
    assert not StandardError().exceeds(Report(0, 1, 0.93), Report(1, 1, 0.93), "max")


def test_standard_error_of_a_loss_with_a_known_spread_in_min_mode():
    a = Report(0, 1, 0.50, count=400, spread=0.4)  # se 0.02 each, 0.0283 for the difference
    b = Report(1, 1, 0.53, count=400, spread=0.4)
    assert StandardError(1.0).exceeds(a, b, "min")
    assert not StandardError(1.0).exceeds(b, a, "min")
    assert not StandardError(1.1).exceeds(a, b, "min")


@pytest.mark.parametrize("margin", [StandardError(3.0), FixedMargin(0.5)])
def test_a_non_finite_loser_is_beaten_by_any_finite_parent(margin):
    for bad in (math.nan, math.inf, -math.inf):
        assert margin.exceeds(acc(0, 0.2), Report(1, 1, bad, count=500), "max")
        assert not margin.exceeds(Report(1, 1, bad, count=500), acc(0, 0.2), "max")
    assert margin.exceeds(Report(0, 1, 5.0), Report(1, 1, math.nan), "min")


@pytest.mark.parametrize("z", [-1.0, math.nan, math.inf, "1", True, None])
def test_standard_error_rejects_a_bad_z(z):
    with pytest.raises(ValueError, match="Received: z="):
        StandardError(z)


# --- FixedMargin / get_margin --------------------------------------------------


@pytest.mark.parametrize("mode,parent,loser,delta,expected", [
    ("max", 0.93, 0.92, 0.02, False), ("max", 0.95, 0.92, 0.02, True),
    ("max", 0.94, 0.92, 0.02, False),  # equal to the margin is not beyond it
    ("min", 0.20, 0.25, 0.02, True), ("min", 0.24, 0.25, 0.02, False),
    ("max", 0.9, 0.9, 0.0, False), ("max", 0.90001, 0.9, 0.0, True),
])
def test_fixed_margin(mode, parent, loser, delta, expected):
    assert FixedMargin(delta).exceeds(Report(0, 1, parent), Report(1, 1, loser), mode) is expected


@pytest.mark.parametrize("delta", [-0.1, math.nan, math.inf, "0.1", False])
def test_fixed_margin_rejects_a_bad_delta(delta):
    with pytest.raises(ValueError, match="Received: delta="):
        FixedMargin(delta)


def test_get_margin():
    assert get_margin(None) == FixedMargin(0.0)
    assert get_margin(0) == FixedMargin(0.0)
    assert get_margin(0.01) == FixedMargin(0.01)
    se = StandardError(2.0)
    assert get_margin(se) is se
    for bad in ("auto", [0.1], True):
        with pytest.raises(ValueError, match="Received: margin="):
            get_margin(bad)
    with pytest.raises(ValueError, match="Received: margin="):
        keras_pbt.Policy(margin="loud")


# --- the policy's decisions with a margin ---------------------------------------


def decide_all(policy, reports, key=1):
    return {r.member_id: policy.decide(r.member_id, reports, key, np.random.default_rng(r.member_id))
            for r in reports}


def test_a_margin_keeps_losers_within_noise_and_says_why():
    # Five members half a point apart on 500 examples: truncation alone makes
    # the last copy the first (2 points better); one standard error of that
    # difference is 1.7 points, so z=1 copies and z=2 does not.
    reports = [acc(m, v) for m, v in enumerate([0.93, 0.925, 0.92, 0.915, 0.91])]
    plain = decide_all(PBTPolicy(SPACE, "max", seed=0), reports)
    assert plain[4].action == "exploit" and plain[4].parent == 0
    z1 = decide_all(PBTPolicy(SPACE, "max", seed=0, margin=StandardError(1.0)), reports)
    assert z1[4].action == "exploit" and z1[4].parent == 0
    z2 = decide_all(PBTPolicy(SPACE, "max", seed=0, margin=StandardError(2.0)), reports)
    assert [d.action for d in z2.values()] == ["keep"] * 5
    assert z2[4].reason == "no better member beyond the margin (StandardError(z=2.0))"
    assert z2[0].reason == "selection kept it"  # the best was never going to copy


def test_a_margin_narrows_the_parents_to_those_beyond_it():
    # Truncation with quantile 0.5: the two worst may copy either of the two
    # best; only member 0 is beyond a 3-point margin from member 3.
    reports = [Report(m, 10, v, {"lr": 0.01}) for m, v in enumerate([0.95, 0.93, 0.91, 0.915])]
    policy = PBTPolicy(SPACE, "max", quantile=0.5, seed=0, margin=0.03)
    parents = {policy.decide(2, reports, 1, np.random.default_rng(s)).parent for s in range(40)}
    assert parents == {0}
    plain = PBTPolicy(SPACE, "max", quantile=0.5, seed=0)
    assert {plain.decide(2, reports, 1, np.random.default_rng(s)).parent
            for s in range(40)} == {0, 1}


def test_a_margin_does_not_change_the_members_own_draws():
    # The probe that tells "within the margin" uses a copy of the generator.
    reports = [acc(m, v) for m, v in enumerate([0.93, 0.925, 0.92, 0.915, 0.91])]
    policy = PBTPolicy(SPACE, "max", seed=0, margin=StandardError(2.0))
    rng = np.random.default_rng(7)
    assert policy.decide(4, reports, 1, rng).action == "keep"
    assert rng.integers(1 << 30) == np.random.default_rng(7).integers(1 << 30)


def test_a_margin_with_available_keeps_both_restrictions():
    reports = [Report(m, 10, v, {"lr": 0.01}) for m, v in enumerate([0.99, 0.98, 0.5, 0.4])]
    policy = PBTPolicy(SPACE, "max", quantile=0.5, seed=0, margin=0.1)
    for s in range(20):
        d = policy.decide(3, reports, 1, np.random.default_rng(s), available={1})
        assert d.parent == 1
    assert policy.decide(3, reports, 1, np.random.default_rng(0), available=set()).action == "keep"


def test_fire_ignores_the_margin():
    assert not keras_pbt.FireSelection().compares_metrics
    assert keras_pbt.TruncationSelection().compares_metrics


@given(metrics=st.lists(st.floats(0.0, 1.0), min_size=2, max_size=12),
       z=st.floats(0.0, 3.0), n=st.integers(10, 5000), seed=st.integers(0, 1000))
@settings(max_examples=200, deadline=None)
def test_every_exploit_under_a_margin_is_beyond_it(metrics, z, n, seed):
    reports = [acc(m, v, n) for m, v in enumerate(metrics)]
    margin = StandardError(z)
    policy = PBTPolicy(SPACE, "max", seed=seed, margin=margin)
    plain = PBTPolicy(SPACE, "max", seed=seed)
    for r in reports:
        d = policy.decide(r.member_id, reports, 3, np.random.default_rng(seed))
        if d.is_exploit:
            parent = next(p for p in reports if p.member_id == d.parent)
            assert margin.exceeds(parent, r, "max")
        else:
            # Without the margin it would have copied only if some better
            # member was within the margin.
            p = plain.decide(r.member_id, reports, 3, np.random.default_rng(seed))
            if p.is_exploit:
                assert d.reason.startswith("no better member beyond the margin")
