"""A member's `Snapshot` as arrays and JSON metadata: the one payload layout.

Pure Python + NumPy. Every keras-pbt file that holds a member's training
state (a `Population` checkpoint's member file, a `PBTTuner` segment's
snapshot) stores it this way, written by `encode_snapshot` and read by
`decode_snapshot`; `keras_pbt.storage.checkpoint` puts the two parts in one
`.npz` file:

* arrays `w00000, w00001, ...`: the model's weights; `o*`: the optimizer
  variables; `r*`: further arrays the writer adds (a population member's
  random-generator states);
* `meta["snapshot"]`: `member_id`, `step`, `hparams`, `metric` (a NaN or
  infinite metric in the project's one spelling, `"NaN"`), `layout` (the
  rows `keras_pbt.runtime.snapshot.layout` checks a restore against),
  `num_weights`, `num_optimizer` and `num_extra`.

A snapshot whose arrays live on a GPU is copied to the host first
(`Snapshot.to_host()`: a PyTorch CUDA tensor through `.cpu()`), so the
writer never hands a device tensor to NumPy.
"""

from keras_pbt.core import lineage as lineage_lib
from keras_pbt.storage.checkpoint import CheckpointError
from keras_pbt.storage.checkpoint import to_json
from keras_pbt.storage.store import Snapshot

KEY = "snapshot"
_PREFIXES = ("w", "o", "r")


def encode_snapshot(snapshot, extra=()):
    """`(arrays, meta)` of `snapshot`, for `keras_pbt.storage.checkpoint.encode_arrays`.

    Args:
        snapshot: a `Snapshot` (host or device arrays).
        extra: further arrays to store with it, in order (read back by
            `decode_snapshot`). Defaults to `()`.

    Returns:
        `(arrays, meta)`: dict name -> NumPy array, and a JSON-able dict
        with the one key `"snapshot"`; a writer adds its own keys to `meta`.

    Example:

    >>> import numpy as np
    >>> snap = Snapshot("a", 3, (np.ones(2),), (np.zeros(1),), {"opt": "NaN"})
    >>> arrays, meta = encode_snapshot(snap)
    >>> sorted(arrays), meta["snapshot"]["hparams"]
    (['o00000', 'w00000'], {'opt': 'NaN'})
    """
    if not isinstance(snapshot, Snapshot):
        raise TypeError(f"`snapshot` must be a Snapshot. Received: snapshot={snapshot!r}")
    host = snapshot.to_host()
    extra = tuple(extra)
    arrays = {}
    for prefix, group in zip(_PREFIXES, (host.weights, host.optimizer, extra)):
        arrays.update({f"{prefix}{i:05d}": a for i, a in enumerate(group)})
    meta = {KEY: {
        "member_id": host.member_id,
        "step": int(host.step),
        "hparams": to_json(dict(host.hparams)),
        "metric": lineage_lib.encode(to_json(host.metric)),
        "layout": to_json(host.layout),
        "num_weights": len(host.weights),
        "num_optimizer": len(host.optimizer),
        "num_extra": len(extra),
    }}
    return arrays, meta


def decode_snapshot(arrays, meta, path):
    """Inverse of `encode_snapshot`: `(snapshot, extra)`.

    Only the metric is read as a float: a hyperparameter or a member id
    spelled `"NaN"` stays the string it was.

    Args:
        arrays: dict name -> array, as `keras_pbt.storage.checkpoint.decode_arrays` reads them.
        meta: the metadata read with them.
        path: the file they came from, named in errors.

    Returns:
        `(Snapshot, extra)`: the snapshot with read-only host arrays and
        the tuple of `extra` arrays.

    Raises:
        CheckpointError: naming `path` when the payload is missing or its
            arrays do not match its counts.
    """
    info = meta.get(KEY) if isinstance(meta, dict) else None
    if not isinstance(info, dict):
        raise CheckpointError(f"Checkpoint file {path} holds no {KEY!r} payload.", path)
    names = sorted(arrays)
    groups = [tuple(arrays[k] for k in names if k[:1] == p) for p in _PREFIXES]
    for group, key in zip(groups, ("num_weights", "num_optimizer", "num_extra")):
        if len(group) != info.get(key):
            raise CheckpointError(
                f"Checkpoint file {path} holds {len(group)} arrays for `{key}`; its metadata "
                f"says {info.get(key)!r}.", path)
    layout = tuple(tuple(tuple(x) if isinstance(x, list) else x for x in row)
                   for row in info["layout"])
    snap = Snapshot(info["member_id"], int(info["step"]), groups[0], groups[1],
                    hparams=dict(info["hparams"]), metric=lineage_lib.decode_float(info["metric"]),
                    layout=layout)
    return snap, groups[2]
