"""Ranking and selection: who is a loser, and whom it copies.

Three strategies, selectable by name: truncation (the bottom quantile
copies the top), binary tournament and Welch's t-test selection over the
last evaluations (both from Jaderberg et al. 2017; the test itself is in
`keras_pbt.core.stats`).

Pure Python + NumPy.
"""

import dataclasses
import math
import numbers
from typing import Any, Mapping, Optional, Tuple

from keras_pbt.core.stats import betainc  # noqa: F401 - re-exported
from keras_pbt.core.stats import student_t_sf  # noqa: F401 - re-exported
from keras_pbt.core.stats import welch_ttest
from keras_pbt.core.validation import check_int
from keras_pbt.core.validation import check_mode


@dataclasses.dataclass(frozen=True)
class Report:
    """One member's monitored metric at one interval boundary.

    Attributes:
        member_id: the member id (int or str).
        step: the member's own count of optimizer steps at the boundary.
        metric: the monitored value (may be NaN or inf: those rank last).
        hparams: the hyperparameters the member trained with up to here.
        interval: the boundary index (1 for the first judged boundary).
        time: wall-clock time of the report (`time.time()`), 0 if unknown.
        recent: the member's latest metrics, oldest first and ending with
            `metric`, for strategies and rankings that judge several
            evaluations (t-test selection, `MovingAverage`). Empty when
            none needs them. The callback keeps at most
            `PBTPolicy.history_length` of them, and only those since the
            member's last exploit or restart (earlier ones belong to other
            weights).
        recent_steps: the member's step at each of `recent` (for the
            improvement rate), or empty.
        start_metric: the metric of the weights the member trained this
            interval from: its previous report's metric, or its parent's
            after an exploit (PB2 models the change `metric - start_metric`).
            `None` for a first report or when unknown.
        count: how many validation examples `metric` was measured on, or
            `None` when unknown (for a noise-aware margin, `keras_pbt.StandardError`).
        spread: the per-example standard deviation of the metric on them
            (`sqrt(p * (1 - p))` for an accuracy `p`), or `None` when unknown.
        root: the member's line: the starting configuration whose weights it
            carries (`keras_pbt.core.lines`), or `None` when unknown.
    """

    member_id: Any
    step: int
    metric: float
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    interval: int = 0
    time: float = 0.0
    recent: Tuple[float, ...] = ()
    recent_steps: Tuple[int, ...] = ()
    start_metric: Optional[float] = None
    count: Optional[int] = None
    spread: Optional[float] = None
    root: Any = None

    def window(self):
        """The metrics to judge the member by: `recent`, or `(metric,)`."""
        return tuple(self.recent) if self.recent else (self.metric,)


def is_finite(x):
    if type(x) is float:  # the common case, without the ABC check (~1 us)
        return math.isfinite(x)
    return isinstance(x, numbers.Real) and math.isfinite(x)


def metric_name(monitor):
    """The name a monitored metric has in `Model.evaluate`'s logs: `monitor`
    without Keras' `"val_"` prefix.

    Args:
        monitor: a metric name such as `"val_accuracy"`.

    Returns:
        The name without the prefix (`"accuracy"`); `monitor` itself when
        it has none.

    Example:

    >>> metric_name("val_accuracy"), metric_name("loss")
    ('accuracy', 'loss')
    """
    return monitor[4:] if monitor.startswith("val_") else monitor


def resolve_mode(mode, monitor):
    """Returns `"min"` or `"max"` for a Keras-style `mode` and `monitor`.

    `"auto"` follows Keras: names with accuracy, AUC, precision, recall, F1,
    IoU or "score" are maximised; losses and errors are minimised.

    Args:
        mode: `"auto"`, `"min"` or `"max"`.
        monitor: the metric name, e.g. `"val_accuracy"`.

    Returns:
        `"min"` or `"max"`.

    Raises:
        ValueError: naming `mode` when it is unknown, or when `"auto"` cannot
            tell the direction of `monitor`.
    """
    if check_mode(mode, allow_auto=True) != "auto":
        return mode
    name = metric_name(str(monitor).lower())
    for word in ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "score"):
        if word in name:
            return "max"
    for word in ("loss", "error", "mse", "mae", "mape", "msle", "crossentropy", "hinge",
                 "divergence", "perplexity"):
        if word in name:
            return "min"
    raise ValueError(
        f"Could not infer whether `monitor={monitor!r}` should be minimised or "
        "maximised. Pass mode='min' or mode='max'. Received: mode='auto'"
    )


def rank(reports, mode, rng):
    """Orders reports best first.

    Non-finite metrics (NaN, inf, -inf) rank last whatever the mode. Equal
    metrics are ordered by a permutation drawn from `rng`, assigned in a
    canonical member order so that the result does not depend on the order
    of `reports`.

    Args:
        reports: a sequence of `Report`.
        mode: `"min"` or `"max"`.
        rng: a `numpy.random.Generator` for tie-breaking.

    Returns:
        A new list of the same reports, best first.
    """
    reports = sorted(reports, key=lambda r: str(r.member_id))
    ties = rng.permutation(len(reports))
    sign = -1.0 if mode == "max" else 1.0

    def key(i):
        m = reports[i].metric
        if not is_finite(m):
            return (1, 0.0, ties[i])
        return (0, sign * m, ties[i])

    return [reports[i] for i in sorted(range(len(reports)), key=key)]


def is_better(a, b, mode):
    """True if metric `a` is strictly better than `b` (non-finite is never better)."""
    if not is_finite(a):
        return False
    if not is_finite(b):
        return True
    return a > b if mode == "max" else a < b


def quantile_count(n, quantile):
    """How many members are in the bottom (and top) quantile.

    `ceil(n * quantile)`, at most `floor(n / 2)`, so the two groups never
    overlap.

    Example:

    >>> [quantile_count(n, 0.2) for n in (1, 2, 3, 5, 10)]
    [0, 1, 1, 1, 2]
    """
    # The tolerance absorbs float error (10 * 0.3 == 3.0000000000000004 -> 3);
    # `max(1, ...)` keeps a tiny positive quantile from rounding to no member.
    return min(max(1, math.ceil(n * quantile - 1e-9)), n // 2)


def check_quantile(quantile):
    if (
        isinstance(quantile, bool)
        or not isinstance(quantile, numbers.Real)
        or not 0 < quantile <= 0.5
    ):
        raise ValueError(
            f"`quantile` must be in (0, 0.5]. Received: quantile={quantile!r}"
        )
    return float(quantile)


class Selection:
    """Interface of a selection strategy (truncation, tournament, ...).

    A strategy sees the ranked reports of the comparable members (best first,
    including the deciding member) and says which member, if any, the
    deciding member copies.
    """

    name = "selection"
    # How many of a member's latest metrics the strategy reads from
    # `Report.recent` (1: only `Report.metric`).
    history_length = 1
    # Whether a parent is chosen for a better metric, so that a policy's
    # margin (`keras_pbt.core.noise`) applies to it.
    compares_metrics = True

    def parent_candidates(self, ranked, mode):
        """Members that may be chosen as a parent: they publish snapshots."""
        raise NotImplementedError

    def choose_parent(self, member_id, ranked, mode, rng, available=None):
        """Returns the parent's `Report`, or `None` to keep training as is.

        Args:
            member_id: the deciding member's id.
            ranked: `Report`s best first (from `rank`).
            mode: `"min"` or `"max"`.
            rng: the deciding member's `numpy.random.Generator`.
            available: optional set of member ids that can be copied now
                (have a snapshot); `None` means all.
        """
        raise NotImplementedError


class TruncationSelection(Selection):
    """The bottom `quantile` copies a member drawn from the top `quantile`.

    The quantile holds `ceil(n * quantile)` members, at most `floor(n / 2)`.
    A parent must be strictly better than the loser: a tie never causes an
    exploit.

    Args:
        quantile: fraction in `(0, 0.5]`. Defaults to `0.2`.

    Example:

    >>> sel = TruncationSelection(quantile=0.25)
    """

    name = "truncation"

    def __init__(self, quantile=0.2):
        self.quantile = check_quantile(quantile)

    def parent_candidates(self, ranked, mode):
        k = quantile_count(len(ranked), self.quantile)
        return [r.member_id for r in ranked[:k]]

    def choose_parent(self, member_id, ranked, mode, rng, available=None):
        k = quantile_count(len(ranked), self.quantile)
        if k == 0:
            return None
        bottom = [r.member_id for r in ranked[len(ranked) - k:]]
        if member_id not in bottom:
            return None
        me = next(r for r in ranked if r.member_id == member_id)
        top = [
            r for r in ranked[:k]
            if r.member_id != member_id
            and is_better(r.metric, me.metric, mode)
            and (available is None or r.member_id in available)
        ]
        if not top:
            return None
        return top[int(rng.integers(len(top)))]


def _others(member_id, ranked, available):
    return [
        r for r in sorted(ranked, key=lambda r: str(r.member_id))
        if r.member_id != member_id and (available is None or r.member_id in available)
    ]


class TournamentSelection(Selection):
    """Binary tournament: each member meets one random other member.

    Every member draws another member uniformly (among those that can be
    copied now) and copies it if its metric is strictly better; a tie or a
    worse opponent keeps the member as it is. Any member can be a parent,
    so every member publishes a snapshot at every boundary. About half the
    population is replaced at each boundary, far more than truncation:
    use a longer interval.

    Example:

    >>> sel = TournamentSelection()
    """

    name = "tournament"

    def parent_candidates(self, ranked, mode):
        return [r.member_id for r in ranked]

    def choose_parent(self, member_id, ranked, mode, rng, available=None):
        me = _find(member_id, ranked)
        others = _others(member_id, ranked, available)
        if not others:
            return None
        other = others[int(rng.integers(len(others)))]
        return other if self._beats(other, me, mode) else None

    def _beats(self, other, me, mode):
        """Whether the drawn `other` report should be copied by `me`."""
        return is_better(other.metric, me.metric, mode)


class TTestSelection(TournamentSelection):
    """Welch's t-test selection (Jaderberg et al. 2017).

    Each member draws another member uniformly and compares their last
    `window` evaluations (`Report.recent`): it copies the other member if
    the other's mean is strictly better **and** Welch's two-sided t-test
    finds the difference significant (p-value below `significance`).
    A member whose latest evaluations hold NaN or inf copies any other
    whose evaluations are all finite. Both members need at least
    `min_evaluations` evaluations since their last exploit, so a member
    that was just replaced is not judged again on one noisy value.

    Args:
        window: how many latest evaluations to compare (`k`). Defaults to
            `10`, the paper's value.
        significance: the p-value below which the difference counts.
            Defaults to `0.05`.
        min_evaluations: fewest evaluations on each side for a test, at
            least 2 (a variance needs two). Defaults to `2`.

    Example:

    >>> sel = TTestSelection(window=5, significance=0.1)
    """

    name = "ttest"

    def __init__(self, window=10, significance=0.05, min_evaluations=2):
        check_int("window", window, minimum=2)
        if (
            isinstance(significance, bool)
            or not isinstance(significance, numbers.Real)
            or not 0 < significance < 1
        ):
            raise ValueError(
                f"`significance` must be in (0, 1). Received: significance={significance!r}"
            )
        if (
            isinstance(min_evaluations, bool)
            or not isinstance(min_evaluations, numbers.Integral)
            or not 2 <= min_evaluations <= window
        ):
            raise ValueError(
                "`min_evaluations` must be an int in [2, window]. "
                f"Received: min_evaluations={min_evaluations!r}"
            )
        self.window = int(window)
        self.significance = float(significance)
        self.min_evaluations = int(min_evaluations)
        self.history_length = self.window

    def _beats(self, other, me, mode):
        return self.is_significantly_better(other, me, mode)

    def is_significantly_better(self, a, b, mode):
        """True if report `a`'s latest evaluations beat `b`'s by the test."""
        xa, xb = a.window()[-self.window:], b.window()[-self.window:]
        if not all(is_finite(x) for x in xa):
            return False
        if not all(is_finite(x) for x in xb):
            return True  # b diverged; a is finite throughout
        if len(xa) < self.min_evaluations or len(xb) < self.min_evaluations:
            return False
        if not is_better(sum(xa) / len(xa), sum(xb) / len(xb), mode):
            return False
        _, p = welch_ttest(xa, xb)
        return p < self.significance


def _find(member_id, ranked):
    for r in ranked:
        if r.member_id == member_id:
            return r
    raise ValueError(f"Member {member_id!r} is not among the ranked reports.")


_SELECTIONS = {
    "truncation": lambda quantile: TruncationSelection(quantile=quantile),
    "tournament": lambda quantile: TournamentSelection(),
    "ttest": lambda quantile: TTestSelection(),
}


def get_selection(selection, quantile=0.2):
    """Returns a `Selection` from a name or passes an instance through.

    Args:
        selection: `"truncation"`, `"tournament"`, `"ttest"` or a
            `Selection` instance (to set a strategy's parameters, e.g.
            `TTestSelection(window=5)`).
        quantile: used when building `"truncation"` by name.
    """
    if isinstance(selection, Selection):
        return selection
    if isinstance(selection, str) and selection in _SELECTIONS:
        return _SELECTIONS[selection](quantile)
    raise ValueError(
        f"`selection` must be one of {sorted(_SELECTIONS)} or a Selection "
        f"instance. Received: selection={selection!r}"
    )
