"""A `Population`'s members in and out of a `keras_pbt.storage.checkpoint` directory.

`checkpoint.py` owns the on-disk format (files, SHA-256 manifest, fsync);
this module says what a member's file holds: its `Snapshot` (weights and
optimizer variables) with its RNG-state variables as extra arrays, in the
one payload layout of `keras_pbt.storage.payload`, and as metadata its
`PBTCallback`'s state (through `get_state()` / `set_state()`, never its
private fields), its seed, history and failures, and its reports and
lineage records. A member of an Iterated PBT population also keeps its
initial weights and the champions it was (`payload.encode_kept`), so a
resumed run restarts to the same weights and still weighs every champion
in its final choice.
"""

import dataclasses
import os

import numpy as np

from keras_pbt.storage import checkpoint as checkpoint_lib
from keras_pbt.core import config as config_lib
from keras_pbt.core import lineage as lineage_lib
from keras_pbt.runtime import snapshot as snapshot_lib
from keras_pbt.population import checks as population_checks
from keras_pbt.population.member import RestoredFailure
from keras_pbt.core.selection import Report
from keras_pbt.storage import payload as payload_lib


def header(population):
    """What identifies a population in its checkpoint's manifest: its members,
    space, monitor, mode and seed, its optimizers' classes (a checkpoint of
    SGD members cannot seed Adam members) and its interval."""
    interval = population.interval
    return {
        "member_ids": [m.member_id for m in population.members],
        "space": {name: checkpoint_lib.to_json(spec.to_dict())
                  for name, spec in population.space.items()},
        "monitor": population.monitor,
        "mode": population.mode,
        "seed": population.seed,
        "optimizers": [[name, _class_name(opt)]
                       for name, opt in snapshot_lib.optimizers(population.members[0].model)],
        "interval": {"epochs": interval.epochs, "steps": interval.steps,
                     "burn_in": interval.burn_in},
    }


def _class_name(optimizer):
    inner = getattr(optimizer, "inner_optimizer", None)  # LossScaleOptimizer(SGD)
    name = type(optimizer).__name__
    return f"{name}({_class_name(inner)})" if inner is not None else name


def _check_same_population(directory, body, head, manifest):
    for key in ("member_ids", "space", "monitor", "mode"):
        if body.get(key) != head[key]:
            raise checkpoint_lib.CheckpointError(
                f"`checkpoint_dir`={directory!r} holds a checkpoint of another population: "
                f"its {key} is {body.get(key)!r}, this population's is {head[key]!r}. "
                "Use another directory, or build the same population.", manifest)
    # Checkpoints written before these keys existed are not compared on them.
    if "optimizers" in body and body["optimizers"] != head["optimizers"]:
        raise checkpoint_lib.CheckpointError(
            f"`checkpoint_dir`={directory!r} holds a checkpoint of members trained with the "
            f"optimizers {body['optimizers']!r}; `build` now compiles {head['optimizers']!r}, "
            "whose state it cannot restore. Build the same optimizers, or use another "
            f"directory. Received: optimizers={head['optimizers']!r}", manifest)
    if "interval" in body and body["interval"] != head["interval"]:
        given = population_checks.interval_text(config_lib.Interval(**head["interval"]))
        try:
            saved = "interval=" + population_checks.interval_text(
                config_lib.Interval(**body["interval"]))
        except (TypeError, ValueError):  # an interval written by an older keras-pbt
            saved = f"the interval {body['interval']!r}"
        raise checkpoint_lib.CheckpointError(
            f"`checkpoint_dir`={directory!r} holds a checkpoint of a population that judged with "
            f"{saved}; resuming it with another interval would change the schedule it was "
            f"trained on. Pass {saved}, or use another directory. Received: interval={given}",
            manifest)


def _check_no_unverified_files(ck, directory):
    """No manifest, but files of a complete checkpoint epoch: the manifest was
    deleted (or the first one never written). They are never deleted unread."""
    complete = [(name, n) for name, n in ck.epoch_files() if n >= ck.population_size]
    if complete:
        listed = ", ".join(f"{name}/ ({n} member files)" for name, n in ck.epoch_files())
        raise checkpoint_lib.CheckpointError(
            f"`checkpoint_dir`={directory!r} has no {checkpoint_lib.MANIFEST} but holds "
            f"checkpoint files: {listed}. The manifest was deleted, or the run stopped while "
            "writing its first one; keras-pbt does not resume from files it cannot verify, nor "
            "delete them. To resume, put the manifest back; to start over, delete those "
            f"directories or use another checkpoint_dir. Received: checkpoint_dir={directory!r}",
            os.path.join(ck.directory, checkpoint_lib.MANIFEST))


def open_checkpoint(population, directory, epochs=None):
    """Opens `directory` for `population`; resumes from it when it holds a
    checkpoint of this population and the population has not trained yet.

    Args:
        population: the `Population`.
        directory: the checkpoint directory.
        epochs: the epochs `fit` trains to, or None not to check them.

    Returns:
        `(checkpointer, resumed_epoch)`; `resumed_epoch` is None when
        nothing was restored.

    Raises:
        CheckpointError: a checkpoint of another population (other members,
            space, monitor, optimizers or interval), a later one than this
            population's state or than `epochs`, a corrupt one, or
            checkpoint files without a manifest.
    """
    head = header(population)
    ck = checkpoint_lib.Checkpointer(directory, head)
    manifest = os.path.join(ck.directory, checkpoint_lib.MANIFEST)
    body = checkpoint_lib.read_manifest(ck.directory)
    resumed = None
    if body is None:
        _check_no_unverified_files(ck, directory)
    else:
        _check_same_population(directory, body, head, manifest)
        if epochs is not None and body["epoch"] > epochs:
            raise checkpoint_lib.CheckpointError(
                f"`checkpoint_dir`={directory!r} holds a checkpoint of epoch {body['epoch']}, "
                f"beyond `epochs`={epochs}: the population trained further than asked. Pass "
                f"epochs >= {body['epoch']} to resume it, or use another directory. "
                f"Received: epochs={epochs}", manifest)
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
    payload_lib.encode_kept(arrays, meta, _kept(member, store))
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


def _kept(member, store):
    """The snapshots an Iterated PBT member keeps beside its own: its initial
    weights (what a restart goes back to) and the champions it was."""
    iterated = member.callback.iterated
    if iterated is None:
        return {}
    kept = {} if iterated.initial_snapshot is None else {"initial": iterated.initial_snapshot}
    own = [c for c in store.champions() if c.member_id == member.member_id]
    kept.update({f"champion{j}": c for j, c in enumerate(own)})
    return kept


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
    histories, lineages, champions = {}, [], []
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
        kept = payload_lib.decode_kept(arrays, meta, entry["file"])
        if member.callback.iterated is not None:
            member.callback.iterated.initial_snapshot = kept.get("initial")
        champions += [s for tag, s in kept.items() if tag.startswith("champion")]
        histories[member.member_id] = [_report(r) for r in meta["reports"]]
        lineages.append([lineage_lib.LineageRecord.from_dict(r) for r in meta["lineage"]])
    population.store.restore_records(
        histories, checkpoint_lib.merge_lineage(lineages),
        {m.member_id: m.callback.hparams for m in population.members},
        sorted(champions, key=lambda s: s.step))
