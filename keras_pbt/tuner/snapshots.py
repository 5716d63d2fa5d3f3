"""A segment's `Snapshot` in its trial directory, in `keras_pbt.storage.checkpoint`'s format.

Plain Python + NumPy. keras-tuner's own checkpoint keeps only the weights of
a trial's best epoch; PBT needs the optimizer state too (slots and
iteration count), so every segment trial writes its final `Snapshot` into
its trial directory as a one-file `keras_pbt.storage.checkpoint`:

    trial_<id>/
      manifest.json        names the file with its SHA-256 and size (written last)
      pbt_snapshot.npz     weights `w*`, optimizer variables `o*`, JSON metadata

Both are written with `keras_pbt.storage.checkpoint.atomic_write` (temporary file,
`fsync`, `os.replace`, directory `fsync`), nothing is unpickled, and a
file that does not match its manifest raises `keras_pbt.storage.checkpoint.
CheckpointError` naming it. The member, step, hyperparameters and metric
are stored as a `keras_pbt.core.lineage` payload (`dumps` / `loads`), so a NaN
metric is spelled as in every other keras-pbt file.
"""

import os

from keras_pbt.storage import checkpoint as checkpoint_lib
from keras_pbt.core import lineage as lineage_lib
from keras_pbt.storage.store import Snapshot
from keras_pbt.tuner.segments import STEP_METRIC

FILE = "pbt_snapshot.npz"


def exists(directory):
    """True if `directory` holds a complete snapshot (its manifest exists)."""
    return os.path.exists(os.path.join(directory, checkpoint_lib.MANIFEST))


def finished_logs(directory, objective):
    """The final logs of a segment whose snapshot is complete in `directory`.

    A worker writes a segment's snapshot when it has trained it, before it
    reports to the chief; a segment handed out again (its chief stopped
    before the report was saved) is not trained a second time.

    Args:
        directory: the segment trial's directory.
        objective: the objective's name.

    Returns:
        `{objective: metric, "pbt/step": step}` from the snapshot, or None
        when `directory` holds no complete snapshot.
    """
    if not exists(directory):
        return None
    snapshot = load(directory)
    return {objective: snapshot.metric, STEP_METRIC: int(snapshot.step)}


def save(directory, snapshot):
    """Writes `snapshot` into `directory` (created if needed)."""
    os.makedirs(directory, exist_ok=True)
    arrays = {f"w{i:05d}": a for i, a in enumerate(snapshot.weights)}
    arrays.update({f"o{i:05d}": a for i, a in enumerate(snapshot.optimizer)})
    record = lineage_lib.LineageRecord(
        member=snapshot.member, step=int(snapshot.step), action="keep",
        hparams=dict(snapshot.hparams), metric=snapshot.metric)
    meta = {
        "snapshot": lineage_lib.dumps([record]),
        "layout": checkpoint_lib.to_json(snapshot.layout),
        "num_weights": len(snapshot.weights),
    }
    data = checkpoint_lib.encode_arrays(arrays, meta)
    checkpoint_lib.atomic_write(os.path.join(directory, FILE), data)
    checkpoint_lib.write_manifest(directory, {"files": [
        {"file": FILE, "sha256": checkpoint_lib.sha256(data), "bytes": len(data)}]})


def load(directory):
    """Reads the `Snapshot` saved in `directory`.

    Raises:
        FileNotFoundError: if there is no complete snapshot.
        keras_pbt.storage.checkpoint.CheckpointError: (a `ValueError`) naming the
            file when it does not match its manifest, is truncated, or
            holds pickled data.
    """
    body = checkpoint_lib.read_manifest(directory)
    if body is None:
        raise FileNotFoundError(
            f"No keras-pbt snapshot in {directory!r} (no {checkpoint_lib.MANIFEST}).")
    arrays, meta = checkpoint_lib.read_file(directory, body["files"][0])
    record = lineage_lib.loads(meta["snapshot"])[0]
    names = sorted(arrays)
    weights = tuple(arrays[k] for k in names if k.startswith("w"))
    optimizer = tuple(arrays[k] for k in names if k.startswith("o"))
    if len(weights) != meta["num_weights"]:
        raise checkpoint_lib.CheckpointError(
            f"The snapshot in {directory!r} holds {len(weights)} weights; its metadata "
            f"says {meta['num_weights']}.", directory)
    return Snapshot(
        member=record.member, step=record.step, weights=weights, optimizer=optimizer,
        hparams=record.hparams, metric=record.metric,
        layout=tuple((r[0], r[1], tuple(r[2]), r[3]) for r in meta["layout"]),
    )
