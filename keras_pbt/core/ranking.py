"""The ranking signal: the number a member is ranked by at a boundary.

By default a member is ranked by its latest evaluation (`Report.metric`).
Ranking every interval on one validation split makes that number noisy and
the winner's score optimistic; a smoothed signal over the member's latest
evaluations since its last exploit is steadier. The improvement rate (the
slope of those evaluations) ranks members by how fast they get better
rather than where they are, the signal FIRE-PBT uses against greediness.

A ranking turns a `Report` into a score in the metric's own direction (a
larger accuracy, a smaller loss is better); selection then compares scores
as it compares metrics. Lineage records keep the raw metric.

Pure Python + NumPy.
"""

import math

from keras_pbt.core.selection import is_finite
from keras_pbt.core.validation import check_int


class Ranking:
    """Interface: `score(report) -> float` and `history_length`.

    `history_length` is how many of a member's latest evaluations the
    ranking reads from `Report.recent` (1: only `Report.metric`).
    """

    name = "ranking"
    history_length = 1

    def score(self, report):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}()"


class LastValue(Ranking):
    """Ranks by the latest evaluation, `Report.metric` (the default).

    Example:

    >>> from keras_pbt.core.selection import Report
    >>> LastValue().score(Report(0, 10, 0.8, recent=(0.7, 0.8)))
    0.8
    """

    name = "last"

    def score(self, report):
        return report.metric


class MovingAverage(Ranking):
    """Ranks by the mean of the latest `window` evaluations since the last exploit.

    A member that was just replaced has one evaluation, and is ranked by it.
    Any non-finite value in the window makes the score NaN (ranked last).

    Args:
        window: how many latest evaluations to average, >= 2. Defaults to `3`.

    Example:

    >>> from keras_pbt.core.selection import Report
    >>> MovingAverage(window=2).score(Report(0, 10, 0.8, recent=(0.5, 0.7, 0.8)))
    0.75
    """

    name = "mean"

    def __init__(self, window=3):
        self.window = check_int("window", window, minimum=2)
        self.history_length = self.window

    def score(self, report):
        values = report.window()[-self.window:]
        if not all(is_finite(v) for v in values):
            return math.nan
        return sum(values) / len(values)

    def __repr__(self):
        return f"MovingAverage(window={self.window})"


class ImprovementRate(Ranking):
    """Ranks by the least-squares slope of the latest evaluations, per step.

    The slope is in the metric's units per optimizer step, in the metric's
    own direction like every ranking's score: the population's `mode`
    orders it (with `mode="min"` a falling loss, a negative slope, ranks
    first). Fewer than two evaluations since the last exploit have no
    slope: the score is NaN and such a member is never judged a loser by a
    strategy that skips unscored members (see `FireSelection`).

    Args:
        window: how many latest evaluations to fit, >= 2. Defaults to `3`.

    Example:

    >>> from keras_pbt.core.selection import Report
    >>> r = ImprovementRate(window=3).score(
    ...     Report(0, 30, 0.8, recent=(0.6, 0.7, 0.8), recent_steps=(10, 20, 30)))
    >>> round(r, 6)
    0.01
    """

    name = "improvement"

    def __init__(self, window=3):
        self.window = check_int("window", window, minimum=2)
        self.history_length = self.window

    def score(self, report):
        values = report.window()[-self.window:]
        steps = tuple(report.recent_steps)[-len(values):]
        if len(values) < 2 or len(steps) != len(values) or not all(is_finite(v) for v in values):
            return math.nan
        mean_s = sum(steps) / len(steps)
        mean_v = sum(values) / len(values)
        var = sum((s - mean_s) ** 2 for s in steps)
        if var == 0:
            return math.nan
        slope = sum((s - mean_s) * (v - mean_v) for s, v in zip(steps, values)) / var
        return slope

    def __repr__(self):
        return f"ImprovementRate(window={self.window})"


_RANKINGS = {"last": LastValue, "mean": MovingAverage}


def get_ranking(ranking):
    """Returns a `Ranking` from a name (`"last"`, `"mean"`) or passes an instance through.

    Args:
        ranking: `"last"` (the latest evaluation), `"mean"` (`MovingAverage(3)`)
            or a `Ranking` instance.
    """
    if isinstance(ranking, Ranking):
        return ranking
    if isinstance(ranking, str) and ranking in _RANKINGS:
        return _RANKINGS[ranking]()
    raise ValueError(
        f"`ranking` must be one of {sorted(_RANKINGS)} or a Ranking instance. "
        f"Received: ranking={ranking!r}"
    )
