"""Tournament and Welch t-test selection, and the Student-t maths behind it.

The t distribution is computed from the regularized incomplete beta
function (no SciPy at run time); it is checked against closed forms,
printed table values and, where SciPy happens to be installed, SciPy.
"""

import collections
import itertools
import math

import numpy as np
import pytest

import keras_pbt
from keras_pbt.core.policy import PBTPolicy
from keras_pbt.core.selection import Report
from keras_pbt.core.selection import TournamentSelection
from keras_pbt.core.selection import TruncationSelection
from keras_pbt.core.selection import TTestSelection
from keras_pbt.core.selection import betainc
from keras_pbt.core.selection import get_selection
from keras_pbt.core.selection import is_better
from keras_pbt.core.selection import rank
from keras_pbt.core.selection import student_t_sf
from keras_pbt.core.selection import welch_ttest
from keras_pbt.core.space import LogUniform

# --- the regularized incomplete beta function -------------------------------

XS = [0.0, 1e-6, 0.01, 0.1, 0.25, 0.5, 0.7, 0.9, 0.999, 1.0]


@pytest.mark.parametrize("x", XS)
def test_betainc_closed_forms(x):
    assert betainc(1, 1, x) == pytest.approx(x, abs=1e-14)
    for a in (0.5, 2.0, 7.5):
        assert betainc(a, 1, x) == pytest.approx(x**a, abs=1e-13)
        assert betainc(1, a, x) == pytest.approx(1 - (1 - x) ** a, abs=1e-13)
    assert betainc(0.5, 0.5, x) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)), abs=1e-13)
    # I_x(2, 2) = 3x^2 - 2x^3
    assert betainc(2, 2, x) == pytest.approx(3 * x**2 - 2 * x**3, abs=1e-13)


@pytest.mark.parametrize("a,b", [(0.3, 4.0), (5.0, 0.5), (20.0, 30.0), (100.0, 0.5), (2.5, 2.5)])
def test_betainc_symmetry_and_monotone(a, b):
    xs = np.linspace(0, 1, 41)
    values = [betainc(a, b, float(x)) for x in xs]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(u <= v + 1e-15 for u, v in zip(values, values[1:]))
    for x in xs:
        assert betainc(a, b, float(x)) == pytest.approx(1 - betainc(b, a, 1 - float(x)), abs=1e-12)


def test_betainc_errors():
    for a, b, x, match in [(0, 1, 0.5, "a=0"), (1, -1, 0.5, "b=-1"), (1, 1, 1.5, "x=1.5"),
                           (1, 1, -0.1, "x=-0.1")]:
        with pytest.raises(ValueError, match=match):
            betainc(a, b, x)


# --- the Student t distribution ---------------------------------------------

# Two-sided critical values t such that P(|T| > t) = p, from a printed table.
T_TABLE = [
    (1, 0.10, 6.314), (1, 0.05, 12.706), (1, 0.01, 63.657),
    (2, 0.05, 4.303), (2, 0.01, 9.925),
    (3, 0.05, 3.182), (5, 0.05, 2.571), (5, 0.01, 4.032),
    (10, 0.20, 1.372), (10, 0.10, 1.812), (10, 0.05, 2.228), (10, 0.01, 3.169),
    (20, 0.05, 2.086), (30, 0.05, 2.042), (30, 0.001, 3.646),
    (60, 0.05, 2.000), (120, 0.05, 1.980), (1000, 0.05, 1.962),
]


@pytest.mark.parametrize("df,p,t", T_TABLE)
def test_student_t_matches_table(df, p, t):
    # The table rounds t to 3 decimals: compare p within what that rounding allows.
    got = 2 * student_t_sf(t, df)
    lo, hi = 2 * student_t_sf(t + 0.0005, df), 2 * student_t_sf(t - 0.0005, df)
    assert lo <= p <= hi, (got, p)
    assert got == pytest.approx(p, rel=0.02)


@pytest.mark.parametrize("t", [-30.0, -2.0, -0.5, 0.0, 0.3, 1.0, 4.0, 100.0])
def test_student_t_closed_forms(t):
    assert student_t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-13)
    assert student_t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(t * t + 2)), abs=1e-13)
    assert student_t_sf(t, 7.3) + student_t_sf(-t, 7.3) == pytest.approx(1.0, abs=1e-13)
    # Many degrees of freedom: the normal distribution.
    assert student_t_sf(t, 1e7) == pytest.approx(0.5 * math.erfc(t / math.sqrt(2)), abs=1e-6)


def test_student_t_limits_and_errors():
    assert student_t_sf(0.0, 3) == 0.5
    assert student_t_sf(math.inf, 3) == 0.0 and student_t_sf(-math.inf, 3) == 1.0
    with pytest.raises(ValueError, match="df=0"):
        student_t_sf(1.0, 0)


def test_student_t_and_welch_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for t, df in itertools.product([-5.0, -1.3, 0.01, 0.7, 2.2, 9.0], [0.7, 1.0, 2.5, 4.0, 13.3, 80.0]):
        assert student_t_sf(t, df) == pytest.approx(float(stats.t.sf(t, df)), rel=1e-9, abs=1e-15)
    rng = np.random.default_rng(0)
    for _ in range(50):
        na, nb = rng.integers(2, 12, size=2)
        a = rng.normal(rng.normal(), rng.uniform(0.1, 3), na)
        b = rng.normal(rng.normal(), rng.uniform(0.1, 3), nb)
        t, p = welch_ttest(a, b)
        ref = stats.ttest_ind(a, b, equal_var=False)
        assert t == pytest.approx(float(ref.statistic), rel=1e-10)
        assert p == pytest.approx(float(ref.pvalue), rel=1e-8, abs=1e-15)


# --- Welch's t-test -----------------------------------------------------------


def test_welch_hand_computed():
    # a: mean 2, var 1; b: mean 5.1667, var 1.5833 (n = 3 each).
    t, p = welch_ttest([1.0, 2.0, 3.0], [4.0, 5.0, 6.5])
    va, vb = 1.0 / 3, 1.5833333333333333 / 3
    assert t == pytest.approx((2.0 - 31 / 6) / math.sqrt(va + vb), rel=1e-12)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    assert df == pytest.approx(3.8059405940594, rel=1e-10)
    assert p == pytest.approx(2 * student_t_sf(abs(t), df), rel=1e-12)
    assert 0.02 < p < 0.04
    assert welch_ttest([4.0, 5.0, 6.5], [1.0, 2.0, 3.0]) == pytest.approx((-t, p))


def test_welch_constant_samples_and_errors():
    assert welch_ttest([1.0, 1.0], [1.0, 1.0]) == (0.0, 1.0)
    t, p = welch_ttest([2.0, 2.0, 2.0], [1.0, 1.0])
    assert t == math.inf and p == 0.0
    t, p = welch_ttest([2.0, 2.0], [1.0, 1.5])  # one constant side: still a finite test
    assert math.isfinite(t) and 0 < p < 1
    with pytest.raises(ValueError, match="two values per sample"):
        welch_ttest([1.0], [1.0, 2.0])


# --- names and parameters -------------------------------------------------------


def test_get_selection_by_name_and_instances():
    assert isinstance(get_selection("tournament"), TournamentSelection)
    ttest = get_selection("ttest")
    assert isinstance(ttest, TTestSelection)
    assert (ttest.window, ttest.significance, ttest.min_evaluations, ttest.history_length) == (10, 0.05, 2, 10)
    assert get_selection("truncation", 0.3).quantile == 0.3
    mine = TTestSelection(window=4, significance=0.2, min_evaluations=3)
    assert get_selection(mine) is mine and mine.history_length == 4
    assert TournamentSelection().history_length == TruncationSelection().history_length == 1
    assert keras_pbt.TTestSelection is TTestSelection and keras_pbt.TournamentSelection is TournamentSelection
    for bad in (None, 3, "TTEST", "t-test"):
        with pytest.raises(ValueError, match=r"\['tournament', 'truncation', 'ttest'\]"):
            get_selection(bad)


@pytest.mark.parametrize("kwargs,match", [
    (dict(window=1), "window=1"), (dict(window=2.5), "window=2.5"), (dict(window=True), "window=True"),
    (dict(significance=0), "significance=0"), (dict(significance=1.0), "significance=1.0"),
    (dict(significance=math.nan), "significance=nan"),
    (dict(min_evaluations=1), "min_evaluations=1"), (dict(window=3, min_evaluations=4), "min_evaluations=4"),
])
def test_ttest_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TTestSelection(**kwargs)


# --- binary tournament -----------------------------------------------------------


def _reports(metrics):
    return [Report(i, 10, m, {"lr": 0.01 * (i + 1)}) for i, m in enumerate(metrics)]


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_tournament_exhaustive_small_populations(n, mode):
    """Every order of n distinct metrics: a member copies only strictly better
    members, each other member is met uniformly, so the exploit rate is
    (#better) / (n - 1)."""
    sel = TournamentSelection()
    draws = 600
    for perm in itertools.permutations(range(n)):
        reports = _reports([float(v) for v in perm])
        ranked = rank(reports, mode, np.random.default_rng(0))
        assert set(sel.parent_candidates(ranked, mode)) == set(range(n))
        for me in reports:
            better = {r.member_id for r in reports if is_better(r.metric, me.metric, mode)}
            rng = np.random.default_rng([n, me.member_id, *perm])
            parents = collections.Counter()
            for _ in range(draws):
                parent = sel.choose_parent(me.member_id, ranked, mode, rng)
                if parent is not None:
                    assert parent.member_id in better
                    parents[parent.member_id] += 1
            if not better:
                assert not parents
                continue
            assert set(parents) == better
            rate = sum(parents.values()) / draws
            p = len(better) / (n - 1)
            assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / draws) + 1e-9


def test_tournament_ties_nan_and_available():
    sel = TournamentSelection()
    tied = rank(_reports([0.5] * 4), "max", np.random.default_rng(0))
    rng = np.random.default_rng(1)
    assert all(sel.choose_parent(m, tied, "max", rng) is None for m in range(4) for _ in range(50))
    # A NaN member copies whichever finite member it meets; nobody copies it.
    ranked = rank(_reports([0.1, math.nan, 0.3]), "max", np.random.default_rng(0))
    assert {sel.choose_parent(1, ranked, "max", rng).member_id for _ in range(100)} == {0, 2}
    assert all(
        (p := sel.choose_parent(0, ranked, "max", rng)) is None or p.member_id == 2 for _ in range(100)
    )
    # Only members with a snapshot are met; none available: keep.
    ranked = rank(_reports([0.1, 0.2, 0.3, 0.4]), "max", np.random.default_rng(0))
    assert {sel.choose_parent(0, ranked, "max", rng, available={3}).member_id for _ in range(50)} == {3}
    assert sel.choose_parent(0, ranked, "max", rng, available=set()) is None
    assert sel.choose_parent(0, ranked, "max", rng, available={0}) is None
    solo = rank(_reports([0.1]), "max", np.random.default_rng(0))
    assert sel.choose_parent(0, solo, "max", rng) is None


def test_tournament_is_seeded_and_order_independent():
    sel = TournamentSelection()
    reports = _reports([0.3, 0.9, 0.1, 0.5, 0.7, 0.2])
    a = rank(reports, "max", np.random.default_rng(4))
    b = rank(list(reversed(reports)), "max", np.random.default_rng(4))
    for m in range(6):
        got_a = [getattr(sel.choose_parent(m, a, "max", np.random.default_rng([m, k])), "member_id", None)
                 for k in range(20)]
        got_b = [getattr(sel.choose_parent(m, b, "max", np.random.default_rng([m, k])), "member_id", None)
                 for k in range(20)]
        assert got_a == got_b


# --- Welch's t-test selection --------------------------------------------------------


def _r(member, recent):
    return Report(member, 10 * len(recent), recent[-1], {"lr": 0.1}, recent=tuple(recent))


def _ttest_parent(sel, me, other, mode="max", draws=1):
    ranked = rank([me, other], mode, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    out = {getattr(sel.choose_parent(me.member_id, ranked, mode, rng), "member_id", None)
           for _ in range(draws)}
    assert len(out) == 1  # two members: the other is always the one met
    return out.pop()


@pytest.mark.parametrize("mode", ["min", "max"])
def test_ttest_rule(mode):
    sel = TTestSelection(window=5, significance=0.05)
    sign = 1.0 if mode == "max" else -1.0
    low_noise = [0.50, 0.51, 0.49, 0.50, 0.52]
    better = [sign * (v + 0.5) for v in (0.30, 0.31, 0.29, 0.30, 0.32)]
    me = _r("me", [sign * v for v in low_noise])
    # Clearly better with little noise: copied.
    assert _ttest_parent(sel, me, _r("good", better), mode) == "good"
    # Better mean but noisy: not significant, kept.
    noisy = [sign * v for v in (0.9, 0.1, 0.95, 0.05, 0.8)]
    assert np.mean(noisy) * sign > np.mean([sign * v for v in low_noise]) * sign
    assert welch_ttest(noisy, me.recent)[1] > 0.05
    assert _ttest_parent(sel, me, _r("noisy", noisy), mode) is None
    # Significantly different but worse: kept.
    worse = [sign * (v - 0.5) for v in (0.30, 0.31, 0.29, 0.30, 0.32)]
    assert _ttest_parent(sel, me, _r("worse", worse), mode) is None
    # A significance level above its p-value accepts the noisy member.
    p = welch_ttest(noisy, me.recent)[1]
    assert p < 0.95
    assert _ttest_parent(TTestSelection(window=5, significance=0.95), me, _r("noisy", noisy), mode) == "noisy"


def test_ttest_uses_only_the_last_window_evaluations():
    sel = TTestSelection(window=3)
    me = _r("me", [0.9, 0.9, 0.9, 0.50, 0.51, 0.49])  # good long ago, bad lately
    other = _r("other", [0.1, 0.1, 0.1, 0.70, 0.71, 0.69])  # bad long ago, good lately
    assert _ttest_parent(sel, me, other) == "other"
    assert _ttest_parent(TTestSelection(window=6), me, other) is None


def test_ttest_needs_min_evaluations_on_both_sides():
    sel = TTestSelection(window=5, min_evaluations=3)
    good = _r("good", [0.9, 0.91, 0.9])
    assert _ttest_parent(sel, _r("me", [0.1, 0.11]), good) is None
    assert _ttest_parent(sel, _r("me", [0.1, 0.11, 0.1]), good) == "good"
    assert _ttest_parent(sel, _r("me", [0.1, 0.11, 0.1]), _r("good", [0.9, 0.91])) is None
    # A report without `recent` is one evaluation: never enough.
    assert _ttest_parent(TTestSelection(), Report("me", 1, 0.1), Report("good", 1, 0.9)) is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_ttest_non_finite(bad):
    sel = TTestSelection(window=4)
    assert _ttest_parent(sel, _r("me", [0.5, 0.4, bad]), _r("ok", [0.1, 0.2, 0.1])) == "ok"
    assert _ttest_parent(sel, _r("me", [0.5, bad]), _r("ok", [0.1, 0.2])) == "ok"
    assert _ttest_parent(sel, _r("me", [0.1, 0.2, 0.1]), _r("bad", [0.9, 0.9, bad])) is None
    assert _ttest_parent(sel, _r("me", [0.1, bad]), _r("bad", [0.9, bad])) is None


def test_ttest_samples_uniformly_and_copies_only_significant_members():
    sel = TTestSelection(window=4)
    rng = np.random.default_rng(0)
    reports = [_r(i, list(0.1 * i + rng.normal(0, 0.01, 4))) for i in range(6)]
    ranked = rank(reports, "max", np.random.default_rng(0))
    assert set(sel.parent_candidates(ranked, "max")) == set(range(6))
    for me in reports:
        draws = collections.Counter(
            getattr(sel.choose_parent(me.member_id, ranked, "max", np.random.default_rng([me.member_id, k])),
                    "member_id", None)
            for k in range(500)
        )
        better = set(range(me.member_id + 1, 6))
        assert set(draws) - {None} == better
        assert abs(draws[None] / 500 - (5 - len(better)) / 5) < 0.1


def test_policy_decides_with_ttest_and_tournament_by_name():
    space = {"lr": LogUniform(1e-4, 1.0)}
    reports = [_r(0, [0.9, 0.91, 0.92]), _r(1, [0.1, 0.12, 0.11])]
    for name in ("ttest", "tournament"):
        policy = PBTPolicy(space, mode="max", selection=name, seed=0)
        d = policy.decide(1, reports, key=1, rng=np.random.default_rng(0))
        assert d.action == "exploit" and d.parent == 0 and d.reason == name
        assert policy.parent_candidates(reports, key=1) == {0, 1}
        assert policy.decide(0, reports, key=1, rng=np.random.default_rng(0)).action == "keep"


def test_report_recent_is_backward_compatible():
    r = Report(0, 10, 0.5)
    assert r.recent == () and r.window() == (0.5,)
    assert Report(0, 10, 0.5, recent=(0.4, 0.5)).window() == (0.4, 0.5)


# --- the callback fills `recent` (TensorFlow) -------------------------------------------


def test_callback_reports_recent_metrics_reset_by_exploit():
    import keras

    from tests.pbt_helpers import X1, Y1, fit_in_threads, one_weight_model

    store = keras_pbt.InMemoryStore(seed=0, synchronous=True, timeout=60)
    space = {"learning_rate": keras_pbt.LogUniform(1e-4, 1.0)}
    models = [one_weight_model(keras.optimizers.SGD(lr)) for lr in (0.05, 1e-4)]
    sel = TTestSelection(window=3, significance=0.2)
    cbs = [keras_pbt.PBTCallback(store, i, space, monitor="loss", policy=keras_pbt.Policy(selection=sel)) for i in range(2)]
    kw = dict(x=X1, y=Y1, batch_size=2, epochs=7, shuffle=False, verbose=0)
    assert fit_in_threads([(m, dict(kw, callbacks=[cb])) for m, cb in zip(models, cbs)]) == [None, None]
    exploit_steps = {(r.member_id, r.step) for r in store.lineage() if r.action == "exploit"}
    assert exploit_steps, "the slow member should copy the fast one"
    for member, history in store.histories().items():
        since = []
        for report in history:
            since.append(report.metric)
            assert report.recent == tuple(since[-3:])
            if (member, report.step) in exploit_steps:
                since = []
    # Truncation needs no history: reports stay small.
    store2 = keras_pbt.InMemoryStore(seed=0)
    cb = keras_pbt.PBTCallback(store2, 0, space, monitor="loss")
    one_weight_model(keras.optimizers.SGD(0.01)).fit(X1, Y1, epochs=2, verbose=0, callbacks=[cb])
    assert all(r.recent == () for r in store2.histories()[0])


def test_callback_tournament_by_name_publishes_every_member():
    import keras

    from tests.pbt_helpers import X1, Y1, fit_in_threads, one_weight_model

    store = keras_pbt.InMemoryStore(seed=2, synchronous=True, timeout=60)
    space = {"learning_rate": keras_pbt.LogUniform(1e-4, 1.0)}
    lrs = (0.1, 0.03, 1e-3, 1e-4)
    cbs = [keras_pbt.PBTCallback(store, i, space, monitor="loss", policy=keras_pbt.Policy(selection="tournament")) for i in range(len(lrs))]
    jobs = [(one_weight_model(keras.optimizers.SGD(lr)),
             dict(x=X1, y=Y1, batch_size=4, epochs=4, shuffle=False, verbose=0, callbacks=[cb]))
            for lr, cb in zip(lrs, cbs)]
    assert fit_in_threads(jobs) == [None] * len(lrs)
    assert store.snapshot_members() == set(range(len(lrs)))  # any member may be met
    assert all(cb.engine.selection.name == "tournament" for cb in cbs)
    reports = {(r.member_id, r.step): r.metric for h in store.histories().values() for r in h}
    exploits = [r for r in store.lineage() if r.action == "exploit"]
    assert exploits
    for r in exploits:
        assert r.reason == "tournament"
        assert r.parent_metric == reports[(r.parent, r.parent_step)] < r.metric
