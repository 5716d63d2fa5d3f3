"""A segment's `Snapshot` in its trial directory, in `keras_pbt.storage.checkpoint`'s format.

Plain Python + NumPy. keras-tuner's own checkpoint keeps only the weights of
a trial's best epoch; PBT needs the optimizer state too (slots and
iteration count), so every segment trial writes its final `Snapshot` into
its trial directory as a one-file `keras_pbt.storage.checkpoint`:

    trial_<id>/
      manifest.json        names the file with its SHA-256 and size (written last)
      pbt_snapshot.npz     the snapshot in `keras_pbt.storage.payload`'s layout

Both are written with `keras_pbt.storage.checkpoint.atomic_write` (temporary file,
`fsync`, `os.replace`, directory `fsync`), nothing is unpickled, and a
file that does not match its manifest raises `keras_pbt.storage.checkpoint.
CheckpointError` naming it. A `Population` checkpoint stores each member's
snapshot in the same layout, written and read by the same two functions.
"""

import os

from keras_pbt.storage import checkpoint as checkpoint_lib
from keras_pbt.storage import payload as payload_lib
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
    """Writes `snapshot` into `directory` (created if needed); arrays on a
    GPU are copied to the host first (`keras_pbt.storage.payload`)."""
    os.makedirs(directory, exist_ok=True)
    arrays, meta = payload_lib.encode_snapshot(snapshot)
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
    entry = body["files"][0]
    arrays, meta = checkpoint_lib.read_file(directory, entry)
    snap, _ = payload_lib.decode_snapshot(arrays, meta, os.path.join(directory, entry["file"]))
    return snap
