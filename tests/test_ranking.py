"""Ranking signals (last value, moving average, improvement rate) and the policy's use of them."""

import math
import re

import numpy as np
import pytest

from keras_pbt.core.policy import PBTPolicy
from keras_pbt.core.ranking import ImprovementRate
from keras_pbt.core.ranking import LastValue
from keras_pbt.core.ranking import MovingAverage
from keras_pbt.core.ranking import get_ranking
from keras_pbt.core.selection import Report
from keras_pbt.core.space import LogUniform

SPACE = {"lr": LogUniform(1e-4, 1.0)}


def test_last_value_is_the_metric():
    assert LastValue().score(Report(0, 5, 0.3, recent=(0.9, 0.3))) == 0.3


def test_moving_average_of_latest_window():
    r = Report(0, 5, 0.8, recent=(0.1, 0.5, 0.7, 0.8))
    assert MovingAverage(window=3).score(r) == pytest.approx((0.5 + 0.7 + 0.8) / 3)
    assert MovingAverage(window=2).score(r) == pytest.approx(0.75)
    # Fewer values than the window (just after an exploit): the mean of those.
    assert MovingAverage(window=3).score(Report(0, 5, 0.4, recent=(0.4,))) == pytest.approx(0.4)
    # No `recent` at all: the metric itself.
    assert MovingAverage(window=3).score(Report(0, 5, 0.4)) == pytest.approx(0.4)


def test_moving_average_non_finite_is_nan():
    assert math.isnan(MovingAverage(2).score(Report(0, 5, 0.8, recent=(math.nan, 0.8))))
    assert math.isnan(MovingAverage(2).score(Report(0, 5, math.inf, recent=(0.5, math.inf))))


def test_improvement_rate_is_the_least_squares_slope():
    steps, values = (10, 25, 30, 50), (0.2, 0.4, 0.41, 0.6)
    r = Report(0, 50, 0.6, recent=values, recent_steps=steps)
    slope = np.polyfit(steps, values, 1)[0]
    # In the metric's own direction, whatever the population's mode.
    assert ImprovementRate(window=4).score(r) == pytest.approx(slope, rel=1e-12)
    # The window keeps the latest three only.
    slope3 = np.polyfit(steps[1:], values[1:], 1)[0]
    assert ImprovementRate(window=3).score(r) == pytest.approx(slope3, rel=1e-12)


def test_improvement_rate_needs_two_points_and_distinct_steps():
    rate = ImprovementRate(window=3)
    assert math.isnan(rate.score(Report(0, 5, 0.4, recent=(0.4,), recent_steps=(5,))))
    assert math.isnan(rate.score(Report(0, 5, 0.4, recent=(0.3, 0.4), recent_steps=(5, 5))))
    assert math.isnan(rate.score(Report(0, 5, 0.4, recent=(0.3, 0.4))))  # no steps


@pytest.mark.parametrize("name,cls", [("last", LastValue), ("mean", MovingAverage)])
def test_get_ranking_by_name(name, cls):
    assert type(get_ranking(name)) is cls
    inst = MovingAverage(5)
    assert get_ranking(inst) is inst


@pytest.mark.parametrize("bad", ["ema", None, 3])
def test_get_ranking_errors(bad):
    with pytest.raises(ValueError, match=re.escape(f"Received: ranking={bad!r}")):
        get_ranking(bad)


@pytest.mark.parametrize("window", [1, 0, 2.5, True])
def test_window_errors(window):
    with pytest.raises((ValueError, TypeError), match="window"):
        MovingAverage(window)


def test_policy_ranks_by_the_mean_but_records_raw_metrics():
    # Member 0 had one bad evaluation after three good ones; member 1 is
    # steadily mediocre. By the last value 0 is the loser; by the mean it is 1.
    reports = [
        Report(0, 30, 0.50, {"lr": 0.01}, 3, recent=(0.90, 0.90, 0.50)),
        Report(1, 30, 0.60, {"lr": 0.02}, 3, recent=(0.60, 0.60, 0.60)),
        Report(2, 30, 0.95, {"lr": 0.03}, 3, recent=(0.95, 0.95, 0.95)),
        Report(3, 30, 0.92, {"lr": 0.04}, 3, recent=(0.92, 0.92, 0.92)),
    ]
    last = PBTPolicy(SPACE, seed=0, quantile=0.25)
    mean = PBTPolicy(SPACE, seed=0, quantile=0.25, ranking="mean")
    rng = np.random.default_rng
    assert last.decide(0, reports, 3, rng(0)).action == "exploit"
    assert last.decide(1, reports, 3, rng(0)).action == "keep"
    assert mean.decide(0, reports, 3, rng(0)).action == "keep"
    d = mean.decide(1, reports, 3, rng(0))
    assert d.action == "exploit" and d.parent == 2
    # Records carry the raw metrics, not the scores.
    assert d.metric == 0.60 and d.parent_metric == 0.95
    assert mean.history_length == 3 and last.history_length == 1


@pytest.mark.parametrize("mode,monitor_values,best", [
    # val_loss: member 0's loss falls fastest, member 1's rises.
    ("min", {0: (0.9, 0.7, 0.5), 1: (0.3, 0.4, 0.5), 2: (0.5, 0.5, 0.5)}, [0, 2, 1]),
    # val_accuracy: member 1's accuracy rises fastest.
    ("max", {0: (0.9, 0.7, 0.5), 1: (0.3, 0.4, 0.5), 2: (0.5, 0.5, 0.5)}, [1, 2, 0]),
])
def test_improvement_rate_ranks_the_fastest_improving_member_first(mode, monitor_values, best):
    # Issue 20: Policy(ranking=ImprovementRate(mode="min")) on val_loss ranked
    # the member whose loss rose fastest first (the score was signed by the
    # ranking's mode, then ordered by the population's mode again). The
    # population's mode is the only direction now.
    from keras_pbt.core.config import Policy

    engine = Policy(ranking=ImprovementRate(window=3)).make(SPACE, mode, seed=0)
    reports = [Report(m, 30, v[-1], {"lr": 0.01}, 3, recent=v, recent_steps=(10, 20, 30))
               for m, v in monitor_values.items()]
    assert [r.member_id for r in engine.rank(reports, key=3)] == best
    d = engine.decide(best[-1], reports, key=3, rng=np.random.default_rng(0))
    assert d.action == "exploit" and d.parent == best[0]


def test_improvement_rate_takes_no_mode_of_its_own():
    with pytest.raises(TypeError, match="mode"):
        ImprovementRate(window=3, mode="min")
