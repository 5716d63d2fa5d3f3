"""A `Population`'s members in and out of a `keras_pbt.storage.checkpoint` directory.

`checkpoint.py` owns the on-disk format (files, SHA-256 manifest, fsync);
this module says what a member's file holds: its `Snapshot` (weights and
optimizer variables) with its RNG-state variables as extra arrays, in the
one payload layout of `keras_pbt.storage.payload`, and as metadata its
`PBTCallback`'s state (through `get_state()` / `set_state()`, never its
private fields), its seed, history and failures, and its reports and
lineage records.
"""

import dataclasses
import os

import numpy as np

from keras_pbt.storage import checkpoint as checkpoint_lib
from keras_pbt.core import lineage as lineage_lib
from keras_pbt.runtime import snapshot as snapshot_lib
from keras_pbt.population.member import RestoredFailure
from keras_pbt.core.selection import Report
from keras_pbt.storage import payload as payload_lib

def header(population):
    """What identifies a population in its checkpoint's manifest."""
    return {
        "member_ids": [m.member_id for m in population.members],
        "space": {name: checkpoint_lib.to_json(spec.to_dict())
                  for name, spec in population.space.items()},
        "monitor": population.monitor,
        "mode": population.mode,
        "seed": population.seed,
    }


def open_checkpoint(population, directory):
    """Opens `directory` for `population`; resumes from it when it holds a
    checkpoint of this population and the population has not trained yet.

    Returns:
        `(checkpointer, resumed_epoch)`; `resumed_epoch` is None when
        nothing was restored.

    Raises:
        CheckpointError: a checkpoint of another population, a later one
            than this population's state, or a corrupt one.
    """
    head = header(population)
    ck = checkpoint_lib.Checkpointer(directory, head)
    manifest = os.path.join(ck.directory, checkpoint_lib.MANIFEST)
    body = checkpoint_lib.read_manifest(ck.directory)
    resumed = None
    if body is not None:
        for key in ("member_ids", "space", "monitor", "mode"):
            if body.get(key) != head[key]:
                raise checkpoint_lib.CheckpointError(
                    f"`checkpoint_dir`={directory!r} holds a checkpoint of another population: "
                    f"its {key} is {body.get(key)!r}, this population's is {head[key]!r}. "
                    "Use another directory, or build the same population.", manifest)
    trained = max(m.callback.epochs for m in population.members)
    if body is not None and trained:
        # This population already trained in this process: go on from
        # its state in memory, never roll it back to an older checkpoint.
        if body["epoch"] > trained:
            raise checkpoint_lib.CheckpointError(
                f"`checkpoint_dir`={directory!r} holds a checkpoint of epoch {body['epoch']}, "
                f"later than this population's epoch {trained}. Resume it with a new "
                "Population, or use another directory.", manifest)
    elif body is not None:
        body, members = ck.load()  # verifies every file before anything is restored
        restore(population, body, members)
        ck.header["seed"] = population.seed
        resumed = body["epoch"]
    ck.clean()
    return ck, resumed


def save_member(checkpointer, index, member, store):
    """Writes member `index`'s file for the epoch it has reached."""
    state = member.callback.get_state()  # brings the step count up to the optimizer's
    snap = snapshot_lib.capture(member.model, member.member_id, state["steps"], state["hparams"],
                                 on_device=False)  # written to disk: straight to the host
    reports, records = store.member_records(member.member_id)
    extra = snapshot_lib.other_variables(member.model)
    arrays, meta = payload_lib.encode_snapshot(
        snap, extra=[np.array(v.numpy(), copy=True) for v in extra])
    meta.update({
        "state": checkpoint_lib.to_json(state),
        "seed": member.seed,
        "history": checkpoint_lib.to_json(member.history),
        "failures": [str(e) if isinstance(e, RestoredFailure) else f"{type(e).__name__}: {e}"
                     for e in member.failures],
        "extra_variables": [[v.name, list(v.shape), str(v.dtype)] for v in extra],
        "reports": [checkpoint_lib.to_json(dataclasses.asdict(r)) for r in reports],
        "lineage": [r.to_dict() for r in records],
    })
    try:
        checkpointer.save_member(index, state["epochs"], arrays, meta)
    except OSError as error:
        raise checkpoint_lib.CheckpointError(
            f"Could not write the checkpoint of member {member.member_id!r} to "
            f"{checkpointer.directory}: {error}", checkpointer.directory) from error


def _floats(values):
    """A list of metrics read back from JSON (`"NaN"` -> nan)."""
    return [lineage_lib.decode_float(v) for v in values]


def _report(row):
    """A `Report` from its checkpointed dict; only its metrics are floats."""
    fields = {f.name for f in dataclasses.fields(Report)}
    row = {k: v for k, v in row.items() if k in fields}
    row["metric"] = lineage_lib.decode_float(row["metric"])
    row["start_metric"] = lineage_lib.decode_float(row.get("start_metric"))
    row["recent"] = tuple(_floats(row.get("recent", ())))
    row["recent_steps"] = tuple(row.get("recent_steps", ()))
    return Report(**row)


def restore(population, body, members):
    """Puts every member, the store and the seed back as checkpointed.

    Only the fields that hold metrics are read as floats: a hyperparameter
    or a member id spelled `"NaN"` comes back as the string it was.
    """
    histories, lineages = {}, []
    population.seed = population.store.seed = int(body["seed"])
    for member, (arrays, meta), entry in zip(population.members, members, body["files"]):
        snap, saved = payload_lib.decode_snapshot(arrays, meta, entry["file"])
        if snap.member_id != member.member_id:
            raise checkpoint_lib.CheckpointError(
                f"Checkpoint file {entry['file']} holds member {snap.member_id!r}, not "
                f"{member.member_id!r}.", entry["file"])
        try:
            snapshot_lib.restore(member.model, snap, copy_optimizer_state=True)
        except ValueError as error:
            raise checkpoint_lib.CheckpointError(
                f"The checkpoint does not fit member {member.member_id!r}'s model: {error}") from None
        extra = snapshot_lib.other_variables(member.model)
        rows = [[v.name, list(v.shape), str(v.dtype)] for v in extra]
        if rows != meta.get("extra_variables", []) or len(saved) != len(extra):
            raise checkpoint_lib.CheckpointError(
                f"The checkpoint does not fit member {member.member_id!r}'s model: its other variables "
                f"(RNG states) are {meta.get('extra_variables')}, the model's are {rows}.")
        for variable, value in zip(extra, saved):
            variable.assign(value)
        state = dict(meta["state"], member_id=member.member_id, seed=population.seed)
        state["recent"] = _floats(state.get("recent", ()))
        state["start_metric"] = lineage_lib.decode_float(state.get("start_metric"))
        try:
            member.callback.set_state(state)
        except ValueError as error:
            raise checkpoint_lib.CheckpointError(
                f"The checkpoint does not fit member {member.member_id!r}: {error}") from None
        member.seed = int(meta["seed"])
        member.history = {k: _floats(v) for k, v in meta["history"].items()}
        member.failures = [RestoredFailure(text) for text in meta["failures"]]
        member.initial_snapshot = None
        histories[member.member_id] = [_report(r) for r in meta["reports"]]
        lineages.append([lineage_lib.LineageRecord.from_dict(r) for r in meta["lineage"]])
    population.store.restore_records(
        histories, checkpoint_lib.merge_lineage(lineages),
        {m.member_id: m.callback.hparams for m in population.members})
