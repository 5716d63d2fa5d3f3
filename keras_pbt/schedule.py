"""The hyperparameter schedule a member trained with, through the members it copied.

Pure Python: turns lineage records into the schedule that `ScheduleCallback`
replays in one plain `model.fit`. Reading records from a TensorBoard log
directory (`read_lineage`) imports TensorFlow when it is called, not before.

A member's final weights have a history that runs through its parents: it
trained with its own hyperparameters since its last exploit, before that it
*was* its parent (from the parent's last change up to the snapshot it
copied), and so on back to a member's initial hyperparameters. Steps in the
schedule count the optimizer steps those weights had received, so a single
model trained from scratch can follow it.
"""

import dataclasses
import os
from typing import Any, Dict

from keras_pbt import lineage as lineage_lib
from keras_pbt import selection as selection_lib

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
        member: the member that trained with them.
        member_step: that member's own step at the change.
        action: `"init"`, `"exploit"` or `"restart"`.
        record: the `LineageRecord` of the change.
    """

    step: int
    hparams: Dict[str, Any]
    member: Any
    member_step: int
    action: str
    record: Any = None


def best_member(lineage, mode=None):
    """The member whose latest metric is best.

    Args:
        lineage: `LineageRecord`s of a run.
        mode: `"min"` or `"max"`; by default the mode written in the records.

    Raises:
        ValueError: if no record has a metric, or the mode is unknown.
    """
    latest = {}
    for r in _sorted(lineage):
        if r.metric is not None:
            latest[r.member] = r
    if not latest:
        raise ValueError("No lineage record has a metric: cannot tell the best member.")
    if mode is None:
        modes = {r.mode for r in latest.values() if r.mode}
        if len(modes) != 1:
            raise ValueError(
                f"Pass mode='min' or mode='max': the records give modes {sorted(modes)}."
            )
        mode = modes.pop()
    if mode not in ("min", "max"):
        raise ValueError(f"`mode` must be 'min' or 'max'. Received: mode={mode!r}")
    reports = [selection_lib.Report(m, r.step, r.metric) for m, r in latest.items()]
    return selection_lib.best_report(reports, mode).member


def _sorted(lineage):
    # Stable by step: records of one step keep the order they were written in.
    records = list(lineage)
    for r in records:
        if not isinstance(r, lineage_lib.LineageRecord):
            raise TypeError(f"`lineage` must hold LineageRecords. Received: {r!r}")
    return sorted(records, key=lambda r: r.step)


def ancestry(lineage, member=None, mode=None):
    """The changes of hyperparameters behind `member`'s final weights, oldest first.

    Walks from the member's last change back through `parent` /
    `parent_step` to an initial one. A parent's snapshot is taken at its
    boundary *before* its own decision there, so the parent's changes at
    the snapshot's step are not part of it.

    Args:
        lineage: `LineageRecord`s of a finished run (e.g. `Population.lineage`,
            `store.lineage()`, or `read_lineage(logdir)`).
        member: the member id; by default the best member (`best_member`).
        mode: `"min"` or `"max"` for choosing the best member; by default
            the mode in the records.

    Returns:
        A list of `AncestryEntry`, the first one at step 0.

    Raises:
        ValueError: for an unknown member or an incomplete lineage (a parent
            without records, a member without its initial record).

    Example:

    >>> entries = ancestry(pop.lineage)  # the best member
    >>> [(e.step, e.member, e.action) for e in entries]
    [(0, 2, 'init'), (90, 7, 'exploit'), (360, 1, 'exploit')]
    """
    records = _sorted(lineage)
    if member is None:
        member = best_member(records, mode)
    by_member = {}
    for r in records:
        by_member.setdefault(r.member, []).append(r)
    chain = []
    current, until = member, None
    for _ in range(len(records) + 1):
        if current not in by_member:
            known = sorted(map(repr, by_member))
            what = "member" if not chain else f"parent of member {chain[-1].member!r}"
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
    entries, step = [], 0
    for i, r in enumerate(chain):
        if i:
            # The weights trained in the previous member from its change
            # up to the snapshot this one copied.
            step += r.parent_step - chain[i - 1].step
        entries.append(AncestryEntry(step, dict(r.hparams), r.member, r.step, r.action, r))
    return entries


def ancestry_schedule(lineage, member=None, mode=None):
    """`[(step, hparams)]`: the schedule of `ancestry(lineage, member, mode)`.

    This is what `ScheduleCallback` applies: `hparams` from `step` on.
    """
    return [(e.step, dict(e.hparams)) for e in ancestry(lineage, member, mode)]


def read_lineage(logdir):
    """Reads the lineage records a run wrote to a TensorBoard log directory.

    `logdir` is the directory given as `logdir=` to `PBTCallback` or
    `Population` (it holds one `member_<id>` run per member). When a step's
    records were written more than once (a restart after a boundary), the
    last write, which carries the earlier records too, counts.

    Raises:
        ValueError: if there are no lineage records, or records of more than
            one population (runs in several directories): pass one of them.
    """
    runs = {}
    for root, _, files in os.walk(logdir):
        events = sorted(f for f in files if "tfevents" in f)
        if not events:
            continue
        by_step = {}
        for name in events:
            for event in _events(os.path.join(root, name)):
                for value in event.summary.value:
                    if (value.tag == lineage_lib.LINEAGE_TAG
                            and value.metadata.plugin_data.plugin_name in ("", lineage_lib.PLUGIN_NAME)):
                        by_step[event.step] = lineage_lib.loads(_tensor_text(value.tensor))
        if by_step:
            runs[root] = [r for step in sorted(by_step) for r in by_step[step]]
    if not runs:
        raise ValueError(f"No keras-pbt lineage records under {logdir!r}.")
    populations = sorted({os.path.dirname(run) for run in runs})
    if len(populations) > 1:
        raise ValueError(
            f"{logdir!r} holds the lineage of {len(populations)} populations: "
            f"{', '.join(populations)}. Pass one of them."
        )
    return [r for run in sorted(runs) for r in runs[run]]


def _events(path):
    """The `Event` protos of one event file; stops at a truncated last record
    (a run that is still writing)."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    try:
        for raw in tf.data.TFRecordDataset(path):
            yield event_pb2.Event.FromString(raw.numpy())
    except tf.errors.DataLossError:
        return


def _tensor_text(tensor):
    import tensorflow as tf

    return tf.make_ndarray(tensor).item()
