"""The PBT decision: rank, select, explore. Pure Python + NumPy.

The policy turns reports into `Decision`s; only the Keras glue acts on them.
The same object serves the callback, the population and the keras-tuner
oracle.
"""

import copy
import dataclasses
from typing import Any, Dict, Optional

import numpy as np

from keras_pbt.core import explore as explore_lib
from keras_pbt.core import fire as fire_lib
from keras_pbt.core import lineage as lineage_lib
from keras_pbt.core import lines as lines_lib
from keras_pbt.core import noise as noise_lib
from keras_pbt.core import pb2 as pb2_lib
from keras_pbt.core import ranking as ranking_lib
from keras_pbt.core import ancestry as schedule_lib
from keras_pbt.core import selection as selection_lib
from keras_pbt.core import space as space_lib
from keras_pbt.core.validation import check_mode
from keras_pbt.core.validation import check_seed


@dataclasses.dataclass(frozen=True)
class Decision:
    """What one member does at one boundary.

    Attributes:
        member_id: the deciding member.
        action: `"keep"`, `"exploit"` or `"restart"` (`PBTPolicy.restart`).
        hparams: hyperparameters to train with from now on.
        hparams_before: hyperparameters up to now.
        metric: the member's metric at the boundary (None for a restart).
        parent: the member to copy (exploit only).
        parent_step: the step of the parent's report that won the selection.
        parent_metric: the parent's metric in that report.
        ops: name -> operation applied by explore.
        reason: why (`"truncation"`, `"not in bottom quantile"`, ...).
    """

    member_id: Any
    action: str
    hparams: Dict[str, Any]
    hparams_before: Dict[str, Any]
    metric: Optional[float]
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
            member_id=self.member_id,
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
        margin: how much better a parent must be for a loser to copy it:
            `None` (any strictly better parent), a number (a fixed
            difference) or a `Margin` such as `StandardError(z=1.0)` (the
            noise of the validation split). Selections that do not compare
            metrics (FIRE's improvement group) ignore it. Defaults to `None`.
        lines: `None` or a `KeepLines`: the last member of a line is
            replaced only by a parent far better than it while few lines
            are alive. Defaults to `None`.

    Example:

    >>> from keras_pbt.core.space import LogUniform
    >>> from keras_pbt.core.selection import Report
    >>> policy = PBTPolicy({"lr": LogUniform(1e-4, 1e-1)}, mode="max", seed=0)
    >>> reports = [Report(0, 10, 0.9, {"lr": 0.01}), Report(1, 10, 0.5, {"lr": 0.1})]
    >>> d = policy.decide(1, reports, key=1, rng=np.random.default_rng(1))
    >>> d.action, d.parent
    ('exploit', 0)
    """

    def __init__(self, space, mode="max", selection="truncation", quantile=0.2,
                 factors=(0.8, 1.2), resample_probability=0.25, explore_fn=None,
                 seed=None, ranking="last", explore="perturb", margin=None,
                 lines=None):
        self.space = space_lib.validate_space(space)
        self.mode = check_mode(mode)
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
        self.margin = noise_lib.get_margin(margin)
        if lines is not None and not isinstance(lines, lines_lib.KeepLines):
            raise ValueError(f"`lines` must be None or a KeepLines. Received: lines={lines!r}")
        self.lines = lines
        self.config = None  # the `keras_pbt.Policy` it was made from, if any

    @property
    def history_length(self):
        """How many latest evaluations a member's `Report.recent` must hold."""
        return max(self.selection.history_length, self.ranking.history_length)

    @property
    def needs_spread(self):
        """Whether a margin reads `Report.spread` (a `StandardError`)."""
        margins = [self.margin] + ([self.lines.margin] if self.lines is not None else [])
        return any(isinstance(m, noise_lib.StandardError) for m in margins)

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

    def boundary(self, report, key, progress, burn_in=0, last=False):
        """The `BoundaryPlan` of one member at one boundary: whether it is judged.

        A boundary is not judged during burn-in (`progress <= burn_in`) nor
        at the end of training (`last`): the member keeps its weights and
        hyperparameters, with that reason in its lineage.

        Args:
            report: the member's own `Report` at this boundary.
            key: int boundary key for tie-breaking (same for every member
                deciding at that boundary).
            progress: the member's epochs (or steps) trained so far.
            burn_in: no decisions until `progress` exceeds it. Defaults to `0`.
            last: True at the last boundary of training. Defaults to `False`.

        Returns:
            A `BoundaryPlan`; when `judged`, call its `with_reports` once the
            comparable reports are in.

        Example:

        >>> from keras_pbt.core.space import Uniform
        >>> from keras_pbt.core.selection import Report
        >>> policy = PBTPolicy({"lr": Uniform(0.0, 1.0)}, seed=0)
        >>> plan = policy.boundary(Report(0, 10, 0.5, {"lr": 0.1}), key=1, progress=1, burn_in=2)
        >>> plan.judged, plan.reason
        (False, 'burn-in')
        """
        if last:
            return BoundaryPlan(self, report, int(key), judged=False, reason="end of training")
        if not progress > burn_in:
            return BoundaryPlan(self, report, int(key), judged=False, reason="burn-in")
        return BoundaryPlan(self, report, int(key), judged=True)

    def decide(self, member_id, reports, key, rng, available=None, history=None):
        """Decides for `member_id` given the comparable `reports` (its own included).

        Args:
            member_id: the deciding member's id.
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
        me = _own_report(member_id, reports)
        return self._decide_ranked(me, reports, self.rank(reports, key), rng, available, history)

    def restart(self, member_id, hparams_before, candidates, initial_hparams, rng, history=None,
                reason=""):
        """The `"restart"` `Decision` of a failed member: the one restart rule
        of the population and the keras-tuner oracle.

        The member restarts from the best of `candidates` (`restart_parent`:
        the best metric, NaN last, ties by member id) and explores that
        member's hyperparameters, as an exploit does; without a candidate it
        restarts from its own initial state and explores its initial
        hyperparameters.

        Args:
            member_id: the failed member's id.
            hparams_before: its hyperparameters when it failed.
            candidates: the states it may restart from, each with
                `member_id`, `step`, `metric` and `hparams` (a `Report`, or
                the `Snapshot` a member published), its own left out.
            initial_hparams: its initial hyperparameters.
            rng: its own `numpy.random.Generator`.
            history: every `Report` so far, for PB2; ignored otherwise.
            reason: why it failed (the error), kept in the record.

        Returns:
            A `Decision` with `action="restart"`; `parent` is `None` when it
            restarts from its initial state.

        Example:

        >>> from keras_pbt.core.space import Uniform
        >>> from keras_pbt.core.selection import Report
        >>> policy = PBTPolicy({"lr": Uniform(0.0, 1.0)}, mode="max", seed=0)
        >>> d = policy.restart(2, {"lr": 0.9}, [Report(0, 10, 0.5, {"lr": 0.1}),
        ...                    Report(1, 10, 0.7, {"lr": 0.2})], {"lr": 0.5},
        ...                    np.random.default_rng(0), reason="OOM")
        >>> d.action, d.parent
        ('restart', 1)
        """
        candidates = {c.member_id: c for c in candidates if c.member_id != member_id}
        parent_id = restart_parent({m: c.metric for m, c in candidates.items()}, self.mode)
        parent = candidates.get(parent_id)
        start = dict(initial_hparams) if parent is None else dict(parent.hparams)
        new, ops = self.explore(start, rng, history)
        return Decision(
            member_id, "restart", new, dict(hparams_before), None,
            parent=None if parent is None else parent.member_id,
            parent_step=None if parent is None else parent.step,
            parent_metric=None if parent is None else parent.metric, ops=ops, reason=reason)

    def _beyond_margin(self, me, reports, available):
        """`available` narrowed to the members better than `me` by more than the
        margin, and to those `lines` lets it copy."""
        if self.lines is not None and self.lines.protects(me, reports):
            allowed = self.lines.parents(me, reports, self.mode)
            available = allowed if available is None else allowed & set(available)
        if not getattr(self.selection, "compares_metrics", True):
            return available
        if isinstance(self.margin, noise_lib.FixedMargin) and self.margin.delta == 0:
            return available
        # A zero threshold (the split's size or spread unknown) leaves the
        # choice to the selection, as without a margin (its ranking may not be
        # the last value's).
        beyond = {r.member_id for r in reports if r.member_id != me.member_id
                  and (self.margin.threshold(r, me) == 0
                       or self.margin.exceeds(r, me, self.mode))}
        return beyond if available is None else beyond & set(available)

    def _decide_ranked(self, me, reports, ranked, rng, available, history):
        before = dict(me.hparams)
        narrowed = self._beyond_margin(me, reports, available)
        parent = self.selection.choose_parent(me.member_id, ranked, self.mode, rng, narrowed)
        if parent is None:
            reason = "selection kept it"
            # Would it have copied without the margin? Asked with a copy of
            # the generator, so the member's own draws are unchanged.
            if narrowed is not available and self.selection.choose_parent(
                    me.member_id, ranked, self.mode, copy.deepcopy(rng), available) is not None:
                reason = (f"the last of its line ({self.lines!r})"
                          if self.lines is not None and self.lines.protects(me, reports)
                          else f"no better member beyond the margin ({self.margin!r})")
            return Decision(me.member_id, "keep", before, before, me.metric, reason=reason)
        parent = next(r for r in reports if r.member_id == parent.member_id)  # its raw metric
        new, ops = self.explore(parent.hparams, rng, history)
        return Decision(
            me.member_id, "exploit", new, before, me.metric,
            parent=parent.member_id, parent_step=parent.step,
            parent_metric=parent.metric, ops=ops, reason=self.selection.name,
        )


def _own_report(member_id, reports):
    mine = [r for r in reports if r.member_id == member_id]
    if len(mine) != 1:
        raise ValueError(
            f"`reports` must hold exactly one report of member {member_id!r}; "
            f"found {len(mine)}."
        )
    return mine[0]


@dataclasses.dataclass(frozen=True)
class BoundaryPlan:
    """One member's boundary, as the pure policy sees it; the glue acts on it.

    Made by `PBTPolicy.boundary`. The glue reads `judged`; if judged, it
    gathers the comparable reports and calls `with_reports` (which ranks
    them once), publishes a snapshot when `publish` says so, then calls
    `decide`. A boundary that is not judged decides "keep" with `reason`.

    Attributes:
        policy: the `PBTPolicy` that made it.
        report: the member's own `Report` at this boundary.
        key: the boundary's tie-breaking key.
        judged: whether the member is ranked at all at this boundary.
        reason: why not (`"burn-in"`, `"end of training"`), or `""`.
        reports: the comparable reports, once in (`with_reports`).
        ranked: `reports` best first by the policy's ranking (scores as
            metrics), ranked once for `publish` and `decide`.
        publish: whether this member may be copied at this boundary, so
            must publish a snapshot of its weights before deciding.
    """

    policy: Any = dataclasses.field(repr=False, compare=False)
    report: Any
    key: int
    judged: bool
    reason: str = ""
    reports: tuple = ()
    ranked: tuple = ()
    publish: bool = False

    def with_reports(self, reports):
        """This plan with the comparable `reports` ranked and `publish` set.

        Args:
            reports: `Report`s of the comparable members, the member's own
                included (exactly one).

        Returns:
            A new `BoundaryPlan`.
        """
        if not self.judged:
            raise ValueError(f"A boundary that is not judged ({self.reason}) ranks no reports. "
                             f"Received: reports={list(reports)!r}")
        reports = tuple(reports)
        _own_report(self.report.member_id, reports)
        ranked = tuple(self.policy.rank(reports, self.key))
        candidates = self.policy.selection.parent_candidates(list(ranked), self.policy.mode)
        return dataclasses.replace(self, reports=reports, ranked=ranked,
                                   publish=self.report.member_id in set(candidates))

    def decide(self, rng=None, available=None, history=None):
        """The member's `Decision` at this boundary.

        Args:
            rng: the member's own `numpy.random.Generator` (unused when the
                boundary is not judged).
            available: optional set of members that can be copied now.
            history: every `Report` so far, for PB2; ignored otherwise.

        Returns:
            A "keep" `Decision` with `reason` when not judged, else the
            policy's decision on the ranked reports.
        """
        me = self.report
        if not self.judged:
            hp = dict(me.hparams)
            return Decision(me.member_id, "keep", hp, dict(hp), me.metric, reason=self.reason)
        if not self.reports:
            raise ValueError("Call `with_reports` before `decide` on a judged boundary. "
                             "Received: reports=()")
        me = _own_report(me.member_id, self.reports)
        return self.policy._decide_ranked(me, list(self.reports), list(self.ranked), rng,
                                          available, history)


def unavailable_parent(decision):
    """The "keep" `Decision` for an exploit whose parent's snapshot cannot be fetched.

    Args:
        decision: an exploit `Decision`.

    Returns:
        A "keep" `Decision` with the member's hyperparameters before the
        boundary and the reason `"snapshot of member <parent> unavailable"`.

    Example:

    >>> d = Decision(1, "exploit", {"lr": 0.2}, {"lr": 0.1}, 0.5, parent=0)
    >>> unavailable_parent(d).action, unavailable_parent(d).reason
    ('keep', 'snapshot of member 0 unavailable')
    """
    if not decision.is_exploit:
        raise ValueError(f"Only an exploit has a parent to fetch. Received: decision={decision!r}")
    before = dict(decision.hparams_before)
    return Decision(decision.member_id, "keep", before, dict(before), decision.metric,
                    reason=f"snapshot of member {decision.parent!r} unavailable")


def comparable_reports(member_id, step, histories, window):
    """The reports to rank `member_id` against in asynchronous PBT.

    For every member, its latest report at or before `step` (so a member that
    is further ahead is judged at the same progress), dropping members whose
    latest such report is older than `step - window` (too far behind to
    compare) and members with no report yet.

    Args:
        member_id: the deciding member (its own report at `step` is included).
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
        if m != member_id and latest.step < step - window:
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
        The member id ranked first by `keras_pbt.core.ancestry.order_members` (NaN
        last, ties by member id), or `None` when there is no snapshot.
    """
    ranked = schedule_lib.order_members(metrics, mode)
    return ranked[0] if ranked else None
