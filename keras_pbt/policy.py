"""The PBT decision: rank, select, explore. Pure Python + NumPy.

The policy turns reports into `Decision`s; only the Keras glue acts on them.
The same object serves the callback, the population and the keras-tuner
oracle.
"""

import dataclasses
from typing import Any, Dict, Optional

import numpy as np

from keras_pbt import explore as explore_lib
from keras_pbt import fire as fire_lib
from keras_pbt import lineage as lineage_lib
from keras_pbt import pb2 as pb2_lib
from keras_pbt import ranking as ranking_lib
from keras_pbt import schedule as schedule_lib
from keras_pbt import selection as selection_lib
from keras_pbt import space as space_lib
from keras_pbt.validation import check_seed


@dataclasses.dataclass(frozen=True)
class Decision:
    """What one member does at one boundary.

    Attributes:
        member: the deciding member.
        action: `"keep"` or `"exploit"`.
        hparams: hyperparameters to train with from now on.
        hparams_before: hyperparameters up to now.
        metric: the member's metric at the boundary.
        parent: the member to copy (exploit only).
        parent_step: the step of the parent's report that won the selection.
        parent_metric: the parent's metric in that report.
        ops: name -> operation applied by explore.
        reason: why (`"truncation"`, `"not in bottom quantile"`, ...).
    """

    member: Any
    action: str
    hparams: Dict[str, Any]
    hparams_before: Dict[str, Any]
    metric: float
    parent: Any = None
    parent_step: Optional[int] = None
    parent_metric: Optional[float] = None
    ops: Dict[str, str] = dataclasses.field(default_factory=dict)
    reason: str = ""

    @property
    def is_exploit(self):
        return self.action == "exploit"

    def to_record(self, step, interval, monitor="", mode="", time=0.0, parent_step=None):
        """The `LineageRecord` of this decision.

        Args:
            step: the member's step at the decision.
            interval: the boundary index.
            parent_step: the step of the snapshot actually copied, if it
                differs from the report's.
        """
        return lineage_lib.LineageRecord(
            member=self.member,
            step=int(step),
            action=self.action,
            hparams=dict(self.hparams),
            hparams_before=dict(self.hparams_before),
            metric=self.metric,
            parent=self.parent,
            parent_step=parent_step if parent_step is not None else self.parent_step,
            parent_metric=self.parent_metric,
            ops=dict(self.ops),
            interval=int(interval),
            monitor=monitor,
            mode=mode,
            reason=self.reason,
            time=time,
        )


class PBTPolicy:
    """Ranking, selection and explore for one population.

    Args:
        space: dict name -> `Hyperparameter` (`Uniform`, `LogUniform`,
            `IntUniform`, `Choice`).
        mode: `"min"` or `"max"` (resolve `"auto"` first with
            `selection.resolve_mode`).
        selection: `"truncation"`, `"tournament"`, `"ttest"`, `"fire"` or a
            `Selection` instance (e.g. `FireSelection(fraction=0.5)`).
            Defaults to `"truncation"`.
        quantile: fraction of losers and of possible parents, in `(0, 0.5]`.
            Defaults to `0.2`.
        factors: explore's perturbation factors. Defaults to `(0.8, 1.2)`.
        resample_probability: explore's chance to resample. Defaults to `0.25`.
        explore_fn: optional custom explore function `(hparams, rng) -> dict`.
        seed: int seed for tie-breaking; every member of a population must use
            the same one. Defaults to a fresh random seed.
        ranking: the signal members are ranked by: `"last"` (the latest
            evaluation), `"mean"` (`MovingAverage(window=3)` of the latest
            evaluations since the member's last exploit) or a `Ranking`
            instance. Lineage records keep the raw metric. Defaults to
            `"last"`.
        explore: `"perturb"` (perturb or resample, with `factors`,
            `resample_probability` and `explore_fn`), `"pb2"` (PB2's GP
            bandit, `PB2Explorer()`) or an explorer instance. Defaults to
            `"perturb"`.

    Example:

    >>> from keras_pbt.space import LogUniform
    >>> from keras_pbt.selection import Report
    >>> policy = PBTPolicy({"lr": LogUniform(1e-4, 1e-1)}, mode="max", seed=0)
    >>> reports = [Report(0, 10, 0.9, {"lr": 0.01}), Report(1, 10, 0.5, {"lr": 0.1})]
    >>> d = policy.decide(1, reports, key=1, rng=np.random.default_rng(1))
    >>> d.action, d.parent
    ('exploit', 0)
    """

    def __init__(self, space, mode="max", selection="truncation", quantile=0.2,
                 factors=(0.8, 1.2), resample_probability=0.25, explore_fn=None,
                 seed=None, ranking="last", explore="perturb"):
        self.space = space_lib.validate_space(space)
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max'. Received: mode={mode!r}")
        self.mode = mode
        quantile = selection_lib.check_quantile(quantile)
        if selection == "fire":
            selection = fire_lib.FireSelection()
        self.selection = selection_lib.get_selection(selection, quantile)
        self.ranking = ranking_lib.get_ranking(ranking)
        explorer = pb2_lib.get_explore(explore)
        if explorer is not None and explore_fn is not None:
            raise ValueError(
                "Give `explore_fn` or `explore`, not both. Received: "
                f"explore={explore!r}, explore_fn={explore_fn!r}"
            )
        self.explorer = explorer or explore_lib.Explorer(factors, resample_probability, explore_fn)
        self.seed = check_seed(seed)

    @property
    def history_length(self):
        """How many latest evaluations a member's `Report.recent` must hold."""
        return max(self.selection.history_length, self.ranking.history_length)

    @property
    def uses_history(self):
        """Whether `decide` needs `history` (every report so far): PB2 does."""
        return bool(getattr(self.explorer, "uses_history", False))

    def explore(self, hparams, rng, history=None):
        """`(new_hparams, ops)` from a parent's `hparams` (also for restarts)."""
        if self.uses_history:
            return self.explorer(dict(hparams), self.space, rng, history=history or [],
                                 mode=self.mode)
        return self.explorer(dict(hparams), self.space, rng)

    def _scored(self, reports):
        """The reports with `metric` replaced by the ranking's score."""
        if type(self.ranking) is ranking_lib.LastValue:
            return list(reports)
        return [dataclasses.replace(r, metric=self.ranking.score(r)) for r in reports]

    def ranking_rng(self, key):
        """The tie-breaking generator for boundary `key` (same for all members)."""
        return np.random.default_rng([self.seed, int(key)])

    def rank(self, reports, key):
        """The reports best first by the ranking's score (with scores as metrics)."""
        return selection_lib.rank(self._scored(reports), self.mode, self.ranking_rng(key))

    def parent_candidates(self, reports, key):
        """Members of `reports` that may be copied at boundary `key`."""
        return set(self.selection.parent_candidates(self.rank(reports, key), self.mode))

    def decide(self, member, reports, key, rng, available=None, history=None):
        """Decides for `member` given the comparable `reports` (its own included).

        Args:
            member: the deciding member's id.
            reports: `Report`s of the comparable members, one per member.
            key: int boundary key for tie-breaking (same for every member
                deciding at that boundary).
            rng: the deciding member's own `numpy.random.Generator`
                (parent draw and explore).
            available: optional set of members that can be copied now.
            history: every `Report` so far (all members), for an explorer
                that models the run (PB2); ignored otherwise.

        Returns:
            A `Decision`.
        """
        mine = [r for r in reports if r.member == member]
        if len(mine) != 1:
            raise ValueError(
                f"`reports` must hold exactly one report of member {member!r}; "
                f"found {len(mine)}."
            )
        me = mine[0]
        before = dict(me.hparams)
        parent = self.selection.choose_parent(
            member, self.rank(reports, key), self.mode, rng, available
        )
        if parent is None:
            return Decision(member, "keep", before, before, me.metric, reason="selection kept it")
        parent = next(r for r in reports if r.member == parent.member)  # its raw metric
        new, ops = self.explore(parent.hparams, rng, history)
        return Decision(
            member, "exploit", new, before, me.metric,
            parent=parent.member, parent_step=parent.step,
            parent_metric=parent.metric, ops=ops, reason=self.selection.name,
        )


def comparable_reports(member, step, histories, window):
    """The reports to rank `member` against in asynchronous PBT.

    For every member, its latest report at or before `step` (so a member that
    is further ahead is judged at the same progress), dropping members whose
    latest such report is older than `step - window` (too far behind to
    compare) and members with no report yet.

    Args:
        member: the deciding member (its own report at `step` is included).
        step: the deciding member's step.
        histories: dict member -> list of `Report` in step order.
        window: the largest allowed lag in steps (usually one interval).

    Returns:
        A list of `Report`, one per comparable member.
    """
    out = []
    for m, history in histories.items():
        latest = None
        for r in reversed(history):
            if r.step <= step:
                latest = r
                break
        if latest is None:
            continue
        if m != member and latest.step < step - window:
            continue
        out.append(latest)
    return out


def restart_parent(metrics, mode):
    """Whom a failed member restarts from: the best published snapshot.

    Args:
        metrics: dict member id -> the metric of its published snapshot
            (the failed member left out).
        mode: `"min"` or `"max"`.

    Returns:
        The member id ranked first by `keras_pbt.schedule.rank_members` (NaN
        last, ties by member id), or `None` when there is no snapshot.
    """
    ranked = schedule_lib.rank_members(metrics, mode)
    return ranked[0] if ranked else None
