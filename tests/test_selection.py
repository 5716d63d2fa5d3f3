"""Ranking and truncation selection: quantiles, modes, NaN, ties."""

import collections
import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_pbt.core.selection import Report
from keras_pbt.core.selection import Selection
from keras_pbt.core.selection import TruncationSelection
from keras_pbt.core.selection import check_quantile
from keras_pbt.core.selection import get_selection
from keras_pbt.core.selection import is_better
from keras_pbt.core.selection import is_finite
from keras_pbt.core.selection import quantile_count
from keras_pbt.core.selection import rank
from keras_pbt.core.selection import resolve_mode


def reports(metrics, step=10):
    return [Report(i, step, m, {"lr": 0.01 * (i + 1)}) for i, m in enumerate(metrics)]


def members(ranked):
    return [r.member_id for r in ranked]


# --- quantile_count / check_quantile ----------------------------------------


@pytest.mark.parametrize(
    "n,q,expected",
    [
        (0, 0.2, 0), (1, 0.2, 0), (1, 0.5, 0), (2, 0.2, 1), (2, 0.5, 1), (3, 0.2, 1),
        (3, 0.5, 1), (5, 0.2, 1), (5, 0.25, 2), (5, 0.5, 2), (10, 0.2, 2), (10, 0.25, 3),
        (10, 0.3, 3), (10, 0.1, 1), (10, 0.5, 5), (20, 0.15, 3), (100, 0.07, 7),
        (3, 0.1, 1), (7, 0.3, 3),
    ],
)
def test_quantile_count_table(n, q, expected):
    assert quantile_count(n, q) == expected


def test_quantile_count_docstring_example():
    assert [quantile_count(n, 0.2) for n in (1, 2, 3, 5, 10)] == [0, 1, 1, 1, 2]


@given(n=st.integers(0, 10_000), thousandths=st.integers(1, 500))
@settings(max_examples=500, deadline=None)
def test_quantile_count_matches_exact_decimal_arithmetic(n, thousandths):
    q = thousandths / 1000  # a decimal quantile as a user writes it, e.g. 0.3
    exact = math.ceil(Fraction(n * thousandths, 1000))
    k = quantile_count(n, q)
    assert k == min(exact, n // 2)  # n=10, q=0.3 is 3, not 4 (10 * 0.3 == 3.0000000000000004)
    assert k <= n // 2
    if n >= 2:
        assert k >= 1


@given(n=st.integers(2, 1000), q=st.floats(0, 0.5, exclude_min=True))
@settings(max_examples=300, deadline=None)
def test_quantile_count_bounds_for_any_float_quantile(n, q):
    k = quantile_count(n, q)
    assert 1 <= k <= n // 2


@pytest.mark.parametrize("q", [5e-324, 1e-300, 1e-12, 1e-10])
def test_tiny_quantile_still_selects_one(q):
    assert quantile_count(2, q) == 1 and quantile_count(100, q) == 1
    assert quantile_count(1, q) == 0


@pytest.mark.parametrize("q", [0, 0.0, -0.1, 0.51, 1, math.nan, math.inf, True, "0.2", None])
def test_check_quantile_errors(q):
    with pytest.raises(ValueError, match=rf"`quantile` must be in \(0, 0.5\]. Received: quantile={q!r}"):
        check_quantile(q)


def test_check_quantile_ok():
    assert check_quantile(0.5) == 0.5 and check_quantile(np.float64(0.2)) == 0.2
    assert type(check_quantile(np.float32(0.25))) is float


# --- resolve_mode -----------------------------------------------------------


@pytest.mark.parametrize(
    "monitor,expected",
    [
        ("val_accuracy", "max"), ("accuracy", "max"), ("acc", "max"),
        ("sparse_categorical_accuracy", "max"), ("val_auc", "max"), ("precision", "max"),
        ("val_recall", "max"), ("f1_score", "max"), ("mean_iou", "max"), ("score", "max"),
        ("loss", "min"), ("val_loss", "min"), ("mean_squared_error", "min"), ("val_mse", "min"),
        ("mae", "min"), ("val_categorical_crossentropy", "min"), ("perplexity", "min"),
        ("VAL_LOSS", "min"), ("Val_Accuracy", "max"),
    ],
)
def test_resolve_mode_auto(monitor, expected):
    assert resolve_mode("auto", monitor) == expected


def test_resolve_mode_explicit_wins():
    assert resolve_mode("min", "val_accuracy") == "min"
    assert resolve_mode("max", "val_loss") == "max"
    assert resolve_mode("max", "anything") == "max"


def test_resolve_mode_errors():
    with pytest.raises(ValueError, match=r"monitor='reward'.*mode='min' or mode='max'"):
        resolve_mode("auto", "reward")
    for bad in ("maximize", "MAX", None, ""):
        with pytest.raises(ValueError, match=rf"`mode`.*mode={bad!r}"):
            resolve_mode(bad, "val_loss")


# --- is_finite / is_better ------------------------------------


def test_is_finite_and_is_better():
    assert is_finite(1) and is_finite(np.float32(0.5)) and is_finite(np.int64(3))
    for bad in (math.nan, math.inf, -math.inf, None, "1", np.float64("nan")):
        assert not is_finite(bad)
    assert is_better(2, 1, "max") and not is_better(1, 2, "max") and not is_better(1, 1, "max")
    assert is_better(1, 2, "min") and not is_better(1, 1, "min")
    assert is_better(0.0, math.nan, "max") and is_better(0.0, -math.inf, "max")
    assert is_better(0.0, math.inf, "min") and is_better(1e9, math.nan, "min")
    for x in (math.nan, math.inf, -math.inf):
        assert not is_better(x, 0.0, "max") and not is_better(x, 0.0, "min")
        assert not is_better(x, math.nan, "max")


# --- rank -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["min", "max"])
def test_rank_non_finite_last(mode):
    rs = reports([0.3, math.nan, math.inf, 0.1, -math.inf, 0.2, None])
    ranked = rank(rs, mode, np.random.default_rng(0))
    assert sorted(members(ranked)) == list(range(7))
    finite = [r.metric for r in ranked[:3]]
    assert finite == ([0.1, 0.2, 0.3] if mode == "min" else [0.3, 0.2, 0.1])
    assert set(members(ranked[3:])) == {1, 2, 4, 6}


def test_rank_does_not_mutate_and_returns_new_list():
    rs = reports([0.3, 0.1, 0.2])
    copy = list(rs)
    out = rank(rs, "max", np.random.default_rng(0))
    assert rs == copy and out is not rs


def test_rank_tie_break_deterministic_and_order_independent():
    metrics = [0.5] * 6 + [0.7, 0.7, 0.2, math.nan, math.nan]
    rs = reports(metrics)
    base = members(rank(rs, "max", np.random.default_rng([3, 7])))
    shuffler = np.random.default_rng(99)
    for _ in range(30):
        perm = list(shuffler.permutation(len(rs)))
        shuffled = [rs[i] for i in perm]
        assert members(rank(shuffled, "max", np.random.default_rng([3, 7]))) == base
    # Ties stay within their metric class.
    assert set(base[:2]) == {6, 7} and set(base[2:8]) == set(range(6)) and base[8] == 8


def test_rank_with_string_member_ids_is_order_independent():
    rs = [Report(m, 5, 1.0) for m in ("b", "a", "d", "c")]
    a = members(rank(rs, "min", np.random.default_rng(1)))
    b = members(rank(list(reversed(rs)), "min", np.random.default_rng(1)))
    assert a == b and sorted(a) == ["a", "b", "c", "d"]


def test_ties_do_not_always_land_in_the_same_place():
    """Ray Tune's stable sort put the same tied members in the bottom every time."""
    n, keys = 10, 400
    rs = reports([0.8] * n)  # a converged population: everyone tied
    bottom_counts = collections.Counter()
    first_counts = collections.Counter()
    orders = set()
    for key in range(keys):
        ranked = members(rank(rs, "max", np.random.default_rng([0, key])))
        orders.add(tuple(ranked))
        bottom_counts.update(ranked[-2:])
        first_counts[ranked[0]] += 1
    assert len(orders) > keys * 0.9
    # Each member is in the bottom two about 2/10 of the time (binomial, 5 sd).
    p = 2 / n
    sd = math.sqrt(keys * p * (1 - p))
    for m in range(n):
        assert abs(bottom_counts[m] - keys * p) < 5 * sd, bottom_counts
        assert first_counts[m] > 0


def test_ties_among_the_worst_rotate_who_loses():
    rs = reports([0.9, 0.8, 0.7, 0.6, 0.5] + [0.1] * 5)  # 5 tied at the bottom, k = 2
    losers = collections.Counter()
    for key in range(300):
        ranked = rank(rs, "max", np.random.default_rng([11, key]))
        bottom = members(ranked[-2:])
        assert set(bottom) <= {5, 6, 7, 8, 9}
        losers.update(bottom)
    assert set(losers) == {5, 6, 7, 8, 9}
    assert all(abs(c - 120) < 5 * math.sqrt(300 * 0.4 * 0.6) for c in losers.values()), losers


# --- TruncationSelection ----------------------------------------------------


def test_truncation_interface_and_validation():
    sel = TruncationSelection()
    assert isinstance(sel, Selection) and sel.name == "truncation" and sel.quantile == 0.2
    with pytest.raises(ValueError, match="quantile=0.6"):
        TruncationSelection(0.6)
    base = Selection()
    with pytest.raises(NotImplementedError):
        base.parent_candidates([], "max")
    with pytest.raises(NotImplementedError):
        base.choose_parent(0, [], "max", np.random.default_rng(0))


def test_get_selection():
    sel = get_selection("truncation", 0.25)
    assert isinstance(sel, TruncationSelection) and sel.quantile == 0.25
    inst = TruncationSelection(0.5)
    assert get_selection(inst) is inst
    with pytest.raises(ValueError, match=r"`selection`.*\['tournament', 'truncation', 'ttest'\].*selection='roulette'"):
        get_selection("roulette")


@pytest.mark.parametrize("mode", ["min", "max"])
def test_truncation_only_bottom_gets_parent_from_top(mode):
    sel = TruncationSelection(0.2)
    metrics = [float(i) for i in range(10)]
    rs = reports(metrics)
    ranked = rank(rs, mode, np.random.default_rng(0))
    top, bottom = members(ranked[:2]), members(ranked[-2:])
    assert sel.parent_candidates(ranked, mode) == top
    if mode == "max":
        assert set(top) == {9, 8} and set(bottom) == {0, 1}
    else:
        assert set(top) == {0, 1} and set(bottom) == {9, 8}
    rng = np.random.default_rng(5)
    parents = collections.Counter()
    for m in range(10):
        for _ in range(50):
            parent = sel.choose_parent(m, ranked, mode, rng)
            if m in bottom:
                assert parent is not None and parent.member_id in top
                assert is_better(parent.metric, metrics[m], mode)
                parents[parent.member_id] += 1
            else:
                assert parent is None
    assert set(parents) == set(top)  # the parent is drawn, not always the best


def test_truncation_never_copies_a_tie():
    sel = TruncationSelection(0.5)
    rs = reports([0.7] * 8)
    for key in range(50):
        ranked = rank(rs, "max", np.random.default_rng([0, key]))
        for m in range(8):
            assert sel.choose_parent(m, ranked, "max", np.random.default_rng(key)) is None


def test_truncation_skips_top_members_that_only_tie_the_loser():
    sel = TruncationSelection(0.5)
    # k = 2: top {0 (0.9), 1 (0.5)}, bottom {2, 3} all 0.5 except member 0.
    rs = reports([0.9, 0.5, 0.5, 0.5])
    for key in range(30):
        ranked = rank(rs, "max", np.random.default_rng([1, key]))
        for m in members(ranked[-2:]):
            parent = sel.choose_parent(m, ranked, "max", np.random.default_rng(key))
            assert parent is not None and parent.member_id == 0


def test_truncation_available_filter():
    sel = TruncationSelection(0.25)
    rs = reports([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])  # k = 2: top {7, 6}, bottom {0, 1}
    ranked = rank(rs, "max", np.random.default_rng(0))
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert sel.choose_parent(0, ranked, "max", rng, available={6, 3}).member_id == 6
    assert sel.choose_parent(0, ranked, "max", rng, available=set()) is None
    assert sel.choose_parent(0, ranked, "max", rng, available={3, 4}) is None
    assert {sel.choose_parent(1, ranked, "max", rng, available=None).member_id for _ in range(100)} == {6, 7}


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_member_is_a_loser(mode, bad):
    sel = TruncationSelection(0.2)
    rs = reports([0.4, 0.5, bad, 0.6, 0.3])  # k = 1
    ranked = rank(rs, mode, np.random.default_rng(0))
    assert ranked[-1].member_id == 2
    parent = sel.choose_parent(2, ranked, mode, np.random.default_rng(0))
    assert parent is not None and parent.member_id == (3 if mode == "max" else 4)


def test_all_nan_population_does_not_exploit():
    sel = TruncationSelection(0.5)
    rs = reports([math.nan] * 4)
    ranked = rank(rs, "max", np.random.default_rng(0))
    for m in range(4):
        assert sel.choose_parent(m, ranked, "max", np.random.default_rng(0)) is None


def test_truncation_small_populations():
    sel = TruncationSelection(0.2)
    one = rank(reports([0.1]), "max", np.random.default_rng(0))
    assert sel.choose_parent(0, one, "max", np.random.default_rng(0)) is None
    assert sel.parent_candidates(one, "max") == []
    two = rank(reports([0.1, 0.9]), "max", np.random.default_rng(0))
    assert sel.choose_parent(0, two, "max", np.random.default_rng(0)).member_id == 1
    assert sel.choose_parent(1, two, "max", np.random.default_rng(0)) is None


@given(
    metrics=st.lists(
        st.one_of(st.integers(0, 4).map(float), st.sampled_from([math.nan, math.inf, -math.inf])),
        min_size=1,
        max_size=12,
    ),
    q=st.sampled_from([0.1, 0.2, 0.25, 0.3, 0.5]),
    mode=st.sampled_from(["min", "max"]),
    key=st.integers(0, 2**31),
)
@settings(max_examples=300, deadline=None)
def test_truncation_invariants(metrics, q, mode, key):
    sel = TruncationSelection(q)
    rs = reports(metrics)
    ranked = rank(rs, mode, np.random.default_rng([0, key]))
    n, k = len(rs), quantile_count(len(rs), q)
    candidates = set(sel.parent_candidates(ranked, mode))
    assert len(candidates) == k
    bottom = set(members(ranked[n - k:])) if k else set()
    assert not candidates & bottom
    # Best-first order: no later report is strictly better than an earlier one.
    for a, b in zip(ranked, ranked[1:]):
        assert not is_better(b.metric, a.metric, mode)
    rng = np.random.default_rng(key)
    for r in rs:
        parent = sel.choose_parent(r.member_id, ranked, mode, rng)
        if parent is None:
            continue
        assert r.member_id in bottom
        assert parent.member_id in candidates and parent.member_id != r.member_id
        assert is_better(parent.metric, r.metric, mode)


def test_report_is_frozen_with_defaults():
    r = Report(0, 10, 0.5)
    assert r.hparams == {} and r.interval == 0 and r.time == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.metric = 1.0
