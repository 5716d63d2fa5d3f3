"""Which member is best, and the hyperparameter schedule behind its weights.

Pure Python, the one home of two rules that the callback's population, the
keras-tuner oracle, `replay` and the TensorBoard tab's server all use:

* **The best member** (`order_members`, `best_member`). Each member counts with
  the metric of its latest record that has one (its latest boundary; an
  exploit record holds the metric the member had before it copied, a restart
  record holds none). Finite metrics rank first, by `mode`; NaN and +-inf rank
  last whatever the mode; members without a metric are not ranked. Ties go to
  the member that comes first in member order (`member_order_key`: integer
  ids by value, then other ids by their text), so the answer never depends on
  the order the records arrived in.
* **The ancestry** (`ancestry`). A member's final weights have a history that
  runs through its parents: it trained with its own hyperparameters since its
  last exploit or restart, before that it *was* its parent (from the parent's
  last change up to the snapshot it copied), and so on back to a member's
  initial hyperparameters or a restart from scratch. A parent's snapshot is
  taken at its boundary *before* its own decision there, so the parent's
  changes at the snapshot's step come after it. Steps in the schedule count
  the optimizer steps those weights had received, so a single model trained
  from scratch can follow it (`ScheduleCallback`).

Reading records back from a TensorBoard log directory is
`keras_pbt.storage.events.read_lineage`.
"""

import dataclasses
import numbers
from typing import Any, Dict, Optional

from keras_pbt.core import lineage as lineage_lib
from keras_pbt.core import selection as selection_lib
from keras_pbt.core.validation import check_mode

# Records after which a member trains with new hyperparameters (and, for an
# exploit or restart, new weights).
CHANGES = ("init", "exploit", "restart")


@dataclasses.dataclass(frozen=True)
class AncestryEntry:
    """One change of hyperparameters on the way to a member's final weights.

    Attributes:
        step: optimizer steps the weights had received when `hparams` took
            effect (0 for the initial hyperparameters): the step at which a
            replay applies them.
        hparams: the hyperparameters used from `step` on.
        member_id: the member that trained with them.
        member_step: that member's own step at the change.
        action: `"init"`, `"exploit"` or `"restart"`.
        record: the `LineageRecord` of the change.
        member_end_step: that member's own step where this piece of the
            history ends: the snapshot the next entry's member copied, or,
            for the last entry, the member's latest record.
    """

    step: int
    hparams: Dict[str, Any]
    member_id: Any
    member_step: int
    action: str
    record: Any = None
    member_end_step: Optional[int] = None

    @property
    def end_step(self):
        """Optimizer steps the weights had received where this piece ends."""
        end = self.member_step if self.member_end_step is None else self.member_end_step
        return self.step + end - self.member_step

    def to_dict(self):
        """A JSON-safe dict (the lineage module's spelling of non-finite floats)."""
        record = self.record
        return lineage_lib.encode({
            "step": self.step, "end_step": self.end_step, "member": self.member_id,
            "member_step": self.member_step, "member_end_step": self.member_end_step,
            "action": self.action, "hparams": dict(self.hparams),
            "parent": None if record is None else record.parent,
            "parent_step": None if record is None else record.parent_step,
        })


def member_order_key(member_id):
    """The canonical order of member ids: integers by value, then the rest by text.

    Used to break ties, so `2` comes before `10` and before `"a"`.
    """
    if isinstance(member_id, numbers.Integral) and not isinstance(member_id, bool):
        return (0, int(member_id), "")
    return (1, 0, str(member_id))


def order_members(metrics, mode):
    """Member ids, best first, by the one best-member rule: their latest metric.

    This orders the final standings (`best_member`, the tab's table). It
    is not a boundary's *rank*, which orders reports by the policy's
    ranking signal with a seeded tie-break (`PBTPolicy.rank`).

    Args:
        metrics: dict member id -> its current metric (None: left out).
        mode: `"min"` or `"max"`.

    Returns:
        A list of member ids: finite metrics by `mode`, then non-finite ones
        (NaN, inf, -inf); equal metrics in `member_order_key` order.

    Example:

    >>> order_members({0: 0.5, 1: 0.9, 2: float("nan"), 3: 0.9, 4: None}, "max")
    [1, 3, 0, 2]
    """
    check_mode(mode)
    sign = -1.0 if mode == "max" else 1.0

    def key(item):
        member, metric = item
        if not selection_lib.is_finite(metric):
            return (1, 0.0, member_order_key(member))
        return (0, sign * float(metric), member_order_key(member))

    ranked = sorted(((m, v) for m, v in metrics.items() if v is not None), key=key)
    return [m for m, _ in ranked]


def latest_metrics(lineage):
    """dict member id -> the metric of its latest record that has one.

    Records are taken in step order; records of one step keep the order they
    were written in. Members whose records hold no metric are left out.
    """
    latest = {}
    for r in _sorted(lineage):
        if r.metric is not None:
            latest[r.member_id] = r.metric
    return latest


def best_member(lineage, mode=None):
    """The member whose latest metric is best (see `order_members` for ties and NaN).

    Args:
        lineage: `LineageRecord`s of a run.
        mode: `"min"` or `"max"`; by default the mode written in the records.

    Returns:
        The member id.

    Raises:
        ValueError: if no record has a metric, or the mode is unknown.

    Example:

    >>> best_member(pop.lineage, "max")
    2
    """
    records = _sorted(lineage)
    metrics = latest_metrics(records)
    if not metrics:
        raise ValueError("No lineage record has a metric: cannot tell the best member.")
    return order_members(metrics, records_mode(records) if mode is None else mode)[0]


def records_mode(lineage):
    """The metric's direction written in a run's records: the one mode they
    all give (records without a mode are skipped).

    Args:
        lineage: `LineageRecord`s of one run.

    Returns:
        `"min"` or `"max"`.

    Raises:
        ValueError: the records give no mode, or several.

    Example:

    >>> records_mode([LineageRecord(0, 10, "keep", {}, metric=0.5, mode="min")])
    'min'
    """
    modes = {r.mode for r in lineage if r.mode}
    if len(modes) != 1:
        raise ValueError(f"Pass mode='min' or mode='max': the records give modes {sorted(modes)}.")
    return check_mode(modes.pop())


def _sorted(lineage):
    # Stable by step: records of one step keep the order they were written in.
    records = list(lineage)
    for r in records:
        if not isinstance(r, lineage_lib.LineageRecord):
            raise TypeError(f"`lineage` must hold LineageRecords. Received: {r!r}")
    return sorted(records, key=lambda r: r.step)


def ancestry(lineage, member_id=None, mode=None, step=None):
    """The changes of hyperparameters behind `member_id`'s weights, oldest first.

    Walks from the member's last change back through `parent` /
    `parent_step` to an initial record or a restart from scratch. A
    parent's snapshot is taken at its boundary *before* its own decision
    there, so the parent's changes at the snapshot's step (other than its
    `init`) are not part of it. Of several changes of one member at one
    step, the one written last counts.

    Args:
        lineage: `LineageRecord`s of a finished run (e.g. `Population.lineage`,
            `store.lineage()`, or `read_lineage(logdir)`).
        member_id: the member's id; by default the best member (`best_member`).
        mode: `"min"` or `"max"` for choosing the best member; by default
            the mode in the records.
        step: the member's own step whose weights to follow, as a snapshot
            taken there would hold them (before the member's decision at
            that step); by default its final weights. The keras-tuner
            oracle passes a segment's last step to follow that segment.

    Returns:
        A list of `AncestryEntry`, the first one at step 0.

    Raises:
        ValueError: for an unknown member or an incomplete lineage (a parent
            without records, a member without its initial record).

    Example:

    ```python
    entries = ancestry(pop.lineage)  # the best member
    [(e.step, e.member_id, e.action) for e in entries]
    # [(0, 2, 'init'), (90, 7, 'exploit'), (360, 1, 'exploit')]
    ```
    """
    if step is not None and (isinstance(step, bool) or not isinstance(step, numbers.Integral)
                             or step < 0):
        raise ValueError(f"`step` must be None or an int >= 0. Received: step={step!r}")
    records = _sorted(lineage)
    if member_id is None:
        member_id = best_member(records, mode)
    by_member = {}
    for r in records:
        by_member.setdefault(r.member_id, []).append(r)
    chain = []
    current, until = member_id, None if step is None else int(step)
    for _ in range(len(records) + 1):
        if current not in by_member:
            known = sorted(map(repr, by_member))
            what = "member" if not chain else f"parent of member {chain[-1].member_id!r}"
            raise ValueError(
                f"The lineage has no records of {what} {current!r}. Members: {', '.join(known)}."
            )
        changes = [
            r for r in by_member[current]
            if r.action in CHANGES
            and (until is None or r.step < until or (r.step == until and r.action == "init"))
        ]
        if not changes:
            raise ValueError(
                f"The lineage of member {current!r} has no initial record"
                + ("" if until is None else f" before step {until}")
                + ": is it complete?"
            )
        last = changes[-1]
        chain.append(last)
        if last.action == "init" or last.parent is None:
            break
        if last.parent_step is None:
            raise ValueError(f"The {last.action} record of member {current!r} at step "
                             f"{last.step} has no parent_step.")
        current, until = last.parent, last.parent_step
    else:
        raise ValueError("The lineage's parents form a cycle.")
    chain.reverse()
    last_step = by_member[member_id][-1].step if step is None else int(step)
    entries, age = [], 0
    for i, r in enumerate(chain):
        if i:
            # The weights trained in the previous member from its change
            # up to the snapshot this one copied.
            age += r.parent_step - chain[i - 1].step
        end = chain[i + 1].parent_step if i + 1 < len(chain) else max(last_step, r.step)
        entries.append(AncestryEntry(age, dict(r.hparams), r.member_id, r.step, r.action, r, end))
    return entries


def ancestry_schedule(lineage, member_id=None, mode=None, step=None):
    """`[(step, hparams)]`: the schedule of `ancestry(lineage, member_id, mode, step)`.

    This is what `ScheduleCallback` applies: `hparams` from `step` on.
    """
    return [(e.step, dict(e.hparams)) for e in ancestry(lineage, member_id, mode, step)]


def schedule_by_hparam(schedule):
    """The schedule per hyperparameter: name -> `[[step, value], ...]`.

    Only changes are kept: a value equal to the one before it is dropped.
    This is the schedule the TensorBoard tab highlights and prints.

    Args:
        schedule: `ancestry_schedule(...)` output (`[(step, hparams)]`) or
            `ancestry(...)` output (`AncestryEntry`s).

    Returns:
        A dict sorted by hyperparameter name.

    Example:

    >>> schedule_by_hparam([(0, {"lr": 0.1, "m": 0.9}), (10, {"lr": 0.2, "m": 0.9})])
    {'lr': [[0, 0.1], [10, 0.2]], 'm': [[0, 0.9]]}
    """
    out = {}
    for item in schedule:
        step, hparams = (item.step, item.hparams) if isinstance(item, AncestryEntry) else item
        for name, value in hparams.items():
            points = out.setdefault(name, [])
            if not points or not _same_value(points[-1][1], value):
                points.append([step, value])
    return {name: out[name] for name in sorted(out)}


def _same_value(a, b):
    # NaN equals NaN here: a schedule does not change when NaN stays NaN.
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return type(a) is type(b) and a == b
