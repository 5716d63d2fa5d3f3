"""Noise-aware exploitation: copy only differences the validation split can measure.

A member's metric is measured on a finite validation split, so two members
whose true accuracies are equal differ by chance on it: an accuracy of
about 0.9 on 500 examples has a standard error of 1.3 points. Truncation
that copies any strictly better member copies that noise at every
boundary, and the winner's score is optimistic (the split was selected
on). A margin makes a member copy another only when the other is better
by more than the margin:

* `StandardError(z)`: `z` standard errors of the difference between the
  two metrics, each `spread / sqrt(count)` (`Report.spread` is the
  per-example standard deviation of the metric, `Report.count` the number
  of validation examples). For an accuracy-like metric (a proportion) the
  spread follows from the value itself, `sqrt(p * (1 - p))`
  (`proportion_spread`), so only the split size is needed.
* `FixedMargin(delta)`: a fixed difference in the metric's units.

Pure Python.
"""

import math
import numbers

from keras_pbt.core import selection as selection_lib

# Names of metrics that are a proportion of examples (a mean of 0/1 values).
_PROPORTIONS = ("acc",)


def proportion_spread(monitor, value):
    """The per-example standard deviation of an accuracy-like metric, or `None`.

    A proportion `p` of examples (an accuracy) is the mean of 0/1 values,
    whose standard deviation is `sqrt(p * (1 - p))`. Any other metric (a
    loss, an AUC) returns `None`: its spread is not a function of its value.

    Args:
        monitor: the metric's name, e.g. `"val_accuracy"`.
        value: its value.

    Returns:
        A float, or `None`.

    Example:

    >>> proportion_spread("val_accuracy", 0.9)
    0.3
    >>> proportion_spread("val_loss", 0.3) is None
    True
    """
    name = selection_lib.metric_name(str(monitor).lower())
    if not any(word in name for word in _PROPORTIONS):
        return None
    if not selection_lib.is_finite(value) or not 0.0 <= value <= 1.0:
        return None
    return round(math.sqrt(value * (1.0 - value)), 12)


class Margin:
    """Interface: how much better a parent must be for a loser to copy it.

    `threshold(parent, loser)` is the smallest difference (in the metric's
    units, > 0 or 0) that counts; `exceeds` applies it in the mode's
    direction. A non-finite loser is beaten by any finite parent. Give an
    instance as `keras_pbt.Policy(margin=...)`; a subclass implements
    `threshold`.

    Example:

    >>> class Half(Margin):
    ...     def threshold(self, parent, loser):
    ...         return 0.5
    >>> from keras_pbt.core.selection import Report
    >>> Half().exceeds(Report(0, 1, 2.0), Report(1, 1, 1.0), "max")
    True
    """

    name = "margin"

    def threshold(self, parent, loser):
        """The smallest difference that counts between two reports.

        Args:
            parent: the would-be parent's `Report`.
            loser: the deciding member's `Report`.

        Returns:
            A float >= 0, in the metric's units.
        """
        raise NotImplementedError

    def exceeds(self, parent, loser, mode):
        """Whether report `parent`'s metric beats `loser`'s by more than the threshold.

        Args:
            parent: the would-be parent's `Report`.
            loser: the deciding member's `Report`.
            mode: `"min"` or `"max"`.

        Returns:
            A bool.
        """
        if not selection_lib.is_better(parent.metric, loser.metric, mode):
            return False
        if not selection_lib.is_finite(loser.metric):
            return True
        gain = parent.metric - loser.metric if mode == "max" else loser.metric - parent.metric
        return gain > self.threshold(parent, loser)


class FixedMargin(Margin):
    """A fixed difference: copy only a parent better by more than `delta`.

    `FixedMargin(0.0)` is the paper's rule: any strictly better parent.

    Args:
        delta: the difference, in the metric's units, >= 0.

    Example:

    >>> from keras_pbt.core.selection import Report
    >>> FixedMargin(0.02).exceeds(Report(0, 1, 0.93), Report(1, 1, 0.92), "max")
    False
    """

    name = "fixed"

    def __init__(self, delta=0.0):
        if (isinstance(delta, bool) or not isinstance(delta, numbers.Real)
                or not math.isfinite(delta) or delta < 0):
            raise ValueError(f"`delta` must be a finite number >= 0. Received: delta={delta!r}")
        self.delta = float(delta)

    def threshold(self, parent, loser):
        """`delta`, whatever the reports (see `Margin.threshold`)."""
        return self.delta

    def __repr__(self):
        return f"FixedMargin(delta={self.delta})"

    def __eq__(self, other):
        return type(other) is FixedMargin and other.delta == self.delta

    def __hash__(self):
        return hash((FixedMargin, self.delta))


class StandardError(Margin):
    """`z` standard errors of the difference the validation split can measure.

    Each report's standard error is `spread / sqrt(count)`; the threshold
    is `z * sqrt(se_parent**2 + se_loser**2)`. The population and the
    tuner fill `Report.count` from the validation data and `Report.spread`
    for accuracy-like metrics (`proportion_spread`). Where either is
    unknown (a loss without per-example spread, a bare `PBTCallback`
    without `validation_size`), the threshold is 0: any strictly better
    parent, as without a margin.

    The two members are scored on the same examples, so their errors are
    positively correlated and the true standard error of the difference
    is smaller than this one: the rule errs towards not copying.

    Args:
        z: how many standard errors, >= 0. Defaults to `1.0`.

    Example:

    >>> from keras_pbt.core.selection import Report
    >>> a = Report(0, 1, 0.93, count=500, spread=proportion_spread("acc", 0.93))
    >>> b = Report(1, 1, 0.91, count=500, spread=proportion_spread("acc", 0.91))
    >>> round(StandardError(z=1.0).threshold(a, b), 4), StandardError().exceeds(a, b, "max")
    (0.0171, True)
    """

    name = "standard error"

    def __init__(self, z=1.0):
        if isinstance(z, bool) or not isinstance(z, numbers.Real) or not math.isfinite(z) or z < 0:
            raise ValueError(f"`z` must be a finite number >= 0. Received: z={z!r}")
        self.z = float(z)

    @staticmethod
    def standard_error(report):
        """The standard error of one report's metric.

        Args:
            report: a `Report` with `count` and `spread`.

        Returns:
            `spread / sqrt(count)`, or `None` when either is unknown.
        """
        count, spread = getattr(report, "count", None), getattr(report, "spread", None)
        if not count or spread is None or not selection_lib.is_finite(spread):
            return None
        return spread / math.sqrt(count)

    def threshold(self, parent, loser):
        """`z * sqrt(se_parent**2 + se_loser**2)`, 0 when either is unknown
        (see `Margin.threshold`)."""
        a, b = self.standard_error(parent), self.standard_error(loser)
        if a is None or b is None:
            return 0.0
        return self.z * math.sqrt(a * a + b * b)

    def __repr__(self):
        return f"StandardError(z={self.z})"

    def __eq__(self, other):
        return type(other) is StandardError and other.z == self.z

    def __hash__(self):
        return hash((StandardError, self.z))


def get_margin(margin):
    """A `Margin` from `None` / a number (a `FixedMargin`) / a `Margin` instance.

    Args:
        margin: `None` or `0` (any strictly better parent), a number `> 0`
            (a fixed difference) or a `Margin` (e.g. `StandardError(z=1)`).

    Returns:
        A `Margin`.

    Example:

    >>> get_margin(None)
    FixedMargin(delta=0.0)
    """
    if margin is None:
        return FixedMargin(0.0)
    if isinstance(margin, Margin):
        return margin
    if isinstance(margin, numbers.Real) and not isinstance(margin, bool):
        return FixedMargin(margin)
    raise ValueError(
        "`margin` must be None, a number >= 0 or a Margin instance such as "
        f"keras_pbt.StandardError(z=1.0). Received: margin={margin!r}"
    )
